"""`avatar3d render`: clips of an avatar with audio, from one driver, under the user's camera/head/eye/face controls."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.errors import InputError
from avatar3d.io.media import AUDIO_RATE


@dataclass
class RenderConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to render."""
    out: Path = Path("outputs/clip.mp4")
    """Output mp4 (H.264 + AAC)."""
    audio: Optional[Path] = None
    """Driver: a speech file (wav/mp3/m4a/mp4, any rate, mono or stereo) fed to the audio-to-expression model. Its
    phones come from an English recogniser: speech in other languages gets approximate phones (their timing, where
    the mouth opens and closes, still holds). With --tracking or --drive-video it dubs: the mouth and jaw from
    this speech, everything else from that motion; the clip lasts as long as the speech and the motion plays
    forward and backward (a ping-pong loop) when it is shorter."""
    tracking: bool = False
    """Driver: replay the enrolled video's own tracked parameters (self-reenactment); with --audio, re-voice it."""
    drive_video: Optional[Path] = None
    """Driver: another person's video whose expression, jaw, gaze and head motion are transferred; with --audio,
    only its head motion, gaze, blinks and brows (dubbing)."""
    distance: Optional[str] = None
    """Camera distance in metres, or `x1.5` relative to the enrolled camera."""
    yaw: float = 0.0
    """Camera yaw around the head, degrees (positive: towards the subject's left)."""
    pitch: float = 0.0
    """Camera pitch around the head, degrees (positive: from above)."""
    orbit: float = 0.0
    """Turntable: total camera yaw swept over the clip, degrees."""
    camera_path: Optional[Path] = None
    """Keyframed camera JSON (format: docs/camera_path.md); its keyframes override distance/yaw/pitch/fov."""
    fov: Optional[float] = None
    """Vertical field of view, degrees (default: the enrolled camera's)."""
    resolution: int = 512
    """Output height and width, pixels."""
    fps: float = 25.0
    """Output frame rate (the driver is resampled to it)."""
    head_pose: Optional[str] = None
    """`yaw,pitch,roll` degrees (absolute) or `+yaw,pitch,roll` (offset added to the driven motion)."""
    still_head: bool = False
    """Switch driven head motion off."""
    gaze: Optional[str] = None
    """`yaw,pitch` degrees, or `camera` to look at the camera."""
    expression: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)
    """Expression edit `NAME=VALUE` added on top of the driven expression (repeat the option for more). The
    names are the avatar's head model's: `avatar3d models list --expressions MODEL` prints them (ICT-FaceKit's
    are ARKit-style, e.g. jawOpen, mouthSmile_L, eyeBlink_R); an unknown name is refused with the list."""
    expressiveness: float = 1.0
    """Scale of the driven expression."""
    emotion: Optional[str] = None
    """`NAME` or `NAME:INTENSITY` (0..2, 1 the prototype) over any driver: neutral, happy, sad, angry, surprised,
    disgusted, fearful, contempt. Each is a few facial action units on the person's own range (docs/emotion.md);
    while speaking, the mouth follows the speech and the emotion shows around it."""
    emotion_path: Optional[Path] = None
    """Emotions keyframed over time, JSON (docs/emotion.md): {"keyframes": [{"t": 0, "emotion": "neutral"},
    {"t": 3, "emotion": "happy", "intensity": 0.8}]}; it replaces --emotion."""
    blink: Literal["auto", "off"] = "auto"
    """Blinks: natural automatic blinks, or none."""
    background: str = "auto"
    """Background: `auto` (a portrait's own room, a head avatar's white), `plate` (the room behind the person,
    estimated from the enrollment video; the camera's orbit and distance move it with parallax), a colour (name
    or #rrggbb) or an image file."""
    alpha: bool = False
    """Also write the render with its alpha channel: a PNG sequence (OUT's name + `_alpha/`), or --alpha-out."""
    alpha_out: Optional[Path] = None
    """Where --alpha writes: a folder (PNG sequence), a .mov (ProRes 4444) or a .webm (VP9); default:
    OUT's name + `_alpha/` beside the clip."""
    force: bool = False
    """Let --alpha's PNG folder replace an existing folder that avatar3d did not make (its files are deleted);
    without it such a folder is refused and left as it is."""
    side_by_side: bool = False
    """With --tracking: the real enrollment frames next to the render."""
    seconds: Optional[float] = None
    """Render only the first SECONDS of the driver (default: all of it)."""
    seed: int = 0
    """Seed of the audio driver's blinks, saccades and idle motion."""
    backend: Literal["auto", "cpu", "torch", "cuda"] = "auto"
    """Rasterizer backend (auto: CUDA when there is a GPU, else the C++ extension, else PyTorch)."""
    progress: bool = True
    """Show a progress bar on stderr."""


def check_drivers(cfg: RenderConfig) -> str:
    """The driver asked for: "audio", "tracking", "video", or "dub" (speech with --tracking or --drive-video's
    motion); errors say how to pick."""
    motion = [name for name, on in (("--tracking", cfg.tracking), ("--drive-video", cfg.drive_video is not None))
              if on]
    if cfg.audio is None and not motion:
        raise InputError("no driver: pass one of --audio SPEECH.wav, --tracking (replay the enrollment) or "
                         "--drive-video OTHER.mp4 (or --audio with one of the others to dub)")
    if len(motion) > 1:
        raise InputError("--tracking and --drive-video are two motions; pass one of them (with --audio to dub)")
    if cfg.side_by_side and (not cfg.tracking or cfg.audio is not None):
        raise InputError("--side-by-side shows the real enrollment frames next to the render, so it needs "
                         "--tracking alone (not dubbed); drop --side-by-side or drive with --tracking")
    if Path(cfg.out).suffix.lower() != ".mp4":
        raise InputError(f"--out {cfg.out}: the clip is an mp4; give a path ending in .mp4 (for transparency add "
                         f"--alpha)")
    if cfg.resolution < 16 or cfg.resolution > 4096:
        raise InputError(f"--resolution {cfg.resolution} is outside 16..4096 pixels; use e.g. 512")
    if not cfg.fps > 0 or cfg.fps > 240:
        raise InputError(f"--fps {cfg.fps} is outside (0, 240]; use e.g. 25")
    if cfg.seconds is not None and not cfg.seconds > 0:
        raise InputError(f"--seconds {cfg.seconds} must be positive (e.g. 10), or leave it out for the whole driver")
    if not Path(cfg.avatar).is_dir():
        raise InputError(f"{cfg.avatar} is not an avatar folder; pass the folder made by `avatar3d enroll`")
    if cfg.audio is not None:
        return "dub" if motion else "audio"
    return {"--tracking": "tracking", "--drive-video": "video"}[motion[0]]


def build_controls(cfg: RenderConfig, expr_names: list[str]):
    """The `Controls` of the command-line options."""
    from avatar3d.drive.controls import Controls, parse_distance, parse_expression_edits, parse_gaze, parse_head_pose
    from avatar3d.drive.emotion import EmotionPath, parse_emotion

    distance, scale = parse_distance(cfg.distance)
    head_pose, head_offset = parse_head_pose(cfg.head_pose)
    camera_path = None
    if cfg.camera_path is not None:
        from avatar3d.drive.camera_path import CameraPath

        camera_path = CameraPath.load(cfg.camera_path)
    emotion_path = EmotionPath.load(cfg.emotion_path) if cfg.emotion_path is not None else None
    return Controls(distance=distance, distance_scale=scale, yaw=cfg.yaw, pitch=cfg.pitch, orbit=cfg.orbit,
                    fov=cfg.fov, camera_path=camera_path, head_pose=head_pose, head_offset=head_offset,
                    still_head=cfg.still_head, gaze=parse_gaze(cfg.gaze),
                    expression=parse_expression_edits(cfg.expression, expr_names),
                    expressiveness=cfg.expressiveness, blink=cfg.blink, emotion=parse_emotion(cfg.emotion),
                    emotion_path=emotion_path)


def drive(avatar, cfg: RenderConfig, driver: str, wave=None):
    """The driving parameters (with their audio) of the chosen driver."""
    if driver == "tracking":
        return avatar.tracked()
    if driver == "video":
        return avatar.from_video(cfg.drive_video)
    if driver == "dub":
        return avatar.dub(wave, video=cfg.drive_video, fps=cfg.fps, seed=cfg.seed, sample_rate=AUDIO_RATE)
    return avatar.animate(wave, fps=cfg.fps, seed=cfg.seed, sample_rate=AUDIO_RATE)


def main(cfg: RenderConfig) -> int:
    from avatar3d.api import Avatar
    from avatar3d.export.alpha import alpha_kind
    from avatar3d.export.clip import parse_background, render_clip
    from avatar3d.io.ownership import check_replaceable

    started = time.perf_counter()
    driver = check_drivers(cfg)
    background = parse_background(cfg.background)
    alpha_path = None
    if cfg.alpha or cfg.alpha_out is not None:
        alpha_path = cfg.alpha_out or Path(cfg.out).with_name(Path(cfg.out).stem + "_alpha")
        if alpha_kind(alpha_path) == "png" and not cfg.force:  # refuse someone else's folder before any work
            check_replaceable(alpha_path)
    wave = None
    if driver in ("audio", "dub"):  # read the speech before the (slower) avatar: a wrong file fails at once
        from avatar3d.audio2expr.features import load_audio

        wave = load_audio(cfg.audio)
        if cfg.seconds is not None:  # the model need not hear what will not be shown
            wave = wave[: int(round(cfg.seconds * AUDIO_RATE))]
    avatar = Avatar.load(cfg.avatar, backend=cfg.backend)
    word = background if isinstance(background, str) else None  # "plate", "auto", else a colour or a picture
    if word == "plate" and avatar.plate is None:  # before any driving work
        raise InputError(f"{Path(cfg.avatar).name} has no background plate (enrolled before plates existed, or its "
                         f"video's background moved); pick a colour (e.g. --background white) or an image")
    if word == "auto" and avatar.is_portrait:
        avatar.plate  # noqa: B018  a damaged plate is reported now, not after the driving work
    if not avatar.is_portrait:
        print(f"note: {Path(cfg.avatar).name} is a head without shoulders (enrolled before portraits or with "
              f"--framing head); enrolling its video again makes the portrait", file=sys.stderr)
    controls = build_controls(cfg, avatar.expr_names)
    if driver in ("audio", "dub") and not avatar.has_audio_model:
        raise InputError(f"{cfg.avatar} has no audio-to-expression model; train it with "
                         f"`avatar3d train audio2expr {cfg.avatar}`, or drive with --tracking / --drive-video")
    params = drive(avatar, cfg, driver, wave)
    if cfg.seconds is not None and cfg.seconds < params.duration:
        params = params.slice(0, min(len(params), max(1, int(round(cfg.seconds * params.fps)))))
    result = render_clip(avatar, params, cfg.out, controls=controls, fps=cfg.fps, resolution=cfg.resolution,
                         background=background, alpha_path=alpha_path, alpha_force=cfg.force,
                         side_by_side=cfg.side_by_side,
                         progress=cfg.progress)
    total = time.perf_counter() - started
    print(f"clip: {result.path} ({result.frames} frames, {result.frames / result.fps:.2f} s at {result.fps:g} fps, "
          f"{cfg.resolution}x{cfg.resolution}, driver: {driver})")
    if result.alpha_path is not None:
        print(f"alpha: {result.alpha_path}")
    print(f"rendering and encoding: {result.frames_per_second:.1f} fps; loading and driving: "
          f"{total - result.seconds:.1f} s", file=sys.stderr)
    print(f"{result.frames / total:.2f} fps", flush=True)
    return 0
