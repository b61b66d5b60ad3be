"""Output with an alpha channel (`avatar3d render --alpha`): a PNG sequence or a video that keeps transparency.

The kind follows the path:

| path | what is written | opens in |
|---|---|---|
| a folder (no suffix) | `000000.png`, `000001.png`, ... RGBA 8-bit, lossless | everything; compositors |
| `.mov` | ProRes 4444 (`prores_ks`, yuva444p10le; alpha kept to 1/255) | Premiere, Final Cut, Resolve, After Effects |
| `.mov` with `codec="qtrle"` | QuickTime Animation (ARGB, lossless, large) | the same, and QuickTime |
| `.webm` | VP9 with alpha (`libvpx-vp9`, yuva420p) | browsers (Chrome, Firefox, Edge) |

Colours are straight (not premultiplied), as PNG and these codecs expect. Every kind appears at its path
only when the writer closes without error (a temp file or folder, then a rename), so an interrupted render
leaves any earlier output intact.

    with AlphaWriter("clip_alpha.mov", fps=25, width=512, height=512) as w:
        for rgb, alpha in frames:      # uint8 [H,W,3], uint8 [H,W]
            w.write(rgb, alpha)
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

from avatar3d.errors import MediaError
from avatar3d.io.atomic import AtomicFile, atomic_dir
from avatar3d.io.avatar_dir import FRAME_PATTERN
from avatar3d.io.media import CloseOrAbort

VIDEO_KINDS = {".mov": ("prores_ks", "qtrle"), ".webm": ("libvpx-vp9",)}
PIXEL_FORMATS = {"prores_ks": "yuva444p10le", "qtrle": "argb", "libvpx-vp9": "yuva420p"}


def alpha_kind(path: str | os.PathLike) -> str:
    """'png' (a folder of PNGs), 'mov' or 'webm', from the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in ("", ".png"):
        return "png"
    if suffix in VIDEO_KINDS:
        return suffix[1:]
    raise MediaError(f"{path}: alpha output must be a folder (PNG sequence), a .mov (ProRes 4444) or a .webm "
                     f"(VP9 with alpha), not {suffix!r}; change the name's suffix")


def _as_uint8(x: Any, shape: tuple, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == len(shape) + 1 and arr.shape[-1] == 1 and name == "alpha":
        arr = arr[..., 0]  # [H,W,1] as the rasterizer returns it
    if arr.shape != shape:
        want = "x".join(str(s) for s in shape)
        raise MediaError(f"{name} has shape {arr.shape}, the writer expects {want}; pass frames of the size "
                         f"given to AlphaWriter")
    if np.issubdtype(arr.dtype, np.floating):  # [0,1] floats (the project's image convention)
        arr = np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5
    elif arr.dtype != np.uint8:
        raise MediaError(f"{name} must be uint8 or float in [0,1], got {arr.dtype}; convert it first")
    return np.ascontiguousarray(arr.astype(np.uint8))


class AlphaWriter(CloseOrAbort):
    """Streaming RGBA writer: `write(rgb [H,W,3], alpha [H,W])` per frame; the output appears on close."""

    def __init__(self, path: str | os.PathLike, fps: Any, width: int, height: int, *, codec: str | None = None,
                 force: bool = False):
        self.path = Path(path)
        self.kind = alpha_kind(self.path)
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise MediaError(f"frame size {width}x{height} is not positive; pass the render's width and height")
        try:
            self.fps = Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else Fraction(fps)
        except (TypeError, ValueError) as err:
            raise MediaError(f"fps must be a number, got {fps!r}") from err
        if self.fps <= 0:
            raise MediaError(f"fps must be positive, got {fps!r}; use e.g. 25")
        self.frames_written = 0
        self._dir_ctx = self._tmp_dir = None
        self._container = self._stream = self._target = None
        if self.kind == "png":
            if self.path.exists() and not self.path.is_dir():
                raise MediaError(f"{self.path} exists and is not a folder; remove it or pick another --alpha path")
            # an existing folder is replaced only when avatar3d made it, or with force (--force)
            self._dir_ctx = atomic_dir(self.path, kind="alpha frames", force=force)
            self._tmp_dir = self._dir_ctx.__enter__()
            return
        allowed = VIDEO_KINDS["." + self.kind]
        self.codec = codec or allowed[0]
        if self.codec not in allowed:
            raise MediaError(f"codec {self.codec!r} cannot write a .{self.kind} with alpha; use one of "
                             f"{', '.join(allowed)}")
        if self.kind == "webm" and (self.width % 2 or self.height % 2):
            raise MediaError(f"VP9 with alpha needs an even frame size, got {self.width}x{self.height}; use an "
                             f"even --resolution or write a .mov / PNG folder")
        self._target = AtomicFile(self.path)
        try:
            self._open_video()
        except BaseException:
            self._target.discard()
            raise

    def _open_video(self) -> None:
        from avatar3d.io.media import default_metadata

        try:
            container = av.open(str(self._target.tmp), mode="w")
        except av.FFmpegError as err:
            raise MediaError(f"cannot create {self.path} ({err}); check the folder is writable") from err
        try:
            container.metadata.update(default_metadata())
            stream = container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = PIXEL_FORMATS[self.codec]
            stream.codec_context.time_base = 1 / self.fps
            if self.codec == "prores_ks":
                stream.options = {"profile": "4444", "alpha_bits": "16"}
            elif self.codec == "libvpx-vp9":
                stream.options = {"crf": "20", "b": "0", "auto-alt-ref": "0"}
        except BaseException:
            container.close()
            raise
        self._container, self._stream = container, stream

    def write(self, rgb: Any, alpha: Any) -> None:
        """One frame: rgb uint8 [H,W,3] (or float in [0,1]); alpha uint8 [H,W] (or [H,W,1], or float)."""
        if self._tmp_dir is None and self._container is None:
            raise MediaError(f"{self.path}: write() after close(); open a new AlphaWriter")
        h, w = self.height, self.width
        rgba = np.concatenate([_as_uint8(rgb, (h, w, 3), "rgb"), _as_uint8(alpha, (h, w), "alpha")[..., None]], -1)
        if self._tmp_dir is not None:
            from PIL import Image

            Image.fromarray(rgba).save(self._tmp_dir / FRAME_PATTERN.format(self.frames_written),
                                                    compress_level=1)
        else:
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Finish and move the output into place; returns its path."""
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"no frames were written to {self.path}; an alpha output needs at least one frame")
        if self._tmp_dir is not None:
            ctx, self._tmp_dir, self._dir_ctx = self._dir_ctx, None, None
            ctx.__exit__(None, None, None)
        elif self._container is not None:
            try:
                self._container.mux(self._stream.encode(None))
                self._container.close()
                self._container = None
                self._target.commit()
            except BaseException:
                self.abort()
                raise
            self._target = None
        return self.path

    def abort(self) -> None:
        """Drop what was written; an earlier output at the path is left as it was."""
        if self._dir_ctx is not None:
            ctx, self._tmp_dir, self._dir_ctx = self._dir_ctx, None, None
            try:
                ctx.__exit__(MediaError, MediaError("aborted"), None)
            except MediaError:
                pass
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None
        if self._target is not None:
            self._target.discard()
            self._target = None



def read_alpha(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Read back what AlphaWriter wrote: uint8 [H,W,4] RGBA frames (for checks and tests)."""
    p = Path(path)
    if alpha_kind(p) == "png":
        from PIL import Image

        files = sorted(p.glob("*.png"))
        if not files:
            raise MediaError(f"{p} holds no PNG frames; pass the folder written by --alpha")
        for f in files:
            yield np.asarray(Image.open(f).convert("RGBA"))
        return
    if not p.is_file():
        raise MediaError(f"{p} does not exist; pass the file written by --alpha")
    with av.open(str(p)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            # FFmpeg's own VP9 decoder drops the alpha plane (stored beside the frames in WebM); libvpx keeps it
            decoder = av.CodecContext.create("libvpx-vp9", "r")
            for packet in container.demux(stream):
                for frame in decoder.decode(packet if packet.size else None):
                    yield frame.to_ndarray(format="rgba")
        else:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgba")

