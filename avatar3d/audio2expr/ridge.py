"""A closed-form lip regressor: stacked, per-clip normalised log-mel windows -> a few lip components.

With ~15 s of speech a network overfits easily; a ridge regression on a ±240 ms window of coarse
log-mel bands, predicting only a handful of components that matter for the lips, is a strong and
stable partner. The components are the mouth opening (inner-lip distance, linearised at the person's
mean) and the top principal components of the lip-vertex displacement; each is mapped back to all
channels by least squares, so the predicted face keeps the person's co-variation of shapes.
Training picks how much of it to blend with the transformer on the validation slice.

Features are normalised per clip (mean/std of each band over the clip, shrunk towards the training
statistics for short clips), so a different microphone or speaker level shifts nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.features import LogMel

CMVN_PRIOR_FRAMES = 250.0  # clip statistics count as much as the training ones after 10 s (at 25 fps)


@dataclass
class RidgeConfig:
    bands: int = 20
    """Log-mel bands (80 mel filters averaged in groups)."""
    context: int = 6
    """Frames on each side stacked into a frame's features (6 at 25 fps: ±240 ms)."""
    components: int = 4
    """Lip-displacement principal components predicted besides the mouth opening."""
    alpha: float = 0.3
    """Ridge strength relative to the feature count (features are standardised)."""

    def to_json(self) -> dict:
        return asdict(self)


def band_frames(ex: LogMel, wave, fps: float, num_frames: int, t0: float, bands: int) -> Tensor:
    """[T,bands] log-mel of each frame (mean over its sub-frames, filters averaged in groups)."""
    feats = ex.frames(wave, fps, num_frames, t0).mean(1)  # [T,80]
    groups = feats.shape[1] // bands
    return feats[:, : groups * bands].reshape(num_frames, bands, groups).mean(-1)


def stack_context(x: Tensor, context: int) -> Tensor:
    """x: [T+2c,B] (c frames of context at each end) -> [T,(2c+1)*B] windows."""
    t = x.shape[0] - 2 * context
    return torch.stack([x[i: i + t] for i in range(2 * context + 1)], 1).reshape(t, -1)


class LipRidge:
    """Fit with `fit`, predict normalised channels [T,C] with `predict`; state in `tensors()`."""

    def __init__(self, cfg: RidgeConfig, weight: Tensor, loadings: Tensor, band_mean: Tensor, band_std: Tensor,
                 x_mean: Tensor, x_std: Tensor, y_mean: Tensor):
        # weight: [F,K]; loadings: [K,C]; band_mean/std: [B]; x_mean/x_std: [F]; y_mean: [C]
        self.cfg = cfg
        self.weight, self.loadings = weight, loadings
        self.band_mean, self.band_std = band_mean, band_std
        self.x_mean, self.x_std, self.y_mean = x_mean, x_std, y_mean

    # -------------------------------------------------------------------------------------- state
    def tensors(self) -> dict[str, Tensor]:
        names = ("weight", "loadings", "band_mean", "band_std", "x_mean", "x_std", "y_mean")
        return {f"ridge.{n}": getattr(self, n).float().contiguous() for n in names}

    @classmethod
    def from_tensors(cls, cfg: dict, tensors: dict[str, Tensor]) -> "LipRidge":
        names = ("weight", "loadings", "band_mean", "band_std", "x_mean", "x_std", "y_mean")
        return cls(RidgeConfig(**cfg), *(tensors[f"ridge.{n}"].double() for n in names))

    # -------------------------------------------------------------------------------------- features
    def predict(self, ex: LogMel, wave, fps: float, num_frames: int, t0: float = 0.0,
                chunk: int = 2048) -> Tensor:
        """Normalised channels [T,C] for frames at t0 + i/fps; two passes over chunks (statistics, then
        prediction), so memory stays constant for long clips."""
        c = self.cfg.context
        spans = [(s, min(chunk, num_frames - s)) for s in range(0, num_frames, chunk)]
        total, total_sq, n = 0.0, 0.0, 0
        for s, length in spans:
            b = band_frames(ex, wave, fps, length, t0 + s / fps, self.cfg.bands).double()
            total, total_sq, n = total + b.sum(0), total_sq + b.pow(2).sum(0), n + length
        w = n / (n + CMVN_PRIOR_FRAMES)
        clip_mean = total / max(n, 1)
        clip_var = (total_sq / max(n, 1) - clip_mean ** 2).clamp_min(0)
        mean = w * clip_mean + (1 - w) * self.band_mean
        std = (w * clip_var + (1 - w) * self.band_std ** 2).clamp_min(1e-6).sqrt()
        out = []
        for s, length in spans:
            b = band_frames(ex, wave, fps, length + 2 * c, t0 + (s - c) / fps, self.cfg.bands).double()
            x = (stack_context((b - mean) / std, c) - self.x_mean) / self.x_std
            out.append(self.y_mean + (x @ self.weight) @ self.loadings)
        return torch.cat(out).float() if out else torch.zeros(0, self.loadings.shape[1])

    # -------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, cfg: RidgeConfig, bands: Tensor, target: Tensor, frames: np.ndarray,
            lip_jacobian: Optional[Tensor], opening_grad: Optional[Tensor]) -> "LipRidge":
        """bands: [T,B] log-mel of every frame of the clip (context beyond the ends included as
        `context` extra frames on each side: [T+2c,B]); target: [T,C] normalised channels;
        frames: indices fitted on; lip_jacobian: [3L,E+3]; opening_grad: [E+3] (both optional: without
        a rig the components are the top principal components of the channels)."""
        c = cfg.context
        core = bands[c: bands.shape[0] - c].double()
        band_mean, band_std = core[frames].mean(0), core[frames].std(0).clamp_min(1e-3)
        x = stack_context((bands.double() - band_mean) / band_std, c)[frames]  # [N,F]
        x_mean, x_std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - x_mean) / x_std
        y = target.double()[frames]
        y_mean = y.mean(0)
        yc = y - y_mean
        scores = component_scores(yc, cfg.components, lip_jacobian, opening_grad)  # [N,K]
        loadings = torch.linalg.lstsq(scores, yc, rcond=None).solution if scores.shape[0] > scores.shape[1] else \
            torch.linalg.pinv(scores) @ yc  # [K,C]
        f = x.shape[1]
        gram = x.T @ x + cfg.alpha * f * torch.eye(f, dtype=x.dtype)
        weight = torch.linalg.solve(gram, x.T @ scores)  # [F,K]
        return cls(cfg, weight, loadings, band_mean, band_std, x_mean, x_std, y_mean)


def component_scores(yc: Tensor, k: int, lip_jacobian: Optional[Tensor], opening_grad: Optional[Tensor]) -> Tensor:
    """[N,K'] scores of the centred channels yc [N,C]: the opening (when known), then the top-k principal
    components of the lip displacement (or of the channels without a rig)."""
    cols = []
    if opening_grad is not None:
        g = opening_grad.double()
        cols.append(yc[:, : g.shape[0]] @ g[:, None])
    if lip_jacobian is not None:
        disp = yc[:, : lip_jacobian.shape[1]] @ lip_jacobian.double().T  # [N,3L]
    else:
        disp = yc
    if k > 0:
        _, _, vt = torch.linalg.svd(disp, full_matrices=False)
        cols.append(disp @ vt[:k].T)
    scores = torch.cat(cols, 1)
    return scores / scores.std(0).clamp_min(1e-12)  # unit scale: ridge treats every component alike
