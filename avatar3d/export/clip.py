"""Render a driven avatar into an mp4 clip with its sound: streamed, atomic, in sync.

The clip lasts as long as its audio: the frame count is `round(audio seconds × fps)` and the driving
parameters are resampled to the output rate (so a 25 fps tracking or a 30 fps driving video both give a
clip whose video and audio end together, within one frame). Frames are rendered one at a time and handed
to the encoder on a small bounded queue running in a second thread, so rendering (the rasterizer releases
the GIL) and H.264 encoding overlap and memory stays constant for clips of any length. Every output (the
mp4, the optional alpha output) appears only when it is complete.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from avatar3d.drive.params import FRAME_KEYS, DriveParams
from avatar3d.errors import InputError, MediaError
from avatar3d.io.media import AUDIO_RATE
from avatar3d.stages import stage

QUEUE_FRAMES = 4  # frames in flight between the renderer and the encoder (bounded: constant memory)


# ------------------------------------------------------------------------------------------ timing
def clip_frame_count(params: DriveParams, fps: float) -> int:
    """Frames of the clip at `fps`: the audio's duration × fps (the sequence's duration when it is silent)."""
    if not fps > 0:
        raise InputError(f"--fps {fps} must be positive (e.g. 25)")
    return max(1, int(round(params.duration * float(fps))))


def _rotation_lerp(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    # a, b: [N,...,3] axis-angle; w: [N] -> [N,...,3]: slerp between neighbouring frames
    import torch

    from avatar3d.rotation import axis_angle_to_matrix, matrix_to_axis_angle

    ra = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64))
    rb = axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64))
    delta = matrix_to_axis_angle(ra.transpose(-1, -2) @ rb)  # a⁻¹ b, a small rotation between frames
    shape = (-1,) + (1,) * (delta.dim() - 1)
    step = axis_angle_to_matrix(delta * torch.as_tensor(w, dtype=torch.float64).reshape(shape))
    return matrix_to_axis_angle(ra @ step).numpy().astype(np.float32)


def resample(params: DriveParams, fps: float, num_frames: Optional[int] = None) -> DriveParams:
    """`params` at another frame rate (and length): frame i is the driver at time i / fps.

    Coefficients and translations are interpolated linearly, rotations along the shortest arc between
    neighbouring frames; past the driver's last frame the last frame holds (the audio may be a little longer).
    """
    n = clip_frame_count(params, fps) if num_frames is None else int(num_frames)
    src = len(params)
    if n == src and abs(float(fps) - params.fps) < 1e-9:
        return params
    pos = np.clip(np.arange(n, dtype=np.float64) / float(fps) * params.fps, 0.0, src - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    w = (pos - i0).astype(np.float32)
    values = {}
    for key in FRAME_KEYS:
        arr = getattr(params, key)
        if key in ("global_rot", "neck", "jaw", "eyes"):
            values[key] = _rotation_lerp(arr[i0], arr[i1], w)
        else:
            wk = w.reshape((-1,) + (1,) * (arr.ndim - 1))
            values[key] = arr[i0] * (1.0 - wk) + arr[i1] * wk
    return DriveParams(params.shape, fps=float(fps), audio=params.audio, source=params.source, **values)


# ------------------------------------------------------------------------------------------ background
def parse_background(text: str):
    """`auto`, `plate`, `white`, `#20304a`, `0.2,0.3,0.4` or an image file -> "auto" (a portrait's room, else
    white), "plate" (the avatar's own room), an RGB colour in [0,1] (3 floats) or an image (uint8 [H,W,3]) for
    `Avatar.render`."""
    s = str(text).strip()
    if s.lower() in ("plate", "auto"):
        return s.lower()
    path = Path(s)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff") or path.is_file():
        if not path.is_file():
            raise InputError(f"--background {s!r}: no such image file; pass an existing picture, a colour name "
                             f"(e.g. white) or #rrggbb")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(f"--background {s!r} is not a readable image ({err}); pass a PNG/JPEG, a colour "
                             f"name or #rrggbb") from None
    if "," in s:
        try:
            rgb = tuple(float(v) for v in s.split(","))
        except ValueError:
            rgb = ()
        if len(rgb) == 3 and all(0.0 <= v <= 1.0 for v in rgb):
            return rgb
        raise InputError(f"--background {s!r}: write a colour as three numbers in [0,1] (e.g. 0.2,0.3,0.4), "
                         f"a name (white) or #rrggbb")
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(s)[:3]
    except ValueError:
        raise InputError(f"--background {s!r} is neither plate, a colour (a name like white or green, #rrggbb) nor "
                         f"an image file; check the spelling or the path") from None
    return tuple(c / 255.0 for c in rgb)


# ------------------------------------------------------------------------------------------ side by side
def enrolled_frames(frames_dir: Path, count: int, fps: float, source_fps: float, size: int) -> Iterator[np.ndarray]:
    """The real enrollment frames (uint8 [size,size,3]) at the clip's times, resized, one at a time."""
    from PIL import Image

    files = sorted(Path(frames_dir).glob("*.png"))
    if not files:
        raise InputError(f"{frames_dir} holds no frames; --side-by-side needs the avatar's data/frames "
                         f"(re-enroll, or render without --side-by-side)")
    for i in range(count):
        j = min(int(round(i / fps * source_fps)), len(files) - 1)
        with Image.open(files[j]) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            yield np.asarray(img)


# ------------------------------------------------------------------------------------------ writing
class _EncoderThread:
    """Runs `sink(item)` for each queued item in a second thread; errors come back to the caller."""

    def __init__(self, sink: Callable[[tuple], None]):
        self._sink = sink
        self._queue: "queue.Queue" = queue.Queue(maxsize=QUEUE_FRAMES)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="avatar3d-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._sink(item)
                except BaseException as err:  # handed back to the rendering thread
                    self._error = err

    def put(self, item: tuple) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass
class ClipResult:
    path: Path
    frames: int
    fps: float
    seconds: float  # wall time of rendering + encoding
    alpha_path: Optional[Path] = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def alpha_writer(path: Path, fps: float, width: int, height: int, force: bool = False):
    """The alpha output: the shared `AlphaWriter` (PNG folder, .mov or .webm); `force`: see AlphaWriter."""
    from avatar3d.export.alpha import AlphaWriter

    return AlphaWriter(path, fps, width, height, force=force)


def write_clip(out: Path, frames: Iterable, fps: float, num_frames: int, audio: Optional[np.ndarray] = None, *,
               metadata: Optional[dict] = None, alpha_path: Optional[Path] = None, alpha_force: bool = False,
               side: Optional[Iterator[np.ndarray]] = None, progress: bool = True, crf: int = 18,
               preset: str = "veryfast") -> ClipResult:
    """Encode rendered `frames` (objects with `.image` uint8 [H,W,3] and `.alpha` uint8 [H,W]) and the mono
    16 kHz `audio` [A] into an H.264 + AAC mp4 at `out`; `side`: images put left of each frame."""
    from avatar3d.io.media import Mp4Writer
    from avatar3d.progress import progress_bar

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out {out}: the clip is an mp4; give a path ending in .mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = Mp4Writer(out, fps=fps, audio=audio, audio_rate=AUDIO_RATE, metadata=metadata, crf=crf, preset=preset)
    alpha_out = None

    def sink(item: tuple) -> None:
        nonlocal alpha_out
        image, alpha = item
        if alpha_path is not None:
            if alpha_out is None:
                alpha_out = alpha_writer(alpha_path, fps, image.shape[1], image.shape[0], alpha_force)
            alpha_out.write(image, alpha)
        with stage("encode"):
            writer.write(image if side is None else np.concatenate([next(side), image], axis=1))

    started = time.perf_counter()
    encoder = _EncoderThread(sink)
    bar = progress_bar(num_frames, f"render {out.name}", unit="frame", disable=not progress, dynamic_ncols=True)
    count = 0
    try:
        try:
            for frame in frames:
                encoder.put((frame.image, frame.alpha))
                count += 1
                bar.update(1)
        finally:
            encoder.finish()
            bar.close()
        if count == 0:
            raise MediaError(f"nothing was rendered for {out}; the driver produced no frames")
        if alpha_out is not None:
            alpha_out.close()
        writer.close()
    except BaseException:
        if alpha_out is not None:
            alpha_out.abort()
        writer.abort()
        raise
    seconds = time.perf_counter() - started
    return ClipResult(out, count, float(fps), seconds, Path(alpha_path) if alpha_path is not None else None)


def render_clip(avatar, params: DriveParams, out: Path, *, controls=None, fps: Optional[float] = None,
                resolution: Optional[int] = None, background="auto", alpha_path: Optional[Path] = None,
                alpha_force: bool = False, side_by_side: bool = False, metadata: Optional[dict] = None,
                progress: bool = True) -> ClipResult:
    """The Python form of `avatar3d render`: `avatar` (an `Avatar`) performs `params` under `controls` into
    `out` (mp4 with the driver's audio); returns the frame count and the achieved speed."""
    fps = float(fps or params.fps)
    res = int(resolution or avatar.resolution)
    n = clip_frame_count(params, fps)
    driven = resample(params, fps, n)
    side = enrolled_frames(avatar.paths.frames, n, fps, avatar.fps, res) if side_by_side else None
    meta = provenance(avatar, params)
    meta.update(metadata or {})
    frames = avatar.render(driven, controls, res, background)
    return write_clip(out, frames, fps, n, driven.audio, metadata=meta, alpha_path=alpha_path,
                      alpha_force=alpha_force, side=side, progress=progress)


def provenance(avatar, params: DriveParams) -> dict:
    """Metadata every clip carries: who made it, from which avatar, driven by what, when."""
    import datetime

    from avatar3d import __version__

    now = datetime.datetime.now(datetime.timezone.utc)
    return {"comment": f"made by avatar3d {__version__}", "title": f"avatar {avatar.manifest.avatar_id}",
            "avatar_id": avatar.manifest.avatar_id, "avatar3d_driver": params.source or "unknown",
            "date": now.strftime("%Y-%m-%d"), "creation_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
