"""Other voices for the evidence: the enrollment audio resampled, as another speaker would sound it.

Resampling by a factor α (`heard(t) = wave(α t)`) scales pitch and formants by α together, as a shorter or
longer vocal tract does (the speed perturbation speech recognisers are trained with), and the tempo by α;
a frame i of the video is then heard at `(offset + i / fps) / α`. Models are scored on the same frames heard
in these voices: one that has learned the enrollment voice rather than the words loses there.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly


def resample_voice(wave: np.ndarray, factor: float) -> np.ndarray:
    # wave: [A] 16 kHz -> [A / factor]: heard(t) = wave(factor * t), low-pass filtered (polyphase)
    if factor == 1.0:
        return np.asarray(wave, np.float32)
    ratio = Fraction(factor).limit_denominator(64)
    return resample_poly(np.asarray(wave, np.float64), ratio.denominator, ratio.numerator).astype(np.float32)


def heard_timing(fps: float, offset_s: float, factor: float) -> tuple[float, float]:
    """(frame rate, offset) at which the resampled audio is read so that frame i hears what it heard before."""
    return fps * factor, offset_s / factor
