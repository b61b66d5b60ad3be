"""Lip sync across speakers: drive an avatar with another person's video's audio, score against that video.

`avatar3d eval lipsync AVATAR --drive-video OTHER.mp4` (a video, tracked here, or a track output folder):
- the avatar is driven by the driver's audio at the driver's frame rate;
- the driver's own mouth is what its tracking shows (the rig fitted to that video); the two are time-aligned
  with the driver video's own audio/video offset (estimated as in training);
- `mouth_open_corr`: Pearson correlation of the two mouth-opening curves, with a 90 % block-bootstrap interval;
- `lve_mm`: lip vertex error against the driver's expression transferred to the avatar: the avatar's face posed
  with its mean plus the driver's deviations from the driver's mean, scaled by the ratio of the two people's
  spreads of mouth opening (per-person normalisation), with the avatar's mean face as the baseline;
- `silence`: the avatar's mean mouth opening in the driver's pauses (phone silence of 0.3 s or more) against
  the avatar's rest pose (its mouth in the pauses of its own enrollment video), in millimetres.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from avatar3d.audio2expr.clips import estimate_offset, training_frames
from avatar3d.audio2expr.features import SAMPLE_RATE, pause_frames
from avatar3d.audio2expr.lips import lip_geometry, mouth_opening_landmarks
from avatar3d.audio2expr.lipsync import block_bootstrap_ci, pearson
from avatar3d.errors import InputError
from avatar3d.tracking.sequence import TrackedSequence



def load_driver(drive: Path, say: Callable[[str], None]) -> TrackedSequence:
    """The driving video's tracking: read from a track folder, or tracked now (into a temporary folder)."""
    drive = Path(drive)
    if drive.is_dir():
        if not (drive / "tracking.npz").is_file():
            raise InputError(f"--drive-video {drive} is a folder without tracking.npz; pass a video, or the --out "
                             "folder of `avatar3d track VIDEO --out DIR`")
        return TrackedSequence.load(drive / "tracking.npz")
    if not drive.is_file():
        raise InputError(f"--drive-video {drive} does not exist; pass a video of someone talking (mp4/mov/...)")
    from avatar3d.tracking.pipeline import track_video

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avatar3d-drive-") as tmp:
        track_video(drive, Path(tmp) / "track", overlay=False)
        seq = TrackedSequence.load(Path(tmp) / "track" / "tracking.npz")
    say(f"tracked the driving video {drive.name} in {time.perf_counter() - started:.0f} s "
        f"(pass its `avatar3d track` folder instead to skip this)")
    return seq


def rest_opening(seq: TrackedSequence, rig, n_train: int) -> float:
    """The person's mouth opening (m) at rest: the mean over the pauses of their enrollment video's training part,
    or the 10th percentile of the opening when it has too few pause frames."""
    _, opening = lip_geometry(rig, seq.shape, seq.expr[:n_train], seq.jaw[:n_train])
    pauses = pause_frames(seq.audio[: int(n_train / seq.fps * SAMPLE_RATE)], seq.fps, n_train)
    return float(opening[pauses].mean()) if pauses.sum() >= 8 else float(np.percentile(opening, 10))


def _sample(curve: np.ndarray, times: np.ndarray, fps: float) -> np.ndarray:  # curve: [T,...] at i/fps
    pos = np.clip(times * fps, 0, len(curve) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(curve) - 1)
    w = (pos - lo).reshape(-1, *([1] * (curve.ndim - 1)))
    return curve[lo] * (1 - w) + curve[hi] * w


def evaluate_cross_speaker(avatar_dir: Path, drive: Path, rig=None, seed: int = 0,
                           say: Callable[[str], None] = print) -> dict:
    """The metrics of the module doc for the avatar driven by `drive`'s audio."""
    from avatar3d.audio2expr.infer import animate
    from avatar3d.head.registry import load_rig

    avatar_dir = Path(avatar_dir)
    seq = TrackedSequence.load(avatar_dir / "tracking.npz")
    driver = load_driver(drive, say)
    if driver.audio.size == 0:
        raise InputError(f"--drive-video {drive} has no audio; pass a video with speech")
    rig = rig if rig is not None else load_rig(seq.rig_name)
    driver_rig = rig if driver.rig_name == seq.rig_name else load_rig(driver.rig_name)
    fps, n = float(driver.fps), driver.num_frames
    offset_ms, peak = estimate_offset(mouth_opening_landmarks(driver.landmarks_fit), driver.audio, fps)
    offset_s = offset_ms / 1000.0 if peak > 0.1 else 0.0
    started = time.perf_counter()
    out = animate(avatar_dir, driver.audio, fps, seed, sample_rate=SAMPLE_RATE)
    seconds = time.perf_counter() - started
    # driver frame j's sound is at j/fps + offset: the avatar frame for it is read at that time
    times = np.arange(n) / fps + offset_s
    expr, jaw = _sample(out["expr"], times, fps), _sample(out["jaw"], times, fps)
    lips_a, open_a = lip_geometry(rig, seq.shape, expr.astype(np.float32), jaw.astype(np.float32))
    _, open_d = lip_geometry(driver_rig, driver.shape, driver.expr, driver.jaw)

    n_train = training_frames(seq, avatar_dir, 0.2)
    _, open_train = lip_geometry(rig, seq.shape, seq.expr[:n_train], seq.jaw[:n_train])
    scale = float(open_train.std() / max(open_d.std(), 1e-6))
    mean_e, mean_j = seq.expr[:n_train].mean(0), seq.jaw[:n_train].mean(0)
    moved_e = mean_e + (driver.expr - driver.expr.mean(0)) * scale
    moved_j = mean_j + (driver.jaw - driver.jaw.mean(0)) * scale
    lips_t, _ = lip_geometry(rig, seq.shape, moved_e.astype(np.float32), moved_j.astype(np.float32))
    lips_m, _ = lip_geometry(rig, seq.shape, np.repeat(mean_e[None], n, 0), np.repeat(mean_j[None], n, 0))
    lve = lambda lips: float(np.linalg.norm(lips - lips_t, axis=-1).max(1).mean() * 1000.0)  # noqa: E731

    pauses = pause_frames(driver.audio, fps, n)
    pauses = _sample(pauses.astype(float), times - offset_s, fps) > 0.5  # pauses of the sound heard at frame j
    rest = rest_opening(seq, rig, n_train)
    corr = pearson(open_a, open_d)
    return {
        "frames": int(n), "driver_fps": fps, "driver_offset_ms": round(offset_s * 1000.0, 1),
        "mouth_open_corr": None if corr is None else round(corr, 3),
        "mouth_open_corr_ci90": block_bootstrap_ci(open_a, open_d),
        "lve_mm": round(lve(lips_a), 3), "lve_mean_face_mm": round(lve(lips_m), 3),
        "opening_scale": round(scale, 3),
        "opening_std_mm": {"avatar_driven": round(float(open_a.std() * 1000), 2),
                           "driver_tracked": round(float(open_d.std() * 1000), 2),
                           "avatar_tracked": round(float(open_train.std() * 1000), 2)},
        "silence": {"frames": int(pauses.sum()),
                    "opening_mm": None if not pauses.any() else round(float(open_a[pauses].mean() * 1000), 2),
                    "rest_mm": round(rest * 1000, 2),
                    "excess_mm": None if not pauses.any() else round(float((open_a[pauses].mean() - rest) * 1000), 2)},
        "realtime_factor": round((len(driver.audio) / SAMPLE_RATE) / max(seconds, 1e-9), 1),
    }


def format_cross_table(result: dict, drive_name: str) -> str:
    r, s = result, result["silence"]
    ci = r["mouth_open_corr_ci90"]
    under = 100.0 * (1.0 - r["lve_mm"] / r["lve_mean_face_mm"]) if r["lve_mean_face_mm"] > 0 else 0.0
    lines = [f"driven by {drive_name} ({r['frames']} frames, its A/V offset {r['driver_offset_ms']:+.0f} ms)",
             f"  mouth corr {r['mouth_open_corr'] if r['mouth_open_corr'] is not None else '-'}"
             + (f"  90% CI [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""),
             f"  LVE {r['lve_mm']:.2f} mm (mean face {r['lve_mean_face_mm']:.2f} mm: {under:.0f} % under)",
             f"  opening std: avatar driven {r['opening_std_mm']['avatar_driven']:.2f} mm, driver tracked "
             f"{r['opening_std_mm']['driver_tracked']:.2f} mm, avatar tracked {r['opening_std_mm']['avatar_tracked']:.2f} mm",
             f"  silence: {s['frames']} pause frames, opening {s['opening_mm']} mm vs rest {s['rest_mm']} mm "
             f"(excess {s['excess_mm']} mm)",
             f"  inference {r['realtime_factor']:.0f}x real time"]
    return "\n".join(lines)
