"""Training the audio-to-expression model on an enrolled video's own audio and tracked parameters.

1. Audio/video offset: the tracked mouth opening (inner-lip distance of the fitted rig's landmarks) is
   cross-correlated with the audio envelope over +-200 ms; the lag (ms, positive: the audio lags the
   picture) is reported and corrected (frame i reads audio at i/fps + offset).
2. Windowed training on the TRAINING part only (the held-out tail is never read, audio included), with
   gain, noise and +-5% speed augmentation. A k-fold ensemble (`folds` blocks, `repeats` networks per
   block, default 5 x 2): each network is early-stopped on its own contiguous block of the training part
   and trained on the rest; inference averages them (with ~15 s of speech one network's output depends
   much on its seed and its validation slice; their mean is steadier and closer). `folds: 1`: networks
   validated on the last `val_fraction`.
3. Too little speech for the networks (under `min_speech_s`): the phonetic path alone (6.) when there are
   1 s of trusted phones, else a clear message and a fallback model (audio energy -> jaw opening regression)
   that still animates.
4. `pretrain`: first train on every other tracked clip under a folder (same head model), then fine-tune.
5. A closed-form lip regressor (ridge.py) fitted beside the transformers; its share of the output is the
   one with the smallest lip error on the out-of-fold predictions (every training frame predicted by the
   networks that never saw it, and by a regressor fitted without its block). `network: false` keeps the
   regressor only (seconds of training).
6. The phonetic path (phonetic.py, visemes.py, viseme_fit.py): pocketsphinx phones -> the person's visemes + a
   phonetic regressor, blended with the acoustic path (1.-5.) by a share and a gain chosen out of fold, once in
   the enrollment voice and once in that audio resampled into other voices (voices.py).

Writes `OUT/audio2expr/model.safetensors` + `config.json` (atomically; config.json last, as the commit
point). Deterministic for a seed (up to the optional wall-clock cap, which is a safety net).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import Tensor

from avatar3d.audio2expr.features import (SAMPLE_RATE, FeatureExtractor, LogMel, frame_energy,
                                          interp_rows, loudness_reference, make_extractor, speech_seconds)
from avatar3d.audio2expr.model import Audio2Expr, ExpressionPrior, ModelConfig
from avatar3d.audio2expr.phonetic import speech_features
from avatar3d.audio2expr.prosody import median_f0
from avatar3d.audio2expr.ridge import LipRidge, RidgeConfig, band_frames
from avatar3d.audio2expr.visemes import VisemeConfig, VisemeModel
from avatar3d.audio2expr import viseme_fit
from avatar3d.audio2expr.voices import heard_timing, resample_voice
from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json
from avatar3d.tracking.sequence import TrackedSequence

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
MIN_REF = 0.01  # loudness floor (-40 dBFS): near-silent input is not amplified to speech level
# MediaPipe face-mesh inner-lip pairs (upper, lower) and the outer eye corners (scale)
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
EYE_CORNERS = (33, 263)
BLINK_NAMES = (("eyeBlink_L", "eyeBlinkLeft"), ("eyeBlink_R", "eyeBlinkRight"))


@dataclass
class A2ETrainConfig:
    holdout: float = 0.2
    """Fraction at the end of the video kept for evaluation (never read here)."""
    val_fraction: float = 0.15
    """Last fraction of the TRAINING part used for validation / early stopping."""
    window: int = 64
    """Training window in frames."""
    batch: int = 8
    max_steps: int = 700
    eval_every: int = 25
    patience: int = 8
    """Evaluations without improvement before stopping."""
    lr: float = 1e-3
    weight_decay: float = 1e-2
    max_seconds: float = 280.0
    """Safety cap on training time (stopping by it breaks exact reproducibility)."""
    w_lip: float = 1.0
    w_mse: float = 0.1
    """Weight of the plain channel error (all channels, normalised) beside the lip-vertex error."""
    w_vel: float = 0.2
    """Weight of the frame-to-frame velocity error."""
    w_prior: float = 0.05
    max_offset_ms: float = 200.0
    min_speech_s: float = 4.0
    """Less speech than this in the training part: fall back to the energy -> jaw regression."""
    speed: float = 0.05
    gain_db: float = 6.0
    snr_db: tuple = (15.0, 45.0)
    pretrain_steps: int = 800
    folds: int = 5
    """Blocks of the training part (k-fold): a network is early-stopped on each block and trained on the rest;
    inference averages them, and their out-of-fold predictions choose the lip regressor's share. 1: a single
    network validated on the last `val_fraction`."""
    repeats: int = 2
    """Networks per fold (different seeds). On German_20s's held-out tail, ten networks (two seeds) scored better
    on both lip figures than the five-network runs on average, in each of the 12 settings tried (averaging
    removes what depends on the seed)."""
    network: bool = True
    phonetic: bool = True
    """Fit the phonetic path (pocketsphinx phones -> the person's visemes + a phonetic regressor) and blend it
    with the acoustic one by out-of-fold lip error; off: the acoustic path alone."""
    voice_factors: tuple = (1.0, 0.85, 1.15)
    """Voices the evidence is heard in: the enrollment audio resampled by these factors (pitch and formants scaled
    together, as another speaker's; voices.py). The phonetic share is chosen twice on out-of-fold lip error: in the
    enrollment voice (1.0) and in the others; inference uses the first for a voice like the enrollment's and moves
    to the second as the driving voice's pitch departs from it (the acoustic path learns the voice)."""
    min_phonetic_speech_s: float = 1.0
    """With less speech than `min_speech_s` (no networks) but at least this much, the phonetic path alone
    drives the lips (shrunk towards generic visemes); below it, the energy fallback."""
    """Train the transformer; off: the closed-form lip regressor alone (seconds instead of minutes)."""
    blend_grid: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Shares of the lip regressor tried on the validation slice (the rest is the transformer's)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    visemes: VisemeConfig = field(default_factory=VisemeConfig)

    def __post_init__(self):  # presets give plain dicts for the nested sections
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.ridge, dict):
            self.ridge = RidgeConfig(**self.ridge)
        if isinstance(self.visemes, dict):
            self.visemes = VisemeConfig(**self.visemes)
        self.snr_db, self.blend_grid = tuple(self.snr_db), tuple(self.blend_grid)
        self.voice_factors = tuple(float(f) for f in self.voice_factors)


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


# ------------------------------------------------------------------------------------------ signals
def mouth_opening_landmarks(landmarks: np.ndarray) -> np.ndarray:  # [T,478,2] -> [T]
    """Inner-lip distance over the eye-corner distance (scale-free), per frame."""
    lm = np.asarray(landmarks, dtype=np.float64)
    d = np.mean([np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) for a, b in INNER_LIP_PAIRS], axis=0)
    scale = np.linalg.norm(lm[:, EYE_CORNERS[0]] - lm[:, EYE_CORNERS[1]], axis=-1)
    return d / np.maximum(scale, 1e-6)


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


# ------------------------------------------------------------------------------------------ data
def channel_names(expr_names: list[str], num_expr: int) -> list[str]:
    names = list(expr_names) if len(expr_names) == num_expr else [f"expr{i:03d}" for i in range(num_expr)]
    return names + ["jaw_x", "jaw_y", "jaw_z", "neck_x", "neck_y", "neck_z"]


def raw_channels(seq: TrackedSequence) -> np.ndarray:
    """[T,E+6] expression, jaw, neck per frame."""
    return np.concatenate([seq.expr, seq.jaw, seq.neck], axis=1).astype(np.float64)


def training_frames(seq: TrackedSequence, source: Path, holdout: float) -> int:
    """Number of leading frames training may read: the enrollment's split when recorded, else the default."""
    from avatar3d.training.trainer import default_split

    refined = Path(source) / "refined.npz"
    if refined.is_file():
        try:
            with np.load(refined, allow_pickle=False) as data:
                frames = np.asarray(data["frames_train"]).astype(int)
            if frames.size:
                return int(frames.max()) + 1
        except Exception:  # an unreadable refined.npz: the default split is the safe choice
            pass
    return len(default_split(seq.num_frames, holdout))


def lip_jacobian(rig, seq: TrackedSequence, mean: np.ndarray, std: np.ndarray) -> Optional[Tensor]:
    """[3L,E+3]: lip vertex displacement (m) per normalised unit of each expression and jaw channel,
    linearised at the person's mean (so the loss follows the lip vertex error)."""
    from avatar3d.head.lbs import pose_vertices
    from avatar3d.head.rig import RigParams

    lips = rig.region("lips")
    if not bool(lips.any()) or rig.num_expr != seq.expr.shape[1]:
        return None
    e = rig.num_expr
    n = e + 3 + 1
    eps = 1e-3
    base = torch.as_tensor(mean, dtype=torch.float32)
    rows = base[None].repeat(n, 1)
    for c in range(e + 3):
        rows[c + 1, c] += eps
    p = RigParams(torch.as_tensor(seq.shape, dtype=torch.float32), rows[:, :e], torch.zeros(n, 3),
                  torch.zeros(n, 3), rows[:, e:e + 3], torch.zeros(n, 2, 3), torch.zeros(n, 3))
    with torch.no_grad():
        v = pose_vertices(rig, p)[:, lips]  # [n,L,3]
    jac = ((v[1:] - v[:1]) / eps).reshape(e + 3, -1).T  # [3L,E+3]
    return (jac * torch.as_tensor(std[: e + 3], dtype=torch.float32)).contiguous()


def opening_gradient(rig, seq: TrackedSequence, mean: np.ndarray, std: np.ndarray) -> Optional[Tensor]:
    """[E+3]: inner-lip distance (m, the lip-sync metric's mouth opening) per normalised unit of each
    expression and jaw channel, linearised at the person's mean."""
    if rig.landmarks_mp is None or rig.num_expr != seq.expr.shape[1]:
        return None
    from avatar3d.audio2expr.lipsync import lip_geometry

    e = rig.num_expr
    eps = 1e-2
    rows = np.repeat(np.asarray(mean[: e + 3], np.float64)[None], e + 4, 0)
    rows[1:] += np.eye(e + 3) * eps * np.asarray(std[: e + 3])[None]
    _, opening = lip_geometry(rig, seq.shape, rows[:, :e].astype(np.float32), rows[:, e:].astype(np.float32))
    return torch.as_tensor((opening[1:] - opening[0]) / eps, dtype=torch.float32)


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


# ------------------------------------------------------------------------------------------ batches
def _ensure_table(clip: Clip, ex: FeatureExtractor) -> None:
    """Featurise the clip's audio once; windows then only interpolate (augmentation in the feature domain)."""
    if clip.table is None:
        clip.table, clip.rate = ex.base_features(torch.from_numpy(clip.wave))


def _window(clip: Clip, ex: FeatureExtractor, start: float, n: int, speed: float, gain: float,
            snr_db: Optional[float], rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Features [n,k,D] and targets [n,C] of frames start + j*speed.

    Augmentation: tempo (+-speed: frames read the audio at a stretched pace), gain, and white noise at
    `snr_db` below the normalised speech level, the last two added to the mel power (log-mel only).
    """
    _ensure_table(clip, ex)
    src = start + np.arange(n) * speed
    lo, frac = np.floor(src).astype(int), torch.as_tensor(src - np.floor(src), dtype=torch.float32)[:, None]
    hi = np.minimum(lo + 1, clip.target.shape[0] - 1)
    target = clip.target[lo] * (1 - frac) + clip.target[hi] * frac
    k = ex.per_frame
    sub = (torch.arange(n, dtype=torch.float64)[:, None] + (torch.arange(k, dtype=torch.float64)[None] + 0.5) / k - 0.5)
    times = clip.offset_s + (start + sub * speed) / clip.fps  # [n,k]
    feats = interp_rows(clip.table, clip.rate, times)
    if isinstance(ex, LogMel):
        noise = 0.0 if snr_db is None else ex.noise_mel() * (10 ** (-snr_db / 10))
        feats = feats * gain ** 2 + noise
    return ex.finish(feats), target


def _sample_batch(clips: list[Clip], ex: FeatureExtractor, cfg: A2ETrainConfig, rng: np.random.Generator):
    """A batch of augmented windows, each inside one run of training frames (chosen by its length, so
    every training frame is about equally likely to be seen)."""
    feats, targets, owners = [], [], []
    spans = [(ci, a, b) for ci, c in enumerate(clips) for a, b in c.fit_spans()]
    weights = np.array([b - a for _, a, b in spans], float)
    for _ in range(cfg.batch):
        ci, a, b = spans[int(rng.choice(len(spans), p=weights / weights.sum()))]
        clip = clips[ci]
        speed = float(rng.uniform(1 - cfg.speed, 1 + cfg.speed))
        n = min(cfg.window, max(2, int((b - a - 1) / speed)))
        start = a + float(rng.uniform(0, max(0.0, b - a - 1 - (n - 1) * speed)))
        gain = float(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
        snr = float(rng.uniform(*cfg.snr_db))
        f, t = _window(clip, ex, start, n, speed, gain, snr, rng)
        if n < cfg.window:  # short runs: pad (masked out of the loss)
            f = torch.cat([f, f.new_zeros(cfg.window - n, *f.shape[1:])])
            t = torch.cat([t, t.new_full((cfg.window - n, t.shape[1]), float("nan"))])
        feats.append(f)
        targets.append(t)
        owners.append(ci)
    return torch.stack(feats), torch.stack(targets), owners


def _loss(pred: Tensor, target: Tensor, owners: list[int], clips: list[Clip], prior: Optional[ExpressionPrior],
          cfg: A2ETrainConfig, lips_only: bool = False) -> Tensor:
    """Weighted MSE + velocity + linearised lip-vertex error + prior; `lips_only`: the lip term alone
    (validation: what audio can predict, without the channels it cannot, such as head motion)."""
    # pred, target: [B,W,C] (target NaN where padded)
    valid = ~torch.isnan(target[..., 0])  # [B,W]
    target = torch.nan_to_num(target)
    err = (pred - target) * valid[..., None]
    n = valid.sum().clamp_min(1)
    loss = cfg.w_mse * err.pow(2).sum() / (n * pred.shape[-1])
    dv = (err[:, 1:] - err[:, :-1]) * (valid[:, 1:] & valid[:, :-1])[..., None]
    loss = loss + cfg.w_vel * dv.pow(2).sum() / (n * pred.shape[-1])
    lip_terms = []
    for b, ci in enumerate(owners):
        jac = clips[ci].lip_jacobian
        if jac is not None:
            disp = err[b, :, : jac.shape[1]] @ jac.T  # [W,3L]
            lip_terms.append(disp.pow(2).sum() / (valid[b].sum().clamp_min(1) * disp.shape[1]) / clips[ci].lip_scale)
    if lip_terms and lips_only:
        return torch.stack(lip_terms).mean()
    if lip_terms:
        loss = loss + cfg.w_lip * torch.stack(lip_terms).mean()
    else:  # no rig: weight the mouth-free channels equally, so the MSE carries the whole signal
        loss = loss + cfg.w_lip * err.pow(2).sum() / (n * pred.shape[-1])
    if prior is not None:
        loss = loss + cfg.w_prior * prior.penalty(pred[..., : prior.components.shape[0]][valid])
    return loss


def _val_batch(clips: list[Clip], ex: FeatureExtractor):
    """One un-augmented window per clip covering its validation slice."""
    out = []
    for ci, clip in enumerate(clips):
        lo, hi = clip.val_range
        if hi - lo >= 2:
            f, t = _window(clip, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
            out.append((f[None], t[None], [ci]))
    return out


def _feature_stats(clips: list[Clip], ex: FeatureExtractor) -> tuple[Tensor, Tensor]:
    rows = []
    for clip in clips:
        for a, b in clip.fit_spans():
            f, _ = _window(clip, ex, float(a), b - a, 1.0, 1.0, None, np.random.default_rng(0))
            rows.append(f.reshape(-1, f.shape[-1]))
    allf = torch.cat(rows)
    return allf.mean(0), allf.std(0).clamp_min(1e-3)


def fit_network(clips: list[Clip], val_clips: list[Clip], ex: FeatureExtractor, cfg: A2ETrainConfig, seed: int,
                prior: Optional[ExpressionPrior], net: Optional[Audio2Expr] = None, steps: Optional[int] = None,
                say: Callable[[str], None] = print) -> tuple[Audio2Expr, dict]:
    """Adam with warm-up + cosine decay; early stopping on the validation slices; returns the best state."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if net is None:
        net = Audio2Expr(cfg.model)
        mean, std = _feature_stats(clips, ex)
        net.feat_mean.copy_(mean)
        net.feat_std.copy_(std)
    steps = steps or cfg.max_steps
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps))))
    val = _val_batch(val_clips, ex)
    best, best_state, bad, history = float("inf"), copy.deepcopy(net.state_dict()), 0, []
    started = time.perf_counter()
    step = 0
    for step in range(1, steps + 1):
        net.train()
        feats, target, owners = _sample_batch(clips, ex, cfg, rng)
        loss = _loss(net(feats), target, owners, clips, prior, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == steps:
            net.eval()
            with torch.no_grad():
                v = float(np.mean([float(_loss(net(f), t, o, val_clips, None, cfg, True)) for f, t, o in val])) if val else float(loss.detach())
            history.append((step, round(float(loss.detach()), 4), round(v, 4)))
            say(f"  step {step:5d}  train {float(loss.detach()):.4f}  val {v:.4f}")
            if v < best - 1e-4:
                best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    say(f"  early stop at step {step} (best val {best:.4f})")
                    break
        if time.perf_counter() - started > cfg.max_seconds:
            say(f"  stopped by the {cfg.max_seconds:.0f} s time cap at step {step}")
            break
    net.load_state_dict(best_state)
    net.eval()
    return net, {"steps": step, "best_val": round(best, 5), "history": history}


# ------------------------------------------------------------------------------------------ lip regressor + blend
RIDGE_FEATURES = {"kind": "logmel", "n_mels": 80, "per_frame": 4}  # the regressor's own features


def fit_ridge(clip: Clip, cfg: RidgeConfig, frames: np.ndarray, ex: LogMel) -> LipRidge:
    """The closed-form lip regressor on `frames` of the clip (context read around them)."""
    c = cfg.context
    bands = band_frames(ex, clip.wave, clip.fps, clip.target.shape[0] + 2 * c, clip.offset_s - c / clip.fps,
                        cfg.bands)  # [T+2c,B]
    return LipRidge.fit(cfg, bands, clip.target, frames, clip.lip_jacobian, clip.opening_grad)


def lip_error(pred: Tensor, target: Tensor, clip: Clip) -> float:
    """Mean squared lip displacement error (relative to the clip's spread) of pred vs target [T,C];
    the channel MSE when no rig is known."""
    err = (pred - target).double()
    if clip.lip_jacobian is None:
        return float(err.pow(2).mean())
    e3 = clip.lip_jacobian.shape[1]
    return float((err[:, :e3] @ clip.lip_jacobian.double().T).pow(2).mean() / clip.lip_scale)


def out_of_fold(nets: list[Audio2Expr], members: list[Clip], ex: FeatureExtractor, ridge_cfg: RidgeConfig,
                ridge_ex: LogMel) -> tuple[Tensor, Tensor, Tensor]:
    """(networks [N,C], regressor [N,C], target [N,C]) on every fold's validation slice, each predicted by
    models that never saw its targets: the mean of the networks validated there, and a regressor fitted on
    the fold's training frames."""
    net_rows, ridge_rows, target_rows = [], [], []
    for fold in dict.fromkeys(m.val_range for m in members):  # each fold once, in order
        lo, hi = fold
        own = [(net, m) for net, m in zip(nets, members) if m.val_range == fold]
        clip = own[0][1]
        if hi - lo < 2:
            continue
        ridge = fit_ridge(clip, ridge_cfg, clip.fit_frames(), ridge_ex)
        ridge_rows.append(ridge.predict(ridge_ex, clip.wave, clip.fps, hi - lo, clip.offset_s + lo / clip.fps))
        f, _ = _window(clip, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
        with torch.no_grad():
            net_rows.append(torch.stack([net(f[None])[0] for net, _ in own]).mean(0))
        target_rows.append(clip.target[lo:hi])
    return torch.cat(net_rows), torch.cat(ridge_rows), torch.cat(target_rows)


def choose_blend(net_pred: Tensor, ridge_pred: Tensor, target: Tensor, clip: Clip, grid: tuple) -> tuple[float, dict]:
    """The regressor's share (from `grid`) with the smallest lip error; all [N,C] out-of-fold."""
    if target.shape[0] < 2:
        return 1.0, {}
    scores = {float(w): round(lip_error(w * ridge_pred + (1 - w) * net_pred, target, clip), 4) for w in grid}
    best = min(scores, key=scores.get)
    return best, scores


# ------------------------------------------------------------------------------------------ energy fallback
def fit_energy_jaw(seq: TrackedSequence, n_train: int, offset_s: float = 0.0) -> dict:
    """Least-squares jaw rotation = a + b * energy on the training frames (the fallback and the baseline)."""
    audio = np.asarray(seq.audio, np.float32)[: int(round((n_train / seq.fps + max(offset_s, 0)) * SAMPLE_RATE))]
    jaw = np.asarray(seq.jaw[:n_train], np.float64)
    ref = max(loudness_reference(audio), MIN_REF) if audio.size else 1.0
    if audio.size:
        e = frame_energy(audio, seq.fps, n_train, offset_s, ref).numpy().astype(np.float64)
    else:
        e = np.zeros(n_train)
    if e.std() < 1e-3:  # no usable audio: a generic opening (about 8 degrees at full speech level)
        return {"a": jaw.mean(0).tolist(), "b": [0.14, 0.0, 0.0], "fitted": False}
    A = np.stack([np.ones_like(e), e], 1)
    coef = np.linalg.solve(A.T @ A + 1e-6 * np.eye(2), A.T @ jaw)  # [2,3]
    return {"a": coef[0].tolist(), "b": coef[1].tolist(), "fitted": True}


# ------------------------------------------------------------------------------------------ phonetic path
def _all_seen_frames(clip: Clip) -> np.ndarray:  # [N] every training frame with a detected face
    frames = np.arange(clip.target.shape[0])
    return frames if clip.faceless is None else frames[~clip.faceless]


def voice_clip(clip: Clip, factor: float) -> Clip:
    """The clip heard in another voice (voices.py): its audio resampled, read at the matching rate and offset."""
    if factor == 1.0:
        return clip
    fps, offset = heard_timing(clip.fps, clip.offset_s, factor)
    return dataclasses.replace(clip, wave=resample_voice(clip.wave, factor), fps=fps, offset_s=offset, table=None)


def acoustic_voices_oof(nets: list[Audio2Expr], members: list[Clip], ex: FeatureExtractor, ridge_cfg: RidgeConfig,
                        ridge_ex: LogMel, blend: float, factors: tuple) -> list[Tensor]:
    """[N,C] per voice: the acoustic path's out-of-fold predictions over the folds of `members` (networks
    validated on each fold, a regressor fitted without it, blended), from the audio heard in each voice."""
    out = []
    for factor in factors:
        rows = []
        for fold in viseme_fit.folds_of(members):
            lo, hi = fold.val_range
            heard = voice_clip(fold, factor)
            pred = 0.0
            if blend > 0.0 or not nets:
                ridge = fit_ridge(fold, ridge_cfg, fold.fit_frames(), ridge_ex)
                r = ridge.predict(ridge_ex, heard.wave, heard.fps, hi - lo, heard.offset_s + lo / heard.fps)
                pred = r * (blend if nets else 1.0)
            own = [net for net, m in zip(nets, members) if m.val_range == fold.val_range]
            if own and blend < 1.0:
                f, _ = _window(heard, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
                with torch.no_grad():
                    pred = pred + (1.0 - blend) * torch.stack([net(f[None])[0] for net in own]).mean(0)
            rows.append(pred)
        out.append(torch.cat(rows))
    return out


def _voice_features(clip: Clip, factor: float) -> np.ndarray:  # -> [T,F] the clip's phonetic features in a voice
    heard = voice_clip(clip, factor)
    return speech_features(heard.wave, heard.fps, clip.target.shape[0], heard.offset_s)[0]


def fit_phonetic(clip: Clip, members: list[Clip], cfg: A2ETrainConfig, acoustic: Optional[list[Tensor]],
                 say: Callable[[str], None]) -> Optional[dict]:
    """The phonetic path on the clip: {"model", "mix", "report"} ("mix": the share and gain chosen per voice, see
    viseme_fit.choose_mix), or None when the phones are not trusted.

    acoustic: [N,C] per voice of cfg.voice_factors, the acoustic path's out-of-fold predictions over the folds of
    `members` (None: no acoustic path, the share is 1)."""
    n = clip.target.shape[0]
    features, judged = speech_features(clip.wave, clip.fps, n, clip.offset_s)
    report = {"phones": judged.to_json(), "voice_factors": list(cfg.voice_factors)}
    if not judged.reliable:
        say(f"phonetic lip sync: not used ({judged.reason}); the acoustic path drives the lips")
        return None
    error = lambda pred, target: lip_error(pred, target, clip)  # noqa: E731
    folds = viseme_fit.folds_of(members)
    vcfg = cfg.visemes
    mix = {v: {"share": 1.0, "gain": 1.0} for v in ("enrollment_voice", "other_voices")}
    if folds:
        heard = [features if f == 1.0 else _voice_features(clip, f) for f in cfg.voice_factors]
        vcfg, phon_oof, alpha_scores = viseme_fit.choose_alpha(features, heard, folds, cfg.visemes, error)
        target = torch.cat([f.target[slice(*f.val_range)] for f in folds])
        mix = viseme_fit.choose_mix(phon_oof, acoustic, target, cfg.voice_factors, error)
        report.update(alpha_scores=alpha_scores, oof_error_by_voice={
            f"{f:g}": {"phonetic": round(error(p, target), 4),
                       **({} if acoustic is None else {"acoustic": round(error(acoustic[k], target), 4)})}
            for k, (f, p) in enumerate(zip(cfg.voice_factors, phon_oof))})
    frames = _all_seen_frames(clip)
    model = VisemeModel.fit(vcfg, features[frames], clip.target[frames], clip.lip_jacobian, clip.opening_grad)
    report.update(mix=mix, alpha=vcfg.alpha, voice_f0_hz=median_f0(clip.wave))
    same, other = mix["enrollment_voice"], mix["other_voices"]
    say(f"phonetic lip sync: {judged.phones} phones in {judged.speech_s:.1f} s of speech; share {same['share']:.2f}, "
        f"gain {same['gain']:.1f} in the enrollment voice; share {other['share']:.2f}, gain {other['gain']:.1f} in "
        f"other voices" + (f" (out-of-fold lip error by voice: {report['oof_error_by_voice']})"
                           if "oof_error_by_voice" in report else ""))
    return {"model": model, "mix": mix, "report": report}


def _phonetic_entries(phon: Optional[dict]) -> tuple[dict, dict]:
    """(tensors, config entries) that save the phonetic path (empty when there is none)."""
    if phon is None:
        return {}, {"phonetic_share": 0.0}
    same, other = phon["mix"]["enrollment_voice"], phon["mix"]["other_voices"]
    return phon["model"].tensors(), {"visemes": phon["model"].cfg.to_json(), "phonetic_share": same["share"],
                                     "phonetic_share_other_voice": other["share"], "gain": same["gain"],
                                     "gain_other_voice": other["gain"], "voice_f0_hz": phon["report"]["voice_f0_hz"],
                                     "phonetic": phon["report"]}


def _train_phonetic_only(seq: TrackedSequence, out_dir: Path, n_train: int, stats: dict, cfg: A2ETrainConfig,
                         rig, common: dict, base_tensors: dict, report: dict, started: float,
                         say: Callable[[str], None]) -> Optional[dict]:
    """Too little speech for the networks: the phonetic path alone (the visemes shrunk towards generic ones)."""
    if not cfg.phonetic or report["speech_s"] < cfg.min_phonetic_speech_s:
        return None
    clip, found = prepare_clip(seq, n_train, stats, cfg, rig, say)
    phon = fit_phonetic(clip, fold_clips(clip, cfg.folds), cfg, None, say)
    if phon is None:
        return None
    tensors, entries = _phonetic_entries(phon)
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    report.update(found, kind="phonetic", seconds=round(time.perf_counter() - started, 1), out=str(out_dir),
                  phonetic_share=1.0)
    save_model(out_dir, {**base_tensors, **tensors},
               {**common, **entries, "kind": "phonetic", "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                "av_offset_estimate_ms": found["av_offset_ms"], "report": report})
    return report


# ------------------------------------------------------------------------------------------ entry point
def _load_source(source: Path) -> TrackedSequence:
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source} is not a folder; pass an avatar folder (from `avatar3d enroll`) or a track "
                         "output folder (from `avatar3d track VIDEO --out DIR`)")
    if not (source / "tracking.npz").is_file():
        raise InputError(f"{source} has no tracking.npz; pass an avatar folder or the --out folder of "
                         "`avatar3d track VIDEO --out DIR`")
    return TrackedSequence.load(source / "tracking.npz")


def _try_rig(name: str, say):
    from avatar3d.errors import HeadModelError
    from avatar3d.head.registry import load_rig

    try:
        return load_rig(name)
    except HeadModelError as err:
        say(f"note: head model {name!r} not available ({err}); training without the lip-vertex loss")
        return None


def blink_indices(names: list[str]) -> list[int]:
    out = []
    for options in BLINK_NAMES:
        for n in options:
            if n in names:
                out.append(names.index(n))
                break
    return out


def save_model(out_dir: Path, tensors: dict[str, Tensor], config: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / MODEL_FILE, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    atomic_write_json(out_dir / CONFIG_FILE, config)  # last: the commit point


def _pretrain_clips(folder: Path, target: Path, rig_name: str, cfg: A2ETrainConfig, rig, say) -> list[Clip]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--pretrain {folder} is not a folder; pass a folder holding enrolled avatars "
                         "(or track outputs), each with a tracking.npz")
    clips = []
    for path in sorted(folder.rglob("tracking.npz")):
        if path.parent.resolve() == Path(target).resolve():
            continue
        seq = TrackedSequence.load(path)
        if seq.rig_name != rig_name:
            say(f"  skipping {path.parent} (head model {seq.rig_name!r}, this avatar uses {rig_name!r})")
            continue
        if seq.audio.size == 0 or speech_seconds(seq.audio) < cfg.min_speech_s:
            say(f"  skipping {path.parent} (too little speech)")
            continue
        n = training_frames(seq, path.parent, cfg.holdout)
        clip, _ = prepare_clip(seq, n, person_stats(seq, n), cfg, rig, say)
        clips.append(clip)
        say(f"  pretraining clip {path.parent} ({n} frames)")
    if not clips:
        raise InputError(f"--pretrain {folder}: no other tracked clip with speech and head model {rig_name!r} "
                         "was found; enroll more people there, or drop --pretrain")
    return clips


def train_audio2expr(source: Path, out_dir: Optional[Path] = None, *, audio_encoder: Optional[Path] = None,
                     pretrain: Optional[Path] = None, seed: int = 0, config: Optional[A2ETrainConfig] = None,
                     say: Callable[[str], None] = print) -> dict:
    """Train on `source` (avatar or track folder with tracking.npz); writes OUT/{model.safetensors,config.json}.

    Returns a report (offset, speech seconds, steps, seconds, kind: "transformer" or "energy").
    """
    cfg = copy.deepcopy(config) if config is not None else A2ETrainConfig()
    source = Path(source)
    out_dir = Path(out_dir) if out_dir is not None else source / "audio2expr"
    started = time.perf_counter()
    seq = _load_source(source)
    n_train = training_frames(seq, source, cfg.holdout)
    if n_train < 16:
        raise InputError(f"{source} has only {n_train} training frames; audio-to-expression needs a video of a "
                         "few seconds or more (enroll a longer clip)")
    stats = person_stats(seq, n_train)
    names = channel_names([], seq.expr.shape[1])
    rig = _try_rig(seq.rig_name, say)
    if rig is not None:
        names = channel_names(rig.expr_names, seq.expr.shape[1])
    common = {
        "format_version": FORMAT_VERSION, "fps": float(seq.fps), "rig_name": seq.rig_name,
        "rig_checksum": seq.rig_checksum, "channels": names, "num_expr": int(seq.expr.shape[1]),
        "blink_channels": blink_indices(names), "seed": int(seed), "frames_train": int(n_train),
        "head_motion_std": stats["std"][-3:].tolist(),
    }
    base_tensors = {"mean": torch.as_tensor(stats["mean"]).float(), "std": torch.as_tensor(stats["std"]).float(),
                    "eyes_mean": torch.as_tensor(stats["eyes_mean"]).float()}
    train_audio = np.asarray(seq.audio, np.float32)[: int(round(n_train / seq.fps * SAMPLE_RATE))]
    speech = speech_seconds(train_audio) if train_audio.size else 0.0
    report = {"speech_s": round(speech, 2), "frames_train": n_train}
    if speech < cfg.min_speech_s:
        short = _train_phonetic_only(seq, out_dir, n_train, stats, cfg, rig, common, base_tensors, report, started,
                                     say)
        if short is not None:
            say(f"note: the training part of {source} has only {speech:.1f} s of speech (the lip networks need "
                f"{cfg.min_speech_s:.0f} s); its phones and the person's visemes drive the lips alone")
            return short
        say(f"WARNING: the training part of {source} has only {speech:.1f} s of speech (at least "
            f"{cfg.min_speech_s:.0f} s are needed to learn lip sync); using the fallback that opens the jaw with "
            "the audio energy. Enroll a video in which the person talks for longer to get real lip sync.")
        energy = fit_energy_jaw(seq, n_train)
        save_model(out_dir, base_tensors, {**common, "kind": "energy", "energy": energy, "av_offset_ms": 0.0,
                                           "report": report})
        report.update(kind="energy", seconds=round(time.perf_counter() - started, 1), out=str(out_dir))
        return report

    torch.manual_seed(seed)
    ex = make_extractor(None, audio_encoder) if audio_encoder is not None else make_extractor(
        {"per_frame": cfg.model.per_frame, "n_mels": cfg.model.in_dim})
    cfg.model.in_dim, cfg.model.per_frame, cfg.model.num_expr = ex.dim, ex.per_frame, int(seq.expr.shape[1])
    clip, found = prepare_clip(seq, n_train, stats, cfg, rig, say)
    report.update(found)
    say(f"audio/video offset: {found['av_offset_ms']:+.0f} ms (peak correlation {found['av_offset_peak_corr']:.2f}; "
        f"applied {found['av_offset_applied_ms']:+.0f} ms); {speech:.1f} s of speech in {n_train} training frames")
    e3 = cfg.model.num_expr + 3
    ridge_ex = make_extractor(RIDGE_FEATURES)
    if not cfg.network:
        members = fold_clips(clip, cfg.folds)
        phon = fit_phonetic(clip, members, cfg, acoustic_voices_oof([], members, None, cfg.ridge, ridge_ex, 1.0,
                                                                    cfg.voice_factors), say) if cfg.phonetic else None
        ridge = fit_ridge(clip, cfg.ridge, np.arange(n_train), ridge_ex)
        return _save_ridge_only(out_dir, base_tensors, common, ridge, clip, found, report, seq, n_train, started,
                                phon)
    _ensure_table(clip, ex)  # once, shared by the members
    members = fold_clips(clip, cfg.folds) * max(1, cfg.repeats)
    member_cfg = dataclasses.replace(cfg, max_seconds=cfg.max_seconds / len(members))
    pretrained = None
    if pretrain is not None:
        others = _pretrain_clips(pretrain, source, seq.rig_name, cfg, rig, say)
        say(f"pretraining on {len(others)} clip(s)")
        pretrained, pre = fit_network(others + [clip], others + [clip], ex, cfg, seed, None,
                                      steps=cfg.pretrain_steps, say=say)
        report["pretrain"] = {"clips": len(others), "steps": pre["steps"]}
    nets, fits = [], []
    for k, member in enumerate(members):
        lo, hi = member.val_range
        say(f"network {k + 1}/{len(members)} ({'fine-tuning' if pretrained is not None else 'from scratch'}) on "
            f"{len(member.fit_frames())} frames, validating on frames {lo}-{hi - 1}")
        prior = ExpressionPrior.fit(member.target[member.fit_frames(), :e3])
        net, fit = fit_network([member], [member], ex, member_cfg, seed + 1 + k, prior,
                               net=copy.deepcopy(pretrained) if pretrained is not None else None, say=say)
        nets.append(net)
        fits.append(fit)
    # the lip regressor's share, from out-of-fold predictions; then the regressor on every training frame
    net_oof, ridge_oof, target_oof = out_of_fold(nets, members, ex, cfg.ridge, ridge_ex)
    blend, blend_scores = choose_blend(net_oof, ridge_oof, target_oof, clip, cfg.blend_grid)
    say(f"lip regressor share {blend:.2f} (out-of-fold lip error by share: {blend_scores})")
    phon = None
    if cfg.phonetic:
        acoustic = acoustic_voices_oof(nets, members, ex, cfg.ridge, ridge_ex, blend, cfg.voice_factors)
        phon = fit_phonetic(clip, members, cfg, acoustic, say)
    phon_tensors, phon_entries = _phonetic_entries(phon)
    ridge = fit_ridge(clip, cfg.ridge, np.arange(n_train), ridge_ex)
    prior = ExpressionPrior.fit(clip.target[:, :e3])
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    tensors = {**base_tensors, **{f"net{m}.{k}": v for m, net in enumerate(nets) for k, v in net.state_dict().items()},
               **{f"prior.{k}": v for k, v in prior.state_dict().items()}, **ridge.tensors(), **phon_tensors}
    seconds = time.perf_counter() - started
    report.update(kind="transformer", members=len(nets), steps=[f["steps"] for f in fits],
                  best_val=[f["best_val"] for f in fits], seconds=round(seconds, 1),
                  params=sum(net.num_params() for net in nets), out=str(out_dir), blend=blend,
                  phonetic_share=phon_entries["phonetic_share"])
    features = ex.config() if hasattr(ex, "config") else {"kind": ex.kind}
    save_model(out_dir, tensors, {**common, **phon_entries, "kind": "transformer", "model": cfg.model.to_json(), "features": features,
                                  "ridge": cfg.ridge.to_json(), "ridge_features": RIDGE_FEATURES, "blend": blend,
                                  "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                                  "av_offset_estimate_ms": found["av_offset_ms"],
                                  "members": len(nets),
                                  "report": {**report, "history": [f["history"] for f in fits],
                                             "blend_scores": blend_scores}})
    return report


def _save_ridge_only(out_dir: Path, base_tensors: dict, common: dict, ridge: LipRidge, clip: Clip, found: dict,
                     report: dict, seq: TrackedSequence, n_train: int, started: float, phon: Optional[dict]) -> dict:
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    phon_tensors, phon_entries = _phonetic_entries(phon)
    report.update(kind="ridge", steps=0, seconds=round(time.perf_counter() - started, 1),
                  params=int(ridge.weight.numel()), out=str(out_dir), blend=1.0,
                  phonetic_share=phon_entries["phonetic_share"])
    save_model(out_dir, {**base_tensors, **ridge.tensors(), **phon_tensors},
               {**common, **phon_entries, "kind": "ridge", "ridge": ridge.cfg.to_json(), "ridge_features": RIDGE_FEATURES,
                "blend": 1.0, "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                "av_offset_estimate_ms": found["av_offset_ms"], "report": report})
    return report

