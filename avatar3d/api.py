"""The Python API: load an enrolled avatar, drive it, render it.

```python
from avatar3d.api import Avatar
from avatar3d.drive import Controls

avatar = Avatar.load("avatars/me")
params = avatar.animate("speech.wav")                      # or avatar.tracked(), avatar.from_video("other.mp4")
for frame in avatar.render(params, Controls(distance_scale=1.5, gaze="camera", orbit=30)):
    frame.image                                            # uint8 [H,W,3]; one frame at a time (constant memory)
avatar.write_clip(params, "clip.mp4", Controls(orbit=30))  # or straight to an mp4 with the sound
```

Everything here is a thin layer over the modules that do the work: `drive` (controls, cameras, motion
transfer), `audio2expr.infer` (speech → parameters), `gaussians.avatar_render` (the one render path training
and evaluation use, so what was trained is exactly what is shown).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from avatar3d.camera import Camera, camera_centre
from avatar3d.drive.controls import Controls
from avatar3d.drive.dub import speech_channels
from avatar3d.drive.face import PersonStats, apply_face_controls, look_at_eyes, parent_rotation
from avatar3d.drive.params import DriveParams
from avatar3d.drive.viewpoint import EnrolledCamera, view_camera
from avatar3d.errors import InputError
from avatar3d.head.lbs import pose_vertices
from avatar3d.io.atomic import exclusive
from avatar3d.io.avatar_dir import AvatarPaths, check_rig, read_manifest
from avatar3d.io.media import AUDIO_RATE
from avatar3d.render.finish import finish_frame
from avatar3d.rotation import axis_angle_to_matrix
from avatar3d.stages import stage

Background = Union[Sequence[float], np.ndarray, str]  # a colour, an image [H,W,3], "plate" (the avatar's room) or
# "auto" (the plate for a portrait that has one, else white)
PLATE, AUTO = "plate", "auto"
HEAD_REGIONS = ("face", "scalp", "ears", "eyeball_left", "eyeball_right")  # the head without the neck


@dataclass
class Frame:
    """One rendered frame."""

    image: np.ndarray  # [H,W,3] uint8
    alpha: np.ndarray  # [H,W] uint8 (255: avatar, 0: background)
    index: int  # frame index in the driving sequence
    camera: Camera  # the camera it was rendered from
    vertices: np.ndarray  # [V,3] the posed rig mesh, world metres


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Avatar:
    """An enrolled avatar: rig, Gaussians, the enrolled camera and the person's resting face."""

    def __init__(self, path: Path, *, device=None, backend: str = "auto"):
        from avatar3d.gaussians.store import load_bound
        from avatar3d.head.registry import load_rig
        from avatar3d.tracking.sequence import TrackedSequence

        self.path = Path(path)
        self.paths = AvatarPaths(self.path)
        self.manifest = read_manifest(self.path)
        self.device = torch.device(device or _default_device())
        self.backend = backend
        self.rig = load_rig(self.manifest.rig_name, device=self.device)
        check_rig(self.manifest, self.rig)
        self.gaussians, self.faces, self.rig = load_bound(self.paths, self.rig, self.device)  # a portrait's torso too
        self.sequence = TrackedSequence.load(self.paths.tracking)
        seq = self.sequence
        self.stats = PersonStats.from_arrays(seq.expr, seq.jaw, seq.neck, seq.eyes, seq.global_rot, seq.transl,
                                             self.expr_names)
        self.stats.speech_mask = speech_channels(self.rig)
        self.enrolled = self._enrolled_camera()
        eye_idx = [torch.nonzero(self.rig.region(n)).flatten() for n in ("eyeball_left", "eyeball_right")]
        self._eyeballs = eye_idx if all(len(i) for i in eye_idx) else None
        self._plate = None

    @property
    def is_portrait(self) -> bool:
        """Whether the avatar has a torso (enrolled with the portrait framing)."""
        return "torso" in self.rig.meta

    @property
    def plate(self):
        """The background plate of the enrollment video (render/plate.py), or None when the avatar has none."""
        from avatar3d.render.plate import load_plate

        if self._plate is None:
            self._plate = load_plate(self.path) or False
        return self._plate or None

    @classmethod
    def load(cls, path: Union[str, Path], device=None, backend: str = "auto") -> "Avatar":
        """Read an avatar folder made by `avatar3d enroll` (errors say how to fix a missing or damaged part)."""
        return cls(Path(path), device=device, backend=backend)

    # ------------------------------------------------------------------------------ facts
    @property
    def fps(self) -> float:
        return float(self.sequence.fps)

    @property
    def resolution(self) -> int:
        return int(self.sequence.resolution)

    @property
    def num_frames(self) -> int:
        return self.sequence.num_frames

    @property
    def expr_names(self) -> list[str]:
        return list(self.rig.expr_names)

    @property
    def num_gaussians(self) -> int:
        return self.gaussians.num_gaussians

    @property
    def has_audio_model(self) -> bool:
        return self.paths.has_audio_model()

    @property
    def enrolled_distance(self) -> float:
        """Metres from the enrolled camera to the head centre."""
        return self.enrolled.distance

    @property
    def default_fov(self) -> float:
        """Vertical field of view of the enrolled camera, degrees."""
        return self.enrolled.fov

    def _mean_frame(self) -> DriveParams:
        s = self.stats
        return DriveParams(self.sequence.shape, s.expr[None], s.global_rot[None], s.neck[None], s.jaw[None],
                           s.eyes[None], s.transl[None], fps=self.fps, source="neutral")

    def _enrolled_camera(self) -> EnrolledCamera:
        seq = self.sequence
        with torch.no_grad():
            verts = pose_vertices(self.rig, self._mean_frame().rig_params(0, self.device))[0]
        head = torch.zeros(self.rig.num_vertices, dtype=torch.bool, device=self.device)
        for name in HEAD_REGIONS:
            head |= self.rig.region(name).to(self.device)
        centre = (verts[head] if bool(head.any()) else verts).mean(0)
        s = self.stats
        head_rot = (axis_angle_to_matrix(torch.as_tensor(s.global_rot, device=self.device))
                    @ axis_angle_to_matrix(torch.as_tensor(s.neck, device=self.device)))
        return EnrolledCamera(torch.as_tensor(seq.K, device=self.device), torch.as_tensor(seq.viewmat, device=self.device),
                              int(seq.resolution), centre, head_rot)

    # ------------------------------------------------------------------------------ drivers
    def tracked(self, refined: bool = True) -> DriveParams:
        """The enrolled video's own parameters (refined by training where it trained on a frame) and audio."""
        seq = self.sequence
        values = {k: np.asarray(getattr(seq, k)) for k in ("expr", "global_rot", "neck", "jaw", "eyes", "transl")}
        if refined and self.paths.refined.is_file():
            from avatar3d.head.refined import load_refined

            params, _ = load_refined(self.paths.refined)
            for key in values:
                values[key] = getattr(params, key).cpu().numpy()
        audio = seq.audio if seq.audio is not None and seq.audio.size else None
        return DriveParams(seq.shape, fps=self.fps, audio=audio, source="tracking", **values)

    def animate(self, audio, fps: Optional[float] = None, seed: int = 0, sample_rate: Optional[int] = None,
                **options) -> DriveParams:
        # audio: a path (wav/mp3/m4a/mp4) or a float array [A] (then sample_rate is required)
        """Parameters for any speech: the avatar's audio-to-expression model, plus blinks, gaze and idle motion."""
        if not self.has_audio_model:
            raise InputError(f"{self.path} has no audio-to-expression model; train it with "
                             f"`avatar3d train audio2expr {self.path}`")
        from avatar3d.audio2expr.features import load_audio
        from avatar3d.audio2expr.infer import animate

        wave = load_audio(audio, sample_rate)
        out = animate(self.path, wave, fps=fps or self.fps, seed=seed, sample_rate=AUDIO_RATE, **options)
        t = out["expr"].shape[0]
        s = self.stats
        return DriveParams(self.sequence.shape, out["expr"], np.repeat(s.global_rot[None], t, 0), out["neck"],
                           out["jaw"], out["eyes"], np.repeat(s.transl[None], t, 0), fps=float(out["fps"]),
                           audio=wave, source="audio")

    def dub(self, audio, video: Union[str, Path, None] = None, fps: Optional[float] = None, seed: int = 0,
            sample_rate: Optional[int] = None) -> DriveParams:
        # audio: as for `animate`
        """New speech in recorded motion: the head pose, gaze, blinks and brows of `video` (another person's video;
        None: the enrollment's own tracking, which re-voices the person's recording), the mouth and jaw of
        `audio`, with its sound. As long as the audio; the motion plays forward and backward when it is shorter
        (drive/dub.py)."""
        from avatar3d.drive.dub import dub

        motion = self.tracked() if video is None else self.from_video(video)
        speech = self.animate(audio, fps=fps or motion.fps, seed=seed, sample_rate=sample_rate)
        return dub(motion, speech, self.stats.speech_mask)

    def neutral(self, num_frames: int = 1, fps: Optional[float] = None) -> DriveParams:
        """The person's resting face, still, for `num_frames` frames (silent)."""
        if num_frames < 1:
            raise InputError(f"num_frames={num_frames}: ask for at least one frame")
        one = self._mean_frame()
        rep = {k: np.repeat(getattr(one, k), num_frames, 0) for k in ("expr", "global_rot", "neck", "jaw", "eyes", "transl")}
        return DriveParams(one.shape, fps=float(fps or self.fps), source="neutral", **rep)

    def from_tracking(self, tracking: Union[str, Path]) -> DriveParams:
        """Cross-reenactment from an already tracked video (its `tracking.npz`, or the folder holding it)."""
        from avatar3d.drive.transfer import transfer_motion
        from avatar3d.tracking.sequence import TrackedSequence

        path = Path(tracking)
        driver = TrackedSequence.load(path / "tracking.npz" if path.is_dir() else path)
        if driver.rig_name != self.rig.name or driver.expr.shape[1] != self.rig.num_expr:
            raise InputError(f"{path} was tracked with head model {driver.rig_name!r}, this avatar uses "
                             f"{self.rig.name!r}; track the driving video with --head-model {self.rig.name}")
        audio = driver.audio if driver.audio is not None and driver.audio.size else None
        return transfer_motion(driver, self.sequence.shape, self.stats, audio=audio)

    def from_video(self, video: Union[str, Path], work_dir: Optional[Path] = None) -> DriveParams:
        """Cross-reenactment: track another person's video (needs MediaPipe) and move its motion onto this avatar.

        The tracking is kept in `work_dir` (default: AVATAR/drives/<video name>-<size>), so a second render from
        the same video does not track it again.
        """
        from avatar3d.tracking.pipeline import track_video

        video = Path(video)
        if not video.is_file():
            raise InputError(f"{video} does not exist; pass the path of a video with one face")
        work = Path(work_dir) if work_dir else self.path / "drives" / f"{video.stem}-{video.stat().st_size}"
        if not (work / "tracking.npz").is_file():
            work.parent.mkdir(parents=True, exist_ok=True)  # the tracker writes its folder atomically beside it
            with exclusive(work.parent / f".{work.name}.lock"):  # two clips of one video at once: tracked once
                if not (work / "tracking.npz").is_file():
                    track_video(video, work, head_model=self.rig.name, device=str(self.device), overlay=False)
        return self.from_tracking(work)

    # ------------------------------------------------------------------------------ rendering
    def camera(self, controls: Optional[Controls] = None, resolution: Optional[int] = None, progress: float = 0.0,
               clip_seconds: Optional[float] = None) -> Camera:
        """The camera the controls ask for (the enrolled camera when they are neutral)."""
        return view_camera(self.enrolled, controls or Controls(), int(resolution or self.resolution), progress,
                           clip_seconds)

    def rig_params(self, params: DriveParams, t: int, controls: Controls, camera: Camera):
        """Frame t's `RigParams` after the face, head and gaze controls."""
        frame = apply_face_controls(params.rig_params(t, self.device), self.stats, controls, self.expr_names,
                                    seconds=t / params.fps)
        if controls.gaze == "camera":
            _, joints = pose_vertices(self.rig, frame, return_joints=True)
            eyes = look_at_eyes(joints[0, 3:5], parent_rotation(frame), camera_centre(camera.viewmat).to(joints.dtype))
            frame.eyes = eyes[None].to(frame.eyes.dtype)
        return frame

    @torch.no_grad()
    def render_frame(self, params: DriveParams, t: int, controls: Optional[Controls] = None,
                     resolution: Optional[int] = None, background: Background = AUTO,
                     progress: float = 0.0, camera: Optional[Camera] = None,
                     clip_seconds: Optional[float] = None) -> Frame:
        """Frame t of `params` under `controls`; `progress` in [0,1] drives --orbit and camera paths."""
        from avatar3d.gaussians.avatar_render import render_avatar

        controls = controls or Controls()
        res = int(resolution or self.resolution)
        with stage("drive"):
            camera = camera or self.camera(controls, res, progress, clip_seconds or params.duration)
            camera = camera.to(self.device)
            frame = self.rig_params(params, t, controls, camera)
        if isinstance(background, str) and background == AUTO:
            background = PLATE if self.is_portrait and self.plate is not None else (1.0, 1.0, 1.0)
        picture, to_picture, plate_key = None, None, None  # a picture behind the avatar [H',W',3] uint8, its map
        if isinstance(background, str):
            if background != PLATE:
                raise InputError(f"background {background!r}: the words Avatar.render takes are \"plate\" and \"auto\"; pass "
                                 f"a colour as (r, g, b) in [0,1] or an image [H,W,3] (export.clip.parse_background "
                                 f"reads names like white or #rrggbb)")
            with stage("plate"):
                background, picture, to_picture, plate_key = self._plate_view(camera)
        bg_colour, bg_image = _background(background, camera.height, camera.width)
        if bg_image is not None:  # a picture given: the frame's own size, pixel for pixel
            picture, to_picture = bg_image, np.eye(3)
        out = render_avatar(self.gaussians, self.rig, self.faces, frame, camera.K, camera.viewmat, camera.width,
                            camera.height, bg_colour.to(self.device) if bg_colour is not None else None,
                            backend=self.backend)
        with stage("finish"):  # over black where a picture goes behind: composited there, in one pass
            keep = plate_key is not None and self.plate.worth_keeping(plate_key)
            rgb, alpha, seen = finish_frame(out.image, out.alpha, picture, to_picture, keep_seen=keep)
            if seen is not None:
                self.plate.remember(plate_key, seen)
            return Frame(rgb, alpha, int(t), camera, out.vertices.cpu().numpy())

    def _plate_view(self, camera: Camera) -> tuple:
        """(colour [3] for the rasterizer, the plate [h,w,3] uint8 or None, its pixel map [3,3] or None, the camera's
        key for the plate's cache or None): the plate behind a camera that sees it (composited after the
        rasterizer), else its mean colour."""
        if self.plate is None:
            raise InputError(f"{self.path.name} has no background plate (enrolled before plates existed: re-enroll "
                             f"it; or its video's background moved: film in front of a still one); pick a colour "
                             f"(e.g. white) meanwhile")
        view = self.plate.view(camera.K, camera.viewmat, camera.width, camera.height)
        if view is None:
            return self.plate.mean_colour(), None, None, None
        return (np.zeros(3, np.float32), *view)

    def render(self, params: DriveParams, controls: Optional[Controls] = None, resolution: Optional[int] = None,
               background: Background = AUTO, *, camera: Optional[Camera] = None,
               start: int = 0, stop: Optional[int] = None) -> Iterator[Frame]:
        """Frames [start, stop) of `params` one at a time (constant memory for clips of any length)."""
        if isinstance(controls, Camera):  # render(params, camera, controls) as in the wording
            controls, camera = (camera if isinstance(camera, Controls) else None), controls
        stop = len(params) if stop is None else min(stop, len(params))
        last = max(1, len(params) - 1)
        for t in range(start, stop):
            yield self.render_frame(params, t, controls, resolution, background, progress=t / last, camera=camera)

    def write_clip(self, params: DriveParams, out: Union[str, Path], controls: Optional[Controls] = None, *,
                   fps: Optional[float] = None, resolution: Optional[int] = None,
                   background: Background = AUTO, alpha_path: Optional[Path] = None,
                   progress: bool = True):
        """Render `params` into an H.264 + AAC mp4 with its audio (what `avatar3d render` does), streamed."""
        from avatar3d.export.clip import render_clip

        return render_clip(self, params, Path(out), controls=controls, fps=fps, resolution=resolution,
                           background=background, alpha_path=alpha_path, progress=progress)


def _background(background: Background, height: int, width: int) -> tuple[Optional[Tensor], Optional[np.ndarray]]:
    """(colour [3] for the rasterizer, or None with a picture [height,width,3] uint8 to composite over)."""
    arr = np.asarray(background)
    if arr.ndim == 1 and arr.shape[0] == 3:
        colour = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        return torch.as_tensor(colour), None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        img = arr[..., :3]
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if img.shape[:2] != (height, width):
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))
        return None, np.ascontiguousarray(img)
    raise InputError(f"background of shape {arr.shape} is neither a colour (r, g, b) nor an image [H,W,3]")
