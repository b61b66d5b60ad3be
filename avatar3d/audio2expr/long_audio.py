"""How an avatar's audio drive behaves on a long clip: drift, frozen stretches, jitter, and a plot.

`avatar3d eval lipsync AVATAR --long-audio speech.wav --plot jaw.png` drives the avatar with any speech
(another speaker, a minute long) and reports per-10-second means of the mouth opening (drift), the longest
run of speech frames in which the mouth does not move (frozen stretches), the mean frame-to-frame change
next to the tracked video's (jitter), and the correlation with the audio envelope. The plot shows the
waveform and envelope, the mouth opening and the jaw angle on one time axis.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from avatar3d.audio2expr.features import MIN_REF, SAMPLE_RATE, frame_energy, load_audio, loudness_reference
from avatar3d.audio2expr.infer import animate
from avatar3d.audio2expr.lips import lip_geometry
from avatar3d.audio2expr.lipsync import pearson
from avatar3d.tracking.sequence import TrackedSequence

STILL_MM = 0.02  # a frame-to-frame change of the mouth opening below this counts as not moving
SPEECH_LEVEL = 0.5  # envelope (relative to the speech loudness) above which a frame counts as speech


def longest_still_run(opening_mm: np.ndarray, speech: np.ndarray) -> int:
    # opening_mm: [T]; speech: [T] bool
    """Longest run of consecutive speech frames whose mouth opening changed by less than STILL_MM."""
    best = run = 0
    for i in range(1, len(opening_mm)):
        run = run + 1 if (speech[i] and abs(opening_mm[i] - opening_mm[i - 1]) < STILL_MM) else 0
        best = max(best, run)
    return best


def long_audio_report(avatar_dir: Path, audio, rig, plot: Optional[Path] = None, seed: int = 0,
                      sample_rate: Optional[int] = None) -> dict:
    """Drive the avatar with `audio` (a path, or an array with `sample_rate`) and measure drift, frozen
    stretches and jitter."""
    seq = TrackedSequence.load(Path(avatar_dir) / "tracking.npz")
    wave = load_audio(audio, sample_rate)
    tic = time.perf_counter()
    out = animate(avatar_dir, wave, fps=None, seed=seed, sample_rate=SAMPLE_RATE)
    seconds = time.perf_counter() - tic
    fps, frames = float(out["fps"]), out["jaw"].shape[0]
    _, opening = lip_geometry(rig, seq.shape, out["expr"], out["jaw"])
    opening_mm = opening * 1000.0
    envelope = frame_energy(wave / max(loudness_reference(wave), MIN_REF), fps, frames).numpy()
    _, tracked = lip_geometry(rig, seq.shape, seq.expr, seq.jaw)
    per_10s = [float(opening_mm[i:i + int(10 * fps)].mean()) for i in range(0, frames, int(10 * fps))]
    report = {
        "audio_seconds": len(wave) / SAMPLE_RATE,
        "frames": int(frames),
        "realtime_factor": (len(wave) / SAMPLE_RATE) / max(seconds, 1e-9),
        "opening_mm_per_10s": [round(v, 2) for v in per_10s],
        "drift_mm": float(max(per_10s) - min(per_10s)) if per_10s else 0.0,
        "longest_still_speech_frames": longest_still_run(opening_mm, envelope > SPEECH_LEVEL),
        "mean_abs_change_mm": float(np.abs(np.diff(opening_mm)).mean()) if frames > 1 else 0.0,
        "tracked_mean_abs_change_mm": float(np.abs(np.diff(tracked * 1000.0)).mean()) if len(tracked) > 1 else 0.0,
        "opening_range_mm": [float(opening_mm.min()), float(opening_mm.max())],
        "corr_with_envelope": pearson(opening_mm, envelope),
    }
    report["chart"] = text_chart({"audio envelope": envelope, "mouth opening": opening_mm}, fps)
    if plot is not None:
        report["plot"] = str(save_plot(Path(plot), wave, envelope, opening_mm, np.rad2deg(out["jaw"][:, 0]), fps))
    return report


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray) -> str:
    # values: [N] -> N characters, the lowest value drawn as the lowest block, the highest as the full block
    """One block character per value, scaled between the series' own minimum and maximum."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return ""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return SPARKS[0] * values.size
    levels = np.rint((values - lo) / (hi - lo) * (len(SPARKS) - 1)).astype(int)
    return "".join(SPARKS[k] for k in levels)


def text_chart(series: dict, fps: float, seconds_per_column: float = 1.0) -> list[str]:
    # series: name -> [T] per-frame values (same T)
    """A terminal-sized picture of several per-frame series over time: one sparkline each, a column per
    `seconds_per_column` (the mean over those frames), labelled with the name and the column width."""
    step = max(1, int(round(seconds_per_column * fps)))
    width = max(len(name) for name in series) if series else 0
    lines = []
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        columns = [values[i:i + step].mean() for i in range(0, len(values), step)]
        lines.append(f"{name:>{width}} |{sparkline(np.asarray(columns))}|")
    lines.append(f"{'':>{width}}  one column = {step / fps:g} s")
    return lines


def save_plot(path: Path, wave: np.ndarray, envelope: np.ndarray, opening_mm: np.ndarray, jaw_deg: np.ndarray,
              fps: float) -> Path:
    # wave: [A] 16 kHz; envelope, opening_mm, jaw_deg: [T] per frame
    """Waveform + envelope, mouth opening and jaw angle over time, one PNG (written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avatar3d.io.atomic import atomic_write_bytes

    t = np.arange(len(opening_mm)) / fps
    fig, ax = plt.subplots(3, 1, figsize=(16, 8), sharex=True)
    ax[0].plot(np.arange(len(wave)) / SAMPLE_RATE, wave, lw=0.3, color="0.6")
    ax[0].plot(t, envelope * max(float(np.abs(wave).max()), 1e-6) / max(float(envelope.max()), 1e-6), color="C3", lw=1)
    ax[0].set_ylabel("audio, envelope")
    ax[1].plot(t, opening_mm, color="C0", lw=1)
    ax[1].set_ylabel("mouth opening (mm)")
    ax[2].plot(t, jaw_deg, color="C2", lw=1)
    ax[2].set_ylabel("jaw angle (deg)")
    ax[2].set_xlabel("seconds")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
