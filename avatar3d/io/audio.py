"""Small audio helpers: write a mono WAV atomically (tests, exported driving audio).

Reading any audio or video file to 16 kHz mono float32 is `avatar3d.io.media.read_audio`.
"""
from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np

from avatar3d.errors import MediaError
from avatar3d.io.atomic import atomic_write_bytes


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:  # samples: [T] or [T,C] float in [-1,1]
    """Encode float samples as 16-bit PCM WAV (values outside [-1,1] are clipped)."""
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] > 8:
        raise MediaError(f"audio must be [T] or [T,channels], got shape {tuple(np.shape(samples))}; "
                         f"transpose a [channels,T] array first")
    if int(sample_rate) <= 0:
        raise MediaError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    pcm = np.round(np.clip(arr, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(pcm.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> Path:  # samples: [T] or [T,C]
    """Write a 16-bit PCM WAV atomically; returns the path."""
    return atomic_write_bytes(path, wav_bytes(samples, sample_rate))
