"""A voice's spectral print: the long-term average spectrum of its speech, level-free.

Speakers differ in vocal-tract length and voice quality (recordings also in their channel), and the average
spectrum of their speech shows it far more clearly than the median pitch: two men can share a pitch, and one
man's pitch moves by 10 % between two stretches of one video. The print is the mean log mel power (BANDS
bands) over the frames loud enough to be speech, each frame less its mean over the bands (a louder or quieter
recording is the same voice). `voice_distance` maps the RMS difference of two prints onto [0, 1]: 0 up to SAME_VOICE
(stretches of one speaker's video), 1 from OTHER_VOICE on (another speaker). docs/lipsync.md lists measured
distances. Computed in chunks (constant memory).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from avatar3d.io.media import AUDIO_RATE as SAMPLE_RATE

BANDS = 40
CHUNK_S = 30.0
SPEECH_DB = 12.0  # frames within this many dB of the clip's speech level count as speech
MIN_SPEECH_FRAMES = 50  # 0.5 s of speech at least, else no print
SAME_VOICE = 0.35
OTHER_VOICE = 0.7
FRAMES_PER_SAMPLE = 5  # 10 ms frames per independent sample of the spectrum (a phone lasts several)


@dataclass
class VoicePrint:
    """The mean log mel power of a clip's speech frames, level-free ([BANDS]), with its per-band variance over
    those frames ([BANDS]) and their number (how well the mean is known)."""

    mean: np.ndarray
    var: np.ndarray
    frames: int

    def to_json(self) -> dict:
        return {"mean": [round(float(v), 4) for v in self.mean], "var": [round(float(v), 4) for v in self.var],
                "frames": int(self.frames)}

    @classmethod
    def from_json(cls, data: dict) -> "VoicePrint":
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["var"], np.float64), int(data["frames"]))


def voice_print(wave: np.ndarray) -> Optional[VoicePrint]:
    # wave: [A] 16 kHz -> its print, or None with under MIN_SPEECH_FRAMES of speech
    """The level-free long-term average log mel spectrum of the speech frames of `wave` (module doc)."""
    from avatar3d.audio2expr.features import BASE_HOP, LogMel, frame_energy, loudness_reference

    wave = np.asarray(wave, np.float32)
    ref = loudness_reference(wave)
    mel = LogMel(BANDS, 1)
    rate = SAMPLE_RATE / BASE_HOP  # the mel rows' rate: row m centred at m / rate seconds
    total, squares, count = np.zeros(BANDS), np.zeros(BANDS), 0
    step = int(CHUNK_S * SAMPLE_RATE)
    for start in range(0, len(wave), step):
        piece = wave[start: start + step]
        power = mel.mel_power(torch.as_tensor(piece)).double().numpy()  # [N,B]
        energy = frame_energy(piece, rate, len(power), 0.0, ref).numpy()  # 1 at the speech level, 0 40 dB under
        speech = energy > 1.0 - SPEECH_DB / 40.0
        logs = np.log(power[speech] + 1e-10)
        logs -= logs.mean(1, keepdims=True)  # level-free frame by frame: the print is the spectrum's shape
        total += logs.sum(0)
        squares += (logs ** 2).sum(0)
        count += int(speech.sum())
    if count < MIN_SPEECH_FRAMES:
        return None
    mean = total / count
    return VoicePrint(mean, np.maximum(squares / count - mean ** 2, 0.0), count)


def print_distance(a: VoicePrint, b: VoicePrint) -> float:
    """RMS difference of the two mean spectra, less what their sampling noise alone would give (a short clip's
    mean is uncertain: frames within FRAMES_PER_SAMPLE of each other are counted as one sample)."""
    squared = float(np.mean((a.mean - b.mean) ** 2))
    samples = lambda p: max(1.0, p.frames / FRAMES_PER_SAMPLE)  # noqa: E731
    noise = float(np.mean(a.var / samples(a) + b.var / samples(b)))
    return float(np.sqrt(max(0.0, squared - noise)))


def voice_distance(a: VoicePrint, b: VoicePrint) -> float:
    """0 for the same voice, 1 for another speaker's, linear in between (module doc)."""
    return float(np.clip((print_distance(a, b) - SAME_VOICE) / (OTHER_VOICE - SAME_VOICE), 0.0, 1.0))
