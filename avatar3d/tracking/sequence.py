"""`TrackedSequence`: what tracking produces, and its on-disk form `tracking.npz`.

Schema of `tracking.npz` (format version 1; every array is plain numpy, no pickles):

| key | shape, dtype | meaning |
|---|---|---|
| `format_version` | [] int64 | 1 |
| `rig_name`, `rig_checksum` | [] str | the head model the parameters belong to (`avatar3d models list`) |
| `fps` | [] float64 | frames per second of the source video (average for variable frame rate) |
| `timestamps` | [T] float64 | seconds of each frame from the start |
| `resolution` | [] int64 | side R of the square crop frames (`frames/000000.png` ...) |
| `source_size` | [2] int64 | width, height of the source video after rotation |
| `crop_box` | [3] int64 | x0, y0, size of the square crop in source pixels (may extend past the frame: padded) |
| `K` | [3,3] float32 | camera intrinsics of the crop frames, pixels, pixel centres at +0.5 (one per video) |
| `viewmat` | [4,4] float32 | world->camera (OpenCV); fixed: the head moves, the camera does not |
| `shape` | [S] float32 | identity coefficients (one per video) |
| `expr` | [T,E] float32 | expression coefficients per frame |
| `global_rot`, `neck`, `jaw` | [T,3] float32 | axis-angle radians, FLAME convention (root, neck, jaw joints) |
| `eyes` | [T,2,3] float32 | left, right eye rotations, axis-angle radians (gaze) |
| `transl` | [T,3] float32 | translation, metres |
| `landmarks` | [T,478,2] float32 | MediaPipe landmarks in crop pixels (interpolated where detection failed) |
| `landmarks_fit` | [T,478,2] float32 | the fitted rig's landmarks projected with K |
| `confidence` | [T] float32 | detection confidence in [0,1] (0: failed) |
| `detected` | [T] bool | False where the detector failed and landmarks were interpolated |
| `audio` | [A] float32 | the video's audio, 16 kHz mono (empty when the video has none) |
| `audio_rate` | [] int64 | 16000 |

Units: metres, radians; rig space x to the subject's left, y up, z out of the face.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams
from avatar3d.io.atomic import atomic_write_bytes
from avatar3d.io.media import AUDIO_RATE

FORMAT_VERSION = 1
PARAM_KEYS = ("shape", "expr", "global_rot", "neck", "jaw", "eyes", "transl")


@dataclass
class TrackedSequence:
    rig_name: str
    rig_checksum: str
    fps: float
    timestamps: np.ndarray  # [T] float64 seconds
    resolution: int
    source_size: np.ndarray  # [2] int64 (width, height)
    crop_box: np.ndarray  # [3] int64 (x0, y0, size)
    K: np.ndarray  # [3,3] float32
    viewmat: np.ndarray  # [4,4] float32
    shape: np.ndarray  # [S] float32
    expr: np.ndarray  # [T,E] float32
    global_rot: np.ndarray  # [T,3] float32
    neck: np.ndarray  # [T,3] float32
    jaw: np.ndarray  # [T,3] float32
    eyes: np.ndarray  # [T,2,3] float32
    transl: np.ndarray  # [T,3] float32
    landmarks: np.ndarray  # [T,478,2] float32
    landmarks_fit: np.ndarray  # [T,478,2] float32
    confidence: np.ndarray  # [T] float32
    detected: np.ndarray  # [T] bool
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [A] float32, 16 kHz mono
    audio_rate: int = AUDIO_RATE

    @property
    def num_frames(self) -> int:
        return int(self.expr.shape[0])

    def faceless_frames(self) -> list[int]:
        """Frames where no face was detected (their parameters are interpolated, their images show no face)."""
        return [int(i) for i in np.flatnonzero(~np.asarray(self.detected, bool))]

    def params(self, device=None, dtype=torch.float32) -> RigParams:
        """The per-frame rig parameters as a batched `RigParams` (shape shared)."""
        return RigParams(**{k: torch.as_tensor(getattr(self, k), dtype=dtype, device=device) for k in PARAM_KEYS})

    def save(self, path: Path) -> None:
        """Write `tracking.npz` atomically."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["format_version"] = np.asarray(FORMAT_VERSION)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "TrackedSequence":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} does not exist; run `avatar3d track VIDEO --out {path.parent}` first")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as err:  # zip/npz damage surfaces as several exception types
            raise InputError(f"{path} is damaged or not a tracking file ({err}); {_repair_hint(path)}") from err
        version = int(arrays.pop("format_version", -1))
        if version != FORMAT_VERSION:
            raise InputError(f"{path} has tracking format {version}, this avatar3d reads {FORMAT_VERSION}; "
                             f"{_repair_hint(path)}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(arrays) - {"audio", "audio_rate"})
        if missing:
            raise InputError(f"{path} lacks {', '.join(missing)}; {_repair_hint(path)}")
        values = {k: v for k, v in arrays.items() if k in names}
        for key in ("rig_name", "rig_checksum"):
            values[key] = str(values[key])
        values["fps"] = float(values["fps"])
        values["resolution"] = int(values["resolution"])
        if "audio_rate" in values:
            values["audio_rate"] = int(values["audio_rate"])
        return cls(**values)


def describe_frames(frames: list[int], total: int, fps: float) -> str:
    """`frames` in words: how many, the share of `total`, and where (time spans, the first few)."""
    if not frames:
        return "no frames"
    spans, start = [], frames[0]
    for prev, cur in zip(frames, frames[1:] + [None]):
        if cur is None or cur != prev + 1:
            spans.append((start, prev))
            start = cur
    where = ", ".join(f"{a / fps:.1f}-{(b + 1) / fps:.1f} s" for a, b in spans[:4])
    more = f" and {len(spans) - 4} more spans" if len(spans) > 4 else ""
    return f"{len(frames)} of {total} frames ({100.0 * len(frames) / max(total, 1):.0f} %) at {where}{more}"


def _repair_hint(path: Path) -> str:
    """The command that regenerates `path`: inside an avatar, enrolling again (tracking alone does not repair
    an avatar); in a tracking folder, tracking again."""
    folder = Path(path).parent
    if (folder / "avatar.json").is_file():
        return (f"this avatar's tracking cannot be repaired in place: enroll again with "
                f"`avatar3d enroll VIDEO --out {folder}` (the enrollment video)")
    return f"regenerate it with `avatar3d track VIDEO --out {folder}`"
