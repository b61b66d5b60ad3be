"""Prosody per video frame: energy and pitch, speaker-normalised.

Energy: dB of the 25 ms RMS relative to the clip's speech level (loudness_reference), scaled so 0 is 40 dB
below it and 1 is at it. Pitch: f0 from the normalised autocorrelation of 40 ms windows (60-400 Hz), given
as log f0 minus the clip's median over voiced frames (a man's and a woman's intonation alike), with the
autocorrelation peak as voicing strength; both 0 where unvoiced. Computed in chunks (constant memory).
"""
from __future__ import annotations

import numpy as np

from avatar3d.io.media import AUDIO_RATE as SAMPLE_RATE

HOP = 160  # 10 ms analysis rate
PITCH_RATE = 8000  # pitch is searched at half the sample rate (f0 <= 400 Hz), every other analysis frame
PITCH_WIN = 320  # 40 ms at PITCH_RATE: two periods of 50 Hz
F0_MIN, F0_MAX = 60.0, 400.0
VOICED = 0.45  # autocorrelation peak above which a window counts as voiced
CHUNK_FRAMES = 6000  # analysis frames per chunk (60 s)


def _analysis_frames(wave: np.ndarray, start: int, count: int, size: int, hop: int = HOP) -> np.ndarray:
    # -> [count,size] windows centred on (start + k) * hop, zeros outside the wave
    centres = (start + np.arange(count)) * hop
    idx = centres[:, None] + np.arange(size)[None] - size // 2
    ok = (idx >= 0) & (idx < len(wave))
    return np.where(ok, wave[np.clip(idx, 0, max(0, len(wave) - 1))] if len(wave) else 0.0, 0.0)


def _pitch(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [N,W] -> f0 Hz [N], peak [N]
    x = frames - frames.mean(1, keepdims=True)
    n = 2 * frames.shape[1]
    spec = np.fft.rfft(x, n=n)
    ac = np.fft.irfft(spec * np.conj(spec), n=n)[:, : frames.shape[1]]
    # normalise by the energy of the overlapping parts (unbiased for the window edges)
    energy = np.cumsum(x[:, ::-1] ** 2, 1)[:, ::-1]
    denom = np.sqrt(energy[:, :1] * energy) + 1e-9
    r = ac / denom
    lo, hi = int(PITCH_RATE / F0_MAX), int(PITCH_RATE / F0_MIN)
    lag = lo + np.argmax(r[:, lo:hi], axis=1)
    peak = r[np.arange(len(r)), lag]
    return PITCH_RATE / lag, peak


def analysis_tracks(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # wave: [A] 16 kHz -> rms [N], f0 [N] Hz, voicing [N] at 100 Hz (row m at m / 100 s)
    wave = np.asarray(wave, np.float32)
    half = wave[: len(wave) // 2 * 2].reshape(-1, 2).mean(1)  # 8 kHz (a pair average is the low-pass)
    total = len(wave) // HOP + 1
    rms, f0, peak = [], [], []
    for s in range(0, total, CHUNK_FRAMES):
        count = min(CHUNK_FRAMES, total - s)
        rms.append(np.sqrt((_analysis_frames(wave, s, count, 400) ** 2).mean(1) + 1e-12))
        f, p = _pitch(_analysis_frames(half, s // 2, (count + 1) // 2, PITCH_WIN, 2 * HOP * PITCH_RATE // SAMPLE_RATE))
        f0.append(np.repeat(f, 2)[:count])
        peak.append(np.repeat(p, 2)[:count])
    return np.concatenate(rms), np.concatenate(f0), np.concatenate(peak)


def energy_pitch(wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0) -> np.ndarray:
    # wave: [A] 16 kHz -> [T,3] (energy, relative log f0, voicing) for frames at t0 + i/fps
    from avatar3d.audio2expr.features import loudness_reference

    rms, f0, peak = analysis_tracks(wave)
    ref = max(loudness_reference(np.asarray(wave, np.float32)), 1e-4)
    energy = np.clip((20 * np.log10(rms / ref) + 40.0) / 40.0, 0.0, 1.2)
    voiced = (peak > VOICED) & (energy > 0.3)
    log_f0 = np.log(f0)
    median = np.median(log_f0[voiced]) if voiced.any() else 0.0
    rel = np.where(voiced, np.clip(log_f0 - median, -0.7, 0.7), 0.0)
    strength = np.where(voiced, peak, 0.0)
    pos = np.clip((t0 + np.arange(num_frames) / fps) * (SAMPLE_RATE / HOP), 0, len(rms) - 1)
    grid = np.arange(len(rms))
    cols = [np.interp(pos, grid, c) for c in (energy, rel, strength)]
    return np.stack(cols, 1).astype(np.float32) if num_frames else np.zeros((0, 3), np.float32)


def median_f0(wave: np.ndarray) -> float | None:
    # wave: [A] 16 kHz -> Hz, or None without voiced speech
    """The voice's median pitch over its voiced, speech-loud 10 ms frames (the voice a model was trained on)."""
    from avatar3d.audio2expr.features import loudness_reference

    rms, f0, peak = analysis_tracks(wave)
    ref = max(loudness_reference(np.asarray(wave, np.float32)), 1e-4)
    voiced = (peak > VOICED) & (20 * np.log10(rms / ref) > -12.0)
    return float(np.median(f0[voiced])) if voiced.sum() >= 20 else None
