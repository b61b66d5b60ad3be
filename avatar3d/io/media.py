"""Video and audio decode/encode with PyAV: streamed frames, rotation applied, clear errors.

Reading never holds the whole clip: `VideoReader` yields one upright RGB frame at a time. Audio is
small (16 kHz mono float32 is 64 kB/s), so `read_audio` returns it whole. Writing goes through
`Mp4Writer` (one frame at a time, H.264 yuv420p + AAC, atomic rename on close); `write_mp4` wraps it.
"""
from __future__ import annotations

import datetime as _dt
import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import av
import numpy as np

from avatar3d.errors import MediaError
from avatar3d.io.atomic import AtomicFile

AUDIO_RATE = 16000
# Encoders tried in order; the first that exists in this PyAV build is used.
VIDEO_ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")
AUDIO_ENCODERS = ("aac", "libfdk_aac", "libmp3lame")
AUDIO_CHUNK = 1024  # AAC frame size: feeding whole frames keeps pts exact
# Keys the mp4 muxer stores natively; any other key needs 'use_metadata_tags'.
_MP4_STANDARD_KEYS = {"title", "comment", "artist", "author", "album", "date", "creation_time",
                      "description", "copyright", "encoder", "genre", "composer", "synopsis"}


# ----------------------------------------------------------------------------------------- opening

def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"media file not found: {p}; check the path (relative paths start at {Path.cwd()})")
    if not p.is_file():
        raise MediaError(f"{p} is a folder, not a media file; pass a video or audio file inside it")
    return p


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise MediaError(f"{path} is not a readable video/audio file or is damaged ({exc}); "
                         f"check that it plays in a media player, or re-encode/re-download it") from exc


def _video_stream(container: av.container.InputContainer, path: Path):
    """The first real video stream; cover art in audio files (attached pictures) does not count."""
    for stream in container.streams.video:
        if not (stream.disposition & av.stream.Disposition.attached_pic):
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise MediaError(f"{path} has no video stream (its streams: {', '.join(kinds)}); pass a video file "
                     f"(for audio-only files use read_audio)")


def _audio_stream(container: av.container.InputContainer, path: Path):
    if not container.streams.audio:
        raise MediaError(f"{path} has no audio stream, but audio is required here; pass a file with a "
                         f"sound track, or give the audio separately (e.g. a .wav)")
    return container.streams.audio[0]


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the display rotation (counter-clockwise degrees, FFmpeg's convention) to [H,W,3]."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Any decoded frame (8/10-bit, limited/full range) -> uint8 [H,W,3] RGB (coded orientation)."""
    kwargs = {"src_color_range": frame.color_range} if frame.color_range else {}
    return frame.to_ndarray(format="rgb24", **kwargs)


def _norm_rotation(degrees: float) -> int:
    """Nearest multiple of 90 in [0, 360): phones only write those."""
    return int(round(degrees / 90.0)) * 90 % 360


# ----------------------------------------------------------------------------------------- reading

class VideoReader:
    """Stream the frames of a video as upright uint8 RGB `[H,W,3]` arrays.

    `fps` is a Fraction (the average rate for variable-frame-rate clips; per-frame times are in
    `timestamps`), `width`/`height` are after rotation, `rotation` is the display rotation in degrees
    counter-clockwise (0/90/180/270) taken from the stream's display matrix. Iterating decodes from
    the start each time; only one frame is held at once.

        with VideoReader("clip.mp4") as video:
            for frame in video:          # uint8 [H,W,3]
                ...
    """

    def __init__(self, path: str | os.PathLike, require_audio: bool = False):
        self.path = _existing_file(path)
        container = _open_input(self.path)
        try:
            stream = _video_stream(container, self.path)
            self._stream_index = stream.index
            self.has_audio = bool(container.streams.audio)
            self.metadata: dict[str, str] = dict(container.metadata)  # title, comment, creation_time...
            if require_audio:
                _audio_stream(container, self.path)
            if stream.codec_context is None:  # no decoder for it, or its parameters are unreadable
                raise MediaError(f"{self.path}: its video stream cannot be decoded (unknown codec or "
                                 f"damaged header); re-encode it to H.264, e.g. with a video converter")
            self.codec = stream.codec_context.name
            self.pix_fmt = stream.codec_context.pix_fmt
            self._time_base = stream.time_base
            self._container_frames = int(stream.frames or 0)
            self._rate = self._stream_rate(stream)
            # The display matrix reaches us as frame side data, so peek at the first frame: it also
            # proves the stream decodes and is not empty.
            first = self._first_frame(container, stream)
        finally:
            container.close()
        self.rotation = _norm_rotation(first.rotation)
        swap = self.rotation in (90, 270)
        self.coded_width, self.coded_height = first.width, first.height
        self.width = first.height if swap else first.width
        self.height = first.width if swap else first.height
        self._timestamps: np.ndarray | None = None

    # -- metadata
    @staticmethod
    def _stream_rate(stream) -> Fraction | None:
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate is not None and rate > 0:
                return Fraction(rate)
        return None

    def _first_frame(self, container, stream) -> av.VideoFrame:
        try:
            for frame in container.decode(stream):
                return frame
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path} is damaged: its video stream does not decode ({exc}); "
                             f"re-encode or re-download it") from exc
        if self._container_frames > 0:
            raise MediaError(f"{self.path} is truncated or damaged: its header lists "
                             f"{self._container_frames} frames but none decode; re-encode or re-download it")
        raise MediaError(f"{self.path} has a video stream with zero frames; pass a clip that contains "
                         f"at least one frame")

    @property
    def timestamps(self) -> np.ndarray:
        """Presentation time of every frame in seconds from the first one, float64 `[N]`.

        Read from the packets (no decoding), once; for constant-rate clips this is `i / fps`.
        """
        if self._timestamps is None:
            container = _open_input(self.path)
            try:
                stream = container.streams[self._stream_index]
                pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
            except av.FFmpegError as exc:
                raise MediaError(f"{self.path} is damaged: reading its packets failed ({exc}); "
                                 f"re-encode or re-download it") from exc
            finally:
                container.close()
            if pts:
                ticks = np.sort(np.asarray(pts, dtype=np.int64))
                self._timestamps = (ticks - ticks[0]).astype(np.float64) * float(self._time_base)
            else:  # raw streams without timestamps: assume the nominal rate
                self._timestamps = np.arange(self._container_frames, dtype=np.float64) / float(self.fps)
        return self._timestamps

    @property
    def num_frames(self) -> int:
        """Frame count from the container header, or counted from the packets when the header has none."""
        return self._container_frames if self._container_frames > 0 else len(self.timestamps)

    @property
    def fps(self) -> Fraction:
        """Average frame rate as an exact Fraction (e.g. 25, 30000/1001)."""
        if self._rate is None:
            ts = self.timestamps
            span = ts[-1] - ts[0] if len(ts) > 1 else 0.0
            self._rate = Fraction(len(ts) - 1) / Fraction(span).limit_denominator(10**6) if span > 0 \
                else Fraction(25)
        return self._rate

    @property
    def is_variable_frame_rate(self) -> bool:
        """True when frame intervals differ by more than 10% of the mean (phone clips often do)."""
        steps = np.diff(self.timestamps)
        return bool(len(steps) > 1 and np.ptp(steps) > 0.1 * steps.mean())

    @property
    def duration(self) -> float:
        """Seconds: frame count / average rate."""
        return self.num_frames / float(self.fps)

    def __len__(self) -> int:
        return self.num_frames

    # -- frames
    def frames_with_times(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield `(seconds since the first frame, uint8 [H,W,3] upright RGB)` in presentation order."""
        container = _open_input(self.path)
        try:
            stream = container.streams[self._stream_index]
            stream.codec_context.thread_type = "AUTO"  # frame threads: decode is the bottleneck on small machines
            first_pts = None
            index = 0
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    raise MediaError(f"{self.path} is damaged: decoding stopped after {index} frames "
                                     f"({exc}); re-encode or re-download it") from exc
                if frame.pts is not None and first_pts is None:
                    first_pts = frame.pts
                t = float((frame.pts - first_pts) * self._time_base) if frame.pts is not None \
                    else index / float(self.fps)
                rotation = _norm_rotation(frame.rotation) if frame.rotation else self.rotation
                yield t, _upright(_frame_rgb(frame), rotation)
                index += 1
            # A cut-off download decodes "fine" up to the cut: compare with the header's count (a small
            # slack: edit lists may hide a frame or two).
            if index < self._container_frames - max(2, self._container_frames // 100):
                raise MediaError(f"{self.path} is truncated or damaged: only {index} of its "
                                 f"{self._container_frames} frames decode; re-encode or re-download it")
        finally:
            container.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.frames_with_times():
            yield frame

    def read_audio(self, sample_rate: int = AUDIO_RATE) -> np.ndarray:
        """This file's sound track as float32 mono `[T]` at `sample_rate` (MediaError when it has none)."""
        return read_audio(self.path, sample_rate)

    # -- context manager (the reader holds no open handle between iterations; kept for symmetry)
    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}: {self.num_frames} frames, {self.fps} fps, "
                f"{self.width}x{self.height}, rotation {self.rotation}, audio={self.has_audio})")


def read_audio(path: str | os.PathLike, sample_rate: int = AUDIO_RATE) -> np.ndarray:
    """Decode the first audio stream of any audio/video file to float32 mono `[T]` at `sample_rate`.

    Resampling uses FFmpeg's resampler; channels are averaged. Encoder padding at the end (AAC decodes to
    whole 1024-sample frames) is trimmed to the duration the container declares.
    """
    if int(sample_rate) <= 0:
        raise MediaError(f"sample_rate must be a positive number of Hz, got {sample_rate}; use e.g. 16000")
    p = _existing_file(path)
    container = _open_input(p)
    chunks: list[np.ndarray] = []
    try:
        stream = _audio_stream(container, p)
        # Keep the channels through resampling and average them here: FFmpeg's own stereo->mono
        # downmix is equal-power (identical channels come out 3 dB louder), a mean keeps the level.
        resampler = av.AudioResampler(format="fltp", rate=int(sample_rate))
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise MediaError(f"{p} is damaged: its audio does not decode ({exc}); re-encode or "
                             f"re-download it") from exc
        declared = float(stream.duration * stream.time_base) if stream.duration else None
    finally:
        container.close()
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if declared is not None:
        samples = samples[: int(round(declared * sample_rate))]
    return samples


# ----------------------------------------------------------------------------------------- writing

def _pick_encoder(names: Iterable[str], kind: str) -> str:
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # UnknownCodecError: not in this FFmpeg build
            continue
        return name
    raise MediaError(f"this PyAV/FFmpeg build has no {kind} encoder (tried {', '.join(names)}); install "
                     f"the PyAV wheel from PyPI, which bundles libx264 and aac")


def _as_fraction(fps: Any) -> Fraction:
    try:
        rate = Fraction(fps) if not isinstance(fps, float) else Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError) as exc:
        raise MediaError(f"fps must be a number or a fraction like '30000/1001', got {fps!r}") from exc
    if rate <= 0:
        raise MediaError(f"fps must be positive, got {fps!r}; use e.g. 25")
    return rate


def _to_uint8_rgb(frame: Any) -> np.ndarray:
    """uint8 [H,W,3], or float [H,W,3] in [0,1] (the project's image convention; torch tensors ok)."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MediaError(f"a video frame must be [H,W,3] RGB, got shape {tuple(arr.shape)}; drop alpha or "
                         f"stack grey images to 3 channels first")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise MediaError(f"a video frame must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}; "
                     f"convert it first")


def _as_audio(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    arr = np.asarray(audio)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise MediaError(f"audio must be mono [T] samples, got shape {tuple(arr.shape)}; average the "
                         f"channels first (audio.mean(axis=-1))")
    if np.issubdtype(arr.dtype, np.integer):  # int16 PCM and the like
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    return np.ascontiguousarray(arr, dtype=np.float32)


def default_metadata() -> dict[str, str]:
    """Provenance every clip carries unless the caller overrides it."""
    from avatar3d import __version__

    now = _dt.datetime.now(_dt.timezone.utc)
    return {"comment": f"made by avatar3d {__version__}",
            "creation_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


class CloseOrAbort:
    """`with` support for a streaming writer: `close()` (publish) on success, `abort()` (discard) on an error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Mp4Writer(CloseOrAbort):
    """Write an mp4 one frame at a time: H.264 yuv420p video, optional AAC audio, provenance metadata.

    The file appears at `path` only on a successful `close()` (temp file in the same folder, then a
    rename), so an interrupted render never leaves a broken clip or damages an older one. The audio
    (mono float32 `[T]` at `audio_rate`) is trimmed or zero-padded to the video's length on close, so
    both tracks last the same. Odd frame sizes are padded by repeating the last row/column
    (`odd_size="pad"`) or refused (`odd_size="error"`), since yuv420p needs even sizes.

        with Mp4Writer("out.mp4", fps=25, audio=wave) as w:
            for image in frames:     # uint8 [H,W,3] or float32 [H,W,3] in [0,1]
                w.write(image)
    """

    def __init__(self, path: str | os.PathLike, fps: Any, audio: Any = None, audio_rate: int = AUDIO_RATE,
                 metadata: Mapping[str, Any] | None = None, crf: int = 18, preset: str = "medium",
                 odd_size: str = "pad"):
        if odd_size not in ("pad", "error"):
            raise MediaError(f"odd_size must be 'pad' or 'error', got {odd_size!r}")
        if not 0 <= int(crf) <= 51:
            raise MediaError(f"crf must be in 0..51 (lower is better quality; 18 is near-lossless), got {crf}")
        self.path = Path(path)
        self.fps = _as_fraction(fps)
        self.audio = None if audio is None else _as_audio(audio)
        self.audio_rate = int(audio_rate)
        if self.audio is not None and self.audio_rate <= 0:
            raise MediaError(f"audio_rate must be a positive number of Hz, got {audio_rate}; use e.g. 16000")
        self.metadata = {**default_metadata(), **{str(k): str(v) for k, v in (metadata or {}).items()}}
        self.crf, self.preset, self.odd_size = int(crf), preset, odd_size
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the frames as given
        self._target = AtomicFile(self.path)  # validates the folder now, before any rendering work
        self._container = None
        self._vstream = None
        self._astream = None
        self._audio_pos = 0

    # -- setup on the first frame (its size fixes the stream's)
    def _open(self, height: int, width: int) -> None:
        if (height % 2 or width % 2) and self.odd_size == "error":
            raise MediaError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}; crop or pad the "
                             f"frames to even sizes, or use odd_size='pad'")
        movflags = "faststart"
        if set(self.metadata) - _MP4_STANDARD_KEYS:
            movflags += "+use_metadata_tags"  # keep custom keys such as avatar_id
        container = av.open(str(self._target.tmp), mode="w", format="mp4", options={"movflags": movflags})
        try:
            container.metadata.update(self.metadata)
            vname = _pick_encoder(VIDEO_ENCODERS, "video")
            if vname == "mpeg4":
                warnings.warn("no H.264 encoder in this PyAV build; writing MPEG-4 Part 2 video instead",
                              stacklevel=3)
            vstream = container.add_stream(vname, rate=self.fps)
            vstream.width, vstream.height = width + width % 2, height + height % 2
            vstream.pix_fmt = "yuv420p"
            vstream.codec_context.time_base = 1 / self.fps
            if vname in ("libx264", "h264"):
                vstream.options = {"crf": str(self.crf), "preset": self.preset}
            else:
                vstream.bit_rate = 8_000_000
            self._vstream = vstream
            if self.audio is not None:
                aname = _pick_encoder(AUDIO_ENCODERS, "audio")
                astream = container.add_stream(aname, rate=self.audio_rate)
                astream.layout = "mono"
                astream.bit_rate = 128_000
                self._astream = astream
        except BaseException:
            container.close()
            raise
        self._container = container

    def _pad_even(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if h % 2 or w % 2:
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        return img

    # -- audio interleaving: feed whole AAC frames up to the current video time
    def _audio_samples(self, start: int, stop: int) -> np.ndarray:
        piece = self.audio[start:stop]
        if len(piece) < stop - start:  # past the end of the given audio: silence
            piece = np.concatenate([piece, np.zeros(stop - start - len(piece), np.float32)])
        return piece

    def _feed_audio(self, until: int, final: bool = False) -> None:
        while self._audio_pos < until and (final or until - self._audio_pos >= AUDIO_CHUNK):
            stop = min(self._audio_pos + AUDIO_CHUNK, until)
            chunk = self._audio_samples(self._audio_pos, stop)
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = self.audio_rate
            frame.pts = self._audio_pos
            frame.time_base = Fraction(1, self.audio_rate)
            self._container.mux(self._astream.encode(frame))
            self._audio_pos = stop

    def _audio_end(self, frames: int) -> int:
        """Sample index where video frame `frames` starts: audio stops exactly with the video."""
        return int(round(Fraction(frames) / self.fps * self.audio_rate))

    # -- public API
    def write(self, frame: Any) -> None:
        """Append one frame: uint8 `[H,W,3]` or float `[H,W,3]` in [0,1] (numpy or a CPU/GPU tensor)."""
        if self._target is None:
            raise MediaError(f"{self.path}: write() after close(); open a new Mp4Writer")
        img = _to_uint8_rgb(frame)
        if self._container is None:
            self.size = img.shape[:2]
            self._open(*self.size)
        elif img.shape[:2] != self.size:
            raise MediaError(f"frame {self.frames_written} is {img.shape[1]}x{img.shape[0]} but the clip is "
                             f"{self.size[1]}x{self.size[0]}; every frame of a clip must have the same size")
        vframe = av.VideoFrame.from_ndarray(self._pad_even(img), format="rgb24")
        vframe.pts = self.frames_written
        vframe.time_base = 1 / self.fps
        self._container.mux(self._vstream.encode(vframe))
        self.frames_written += 1
        if self._astream is not None:
            self._feed_audio(self._audio_end(self.frames_written))

    def close(self) -> Path:
        """Flush the encoders and move the finished file into place; returns its path."""
        if self._target is None:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"no frames were written to {self.path}; a clip needs at least one frame "
                             f"(check that the frame source is not empty)")
        try:
            self._container.mux(self._vstream.encode(None))
            if self._astream is not None:
                self._feed_audio(self._audio_end(self.frames_written), final=True)
                self._container.mux(self._astream.encode(None))
            self._container.close()
            self._container = None
            self._target.commit()
        except BaseException:
            self.abort()
            raise
        self._target = None
        return self.path

    def abort(self) -> None:
        """Drop the partial file; an existing file at `path` is left untouched."""
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None
        if self._target is not None:
            self._target.discard()
            self._target = None



def write_mp4(path: str | os.PathLike, frames: Iterable[Any], fps: Any, audio: Any = None,
              audio_rate: int = AUDIO_RATE, metadata: Mapping[str, Any] | None = None, crf: int = 18,
              **kwargs: Any) -> Path:
    """Encode `frames` (an iterable of `[H,W,3]`, consumed lazily) and optional mono `audio` `[T]` to an mp4.

    See `Mp4Writer` for the formats, the audio/video length match and the atomic write. Returns the path.
    """
    with Mp4Writer(path, fps, audio=audio, audio_rate=audio_rate, metadata=metadata, crf=crf,
                   **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path
