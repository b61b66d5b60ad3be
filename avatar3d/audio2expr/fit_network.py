"""Fitting one audio-to-expression network on windows of clips: batches with augmentation, the loss, early
stopping on the clip's validation block."""
from __future__ import annotations

import copy
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.clips import Clip
from avatar3d.audio2expr.features import FeatureExtractor, LogMel, interp_rows
from avatar3d.audio2expr.model import Audio2Expr, ExpressionPrior
from avatar3d.audio2expr.train_config import A2ETrainConfig


def ensure_table(clip: Clip, ex: FeatureExtractor) -> None:
    """Featurise the clip's audio once; windows then only interpolate (augmentation in the feature domain)."""
    if clip.table is None:
        clip.table, clip.rate = ex.base_features(torch.from_numpy(clip.wave))


def feature_window(clip: Clip, ex: FeatureExtractor, start: float, n: int, speed: float, gain: float,
            snr_db: Optional[float], rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Features [n,k,D] and targets [n,C] of frames start + j*speed.

    Augmentation: tempo (+-speed: frames read the audio at a stretched pace), gain, and white noise at
    `snr_db` below the normalised speech level, the last two added to the mel power (log-mel only).
    """
    ensure_table(clip, ex)
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


def sample_batch(clips: list[Clip], ex: FeatureExtractor, cfg: A2ETrainConfig, rng: np.random.Generator):
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
        f, t = feature_window(clip, ex, start, n, speed, gain, snr, rng)
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
            f, t = feature_window(clip, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
            out.append((f[None], t[None], [ci]))
    return out


def _feature_stats(clips: list[Clip], ex: FeatureExtractor) -> tuple[Tensor, Tensor]:
    rows = []
    for clip in clips:
        for a, b in clip.fit_spans():
            f, _ = feature_window(clip, ex, float(a), b - a, 1.0, 1.0, None, np.random.default_rng(0))
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
        feats, target, owners = sample_batch(clips, ex, cfg, rng)
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
