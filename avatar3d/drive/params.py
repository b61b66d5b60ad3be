"""`DriveParams`: a sequence of per-frame rig parameters that drives an avatar, with its sound.

Every driver produces one: the enrolled video's own tracking (self-reenactment), the audio-to-expression
model, another person's tracked video (cross-reenactment), or a still neutral face. Arrays are numpy
float32 so a sequence is cheap to slice, save and send; `rig_params(t)` turns one frame into torch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams
from avatar3d.io.media import AUDIO_RATE

FRAME_KEYS = ("expr", "global_rot", "neck", "jaw", "eyes", "transl")


@dataclass
class DriveParams:
    """Per-frame parameters of a clip. Rotations are axis-angle radians (FLAME convention), metres."""

    shape: np.ndarray  # [S] identity of the avatar (never driven)
    expr: np.ndarray  # [T,E] expression coefficients
    global_rot: np.ndarray  # [T,3] root rotation
    neck: np.ndarray  # [T,3] neck rotation: the head motion
    jaw: np.ndarray  # [T,3] jaw rotation
    eyes: np.ndarray  # [T,2,3] left, right eye rotations (gaze)
    transl: np.ndarray  # [T,3] translation
    fps: float
    audio: Optional[np.ndarray] = None  # [A] float32 mono at 16 kHz, aligned with frame 0; None: silent
    source: str = ""  # what made it: "tracking", "audio", "video", "neutral"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in FRAME_KEYS + ("shape",):
                setattr(self, f.name, np.ascontiguousarray(getattr(self, f.name), dtype=np.float32))
        t = self.expr.shape[0]
        want = {"global_rot": (t, 3), "neck": (t, 3), "jaw": (t, 3), "eyes": (t, 2, 3), "transl": (t, 3)}
        for key, shape in want.items():
            if getattr(self, key).shape != shape:
                raise InputError(f"DriveParams.{key} has shape {getattr(self, key).shape}, expected {shape} "
                                 f"for {t} frames; build every per-frame array with the same frame count")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise InputError(f"DriveParams.fps must be positive, got {self.fps}")
        if self.audio is not None:
            self.audio = np.ascontiguousarray(self.audio, dtype=np.float32).reshape(-1)

    def __len__(self) -> int:
        return int(self.expr.shape[0])

    @property
    def duration(self) -> float:
        """Seconds: the audio's length when there is audio, else frames / fps."""
        if self.audio is not None and self.audio.size:
            return self.audio.size / AUDIO_RATE
        return len(self) / self.fps

    def slice(self, start: int, stop: Optional[int] = None) -> "DriveParams":
        """Frames [start, stop) with the matching stretch of audio."""
        stop = len(self) if stop is None else stop
        audio = None
        if self.audio is not None:
            a0, a1 = (int(round(i / self.fps * AUDIO_RATE)) for i in (start, stop))
            audio = self.audio[a0:a1]
        return DriveParams(self.shape, *(getattr(self, k)[start:stop] for k in FRAME_KEYS), fps=self.fps,
                           audio=audio, source=self.source)

    def rig_params(self, t: int, device=None) -> RigParams:
        """Frame t as `RigParams` with batch 1."""
        if not 0 <= t < len(self):
            raise InputError(f"frame {t} is outside this sequence of {len(self)} frames")
        as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        return RigParams(as_t(self.shape), *(as_t(getattr(self, k)[t:t + 1]) for k in FRAME_KEYS))
