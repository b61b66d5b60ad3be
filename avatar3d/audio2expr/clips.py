"""Training data: a tracked video prepared as a `Clip` (normalised targets, audio, split, A/V offset), its folds,
the training part of an enrollment and the clip heard in another voice."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.features import MIN_REF, SAMPLE_RATE, loudness_reference
from avatar3d.audio2expr.lips import lip_jacobian, mouth_opening_landmarks, opening_gradient
from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.audio2expr.voices import heard_timing, resample_voice
from avatar3d.head.refined import read_split
from avatar3d.io.avatar_dir import AvatarPaths, default_split
from avatar3d.tracking.sequence import TrackedSequence



@dataclass
class Clip:
    """One tracked video prepared for training (normalised by its own person's statistics)."""

    wave: np.ndarray  # [A] 16 kHz, loudness-normalised, cut after the training part
    fps: float
    offset_s: float  # frame i reads audio at offset_s + i / fps
    target: Tensor  # [T,C] normalised deltas, C = E + 6
    val_start: int  # validation frames [val_start, val_end); every other frame trains
    lip_jacobian: Optional[Tensor] = None  # [3L,E+3] lip displacement (m) per normalised unit
    opening_grad: Optional[Tensor] = None  # [E+3] inner-lip distance (m) per normalised unit
    lip_scale: float = 1.0
    table: Optional[Tensor] = None  # [N,D] features of the whole wave at `rate` Hz (mel POWER for log-mel)
    rate: float = 100.0
    val_end: Optional[int] = None  # None: the end of the clip
    faceless: Optional[np.ndarray] = None  # [T] bool: no face detected (the mouth unseen): never trained on

    @property
    def val_range(self) -> tuple[int, int]:
        return self.val_start, self.target.shape[0] if self.val_end is None else self.val_end

    def fit_spans(self) -> list[tuple[int, int]]:
        """[(start, end)) runs of training frames: before and after the validation slice, split where no
        face was detected (those frames' targets are interpolated guesses)."""
        lo, hi = self.val_range
        spans = [(a, b) for a, b in ((0, lo), (hi, self.target.shape[0])) if b - a >= 2]
        if self.faceless is None or not self.faceless.any():
            return spans
        runs = []
        for a, b in spans:
            start = None
            for i in range(a, b + 1):
                seen = i < b and not self.faceless[i]
                if seen and start is None:
                    start = i
                elif not seen and start is not None:
                    runs.append((start, i))
                    start = None
        return [(a, b) for a, b in runs if b - a >= 2]

    def fit_frames(self) -> np.ndarray:  # [N] indices of the training frames
        return np.concatenate([np.arange(a, b) for a, b in self.fit_spans()] or [np.zeros(0, int)])


def fold_clips(clip: Clip, folds: int) -> list[Clip]:
    """The clip once per fold, each validating on its own contiguous block (folds > 1), or the clip as
    prepared (validation at its end) for a single network. They share the feature table."""
    if folds <= 1:
        return [clip]
    t = clip.target.shape[0]
    edges = np.linspace(0, t, folds + 1).round().astype(int)
    return [dataclasses.replace(clip, val_start=int(a), val_end=int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _envelope_100hz(wave: np.ndarray) -> np.ndarray:
    n = len(wave) // 160
    frames = wave[: n * 160].reshape(n, 160).astype(np.float64)
    env = np.sqrt((frames ** 2).mean(1) + 1e-10)
    k = np.ones(5) / 5  # 50 ms smoothing
    return np.convolve(env, k, mode="same")


def estimate_offset(mouth: np.ndarray, wave: np.ndarray, fps: float, max_ms: float = 200.0) -> tuple[float, float]:
    """(offset in ms, peak correlation): the lag of the audio envelope behind the mouth opening.

    mouth: [T] opening per video frame (frame i at i/fps); wave: [A] 16 kHz. Positive: the audio lags the
    picture (frame i's sound is at i/fps + offset). Searched in 10 ms steps within +-max_ms, refined
    by a parabola through the peak.
    """
    env = _envelope_100hz(np.asarray(wave))
    t_mouth = np.arange(len(mouth)) / fps
    t = np.arange(0.0, t_mouth[-1] if len(mouth) else 0.0, 0.01)
    if len(t) < 50 or len(env) < 50:
        return 0.0, 0.0
    m = np.interp(t, t_mouth, mouth)
    m = (m - m.mean()) / (m.std() + 1e-12)
    max_lag = int(round(max_ms / 10.0))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), -np.inf)
    idx = np.arange(len(t))
    for n, lag in enumerate(lags):
        j = idx + lag
        ok = (j >= 0) & (j < len(env))
        if ok.sum() < 50:
            continue
        e = env[j[ok]]
        mm = m[ok]
        e = (e - e.mean()) / (e.std() + 1e-12)
        corr[n] = float(np.mean((mm - mm.mean()) * e) / (mm.std() + 1e-12))
    best = int(np.argmax(corr))
    frac = 0.0
    if 0 < best < len(lags) - 1 and np.isfinite(corr[best - 1]) and np.isfinite(corr[best + 1]):
        a, b, c = corr[best - 1], corr[best], corr[best + 1]
        den = a - 2 * b + c
        frac = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0
    return float((lags[best] + frac) * 10.0), float(corr[best])


def channel_names(expr_names: list[str], num_expr: int) -> list[str]:
    names = list(expr_names) if len(expr_names) == num_expr else [f"expr{i:03d}" for i in range(num_expr)]
    return names + ["jaw_x", "jaw_y", "jaw_z", "neck_x", "neck_y", "neck_z"]


def raw_channels(seq: TrackedSequence) -> np.ndarray:
    """[T,E+6] expression, jaw, neck per frame."""
    return np.concatenate([seq.expr, seq.jaw, seq.neck], axis=1).astype(np.float64)


def training_frames(seq: TrackedSequence, source: Path, holdout: float) -> int:
    """Number of leading frames training may read: the enrollment's split when recorded, else the default."""
    frames = read_split(AvatarPaths(Path(source)).refined)  # None when unreadable: the default split is safe
    if frames:
        return max(frames) + 1
    return len(default_split(seq.num_frames, holdout))


def prepare_clip(seq: TrackedSequence, n_train: int, stats: dict, cfg: A2ETrainConfig, rig=None,
                 say: Callable[[str], None] = print) -> tuple[Clip, dict]:
    """The clip's training part, offset-corrected; returns it and a report of what was found."""
    fps = float(seq.fps)
    audio = np.asarray(seq.audio, np.float32)
    mouth = mouth_opening_landmarks(seq.landmarks_fit[:n_train])
    # only audio up to the end of the training part (+ the largest offset searched): the tail stays unseen
    end = int(round((n_train / fps) * SAMPLE_RATE))
    offset_ms, peak = estimate_offset(mouth, audio[: end + int(cfg.max_offset_ms * 16)], fps, cfg.max_offset_ms)
    offset_s = offset_ms / 1000.0 if peak > 0.1 else 0.0
    wave = audio[: max(0, end + int(round(offset_s * SAMPLE_RATE)))]
    ref = max(loudness_reference(wave), MIN_REF)
    wave = (wave / ref).astype(np.float32)
    target = (raw_channels(seq)[:n_train] - stats["mean"]) / stats["std"]
    n_val = max(8, int(round(n_train * cfg.val_fraction)))
    clip = Clip(wave, fps, offset_s, torch.as_tensor(target, dtype=torch.float32), max(1, n_train - n_val))
    faceless = ~np.asarray(seq.detected[:n_train], bool)
    if faceless.any():
        clip.faceless = faceless
        say(f"audio2expr: no face in {int(faceless.sum())} of the {n_train} training-part frames: not trained on")
    if rig is not None:
        jac = lip_jacobian(rig, seq, stats["mean"], stats["std"])
        if jac is not None:
            e3 = jac.shape[1]
            disp = clip.target[:, :e3] @ jac.T  # [T,3L]
            clip.lip_jacobian = jac
            clip.lip_scale = float(disp.pow(2).mean().clamp_min(1e-12))
        clip.opening_grad = opening_gradient(rig, seq, stats["mean"], stats["std"])
    return clip, {"av_offset_ms": round(offset_ms, 1), "av_offset_applied_ms": round(offset_s * 1000, 1),
                  "av_offset_peak_corr": round(peak, 3)}


def person_stats(seq: TrackedSequence, n_train: int) -> dict:
    raw = raw_channels(seq)[:n_train]
    std = raw.std(0)
    std = np.maximum(std, np.maximum(1e-3, 0.05 * np.median(std)))
    return {"mean": raw.mean(0), "std": std, "eyes_mean": seq.eyes[:n_train].mean(0).astype(np.float64)}


def all_seen_frames(clip: Clip) -> np.ndarray:  # [N] every training frame with a detected face
    frames = np.arange(clip.target.shape[0])
    return frames if clip.faceless is None else frames[~clip.faceless]


def voice_clip(clip: Clip, factor: float) -> Clip:
    """The clip heard in another voice (voices.py): its audio resampled, read at the matching rate and offset."""
    if factor == 1.0:
        return clip
    fps, offset = heard_timing(clip.fps, clip.offset_s, factor)
    return dataclasses.replace(clip, wave=resample_voice(clip.wave, factor), fps=fps, offset_s=offset, table=None)
