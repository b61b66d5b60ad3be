"""The person's visemes: how this face makes each class of sound, plus a phonetic lip regressor on top.

Fitted on the enrollment video's training frames, in the normalised channel space of train.py
(`(params - mean) / std`, channels `[expr | jaw | neck]`):
1. The viseme table `[V,C]`: per viseme class the person's own mouth, a least-squares "class mean" over the
   frames where that class is spoken (soft: a frame that is half /m/, half /a/ counts for both), shrunk
   towards a generic mouth for classes the video shows little of. The generic mouth of a class is the
   person's rest pose moved along the person's own opening direction by the class's OPENING_LEVEL
   (phonetic.py): a speaker-independent opening expressed in this face's co-variation of shapes. The rest
   pose is the mean of the frames in pauses (or of the most closed frames when the video has none), and the
   silence class is pinned to it: silence closes the mouth.
2. A ridge regression from the phonetic features (coarticulation window, boundaries, pauses, prosody) to
   the few lip components the table leaves unexplained (the mouth opening and the top principal components
   of the lip displacement, as in ridge.py), mapped back to every channel by least squares: timing,
   anticipation and coarticulation.
The inputs are phones, not the voice, so the result carries over to other speakers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.phonetic import COARTIC_S, OPENING_LEVEL, VISEME_NAMES
from avatar3d.audio2expr.ridge import component_scores

PRIOR_SIGMA_S = 0.04  # the table reads a Gaussian-weighted occupancy around the frame (coarticulation blur)
REST_FRAMES_MIN = 8  # pause frames needed to take the rest pose from pauses


@dataclass
class VisemeConfig:
    prior_frames: float = 6.0
    """How many frames of a class the generic mouth counts as (shrinkage of the person's class means)."""
    alpha: float = 1.0
    """Ridge strength of the phonetic regressor, relative to its feature count (features standardised)."""
    components: int = 4
    """Lip-displacement principal components the regressor predicts besides the mouth opening."""
    regressor: bool = True
    """Refine the table with the phonetic regressor (off: the viseme table alone)."""

    def to_json(self) -> dict:
        return asdict(self)


def prior_weights(features: np.ndarray) -> np.ndarray:
    # features: [T,F] from phonetic_frames -> [T,V] Gaussian-weighted class occupancy around each frame
    v = len(VISEME_NAMES)
    k = np.exp(-0.5 * (np.asarray(COARTIC_S) / PRIOR_SIGMA_S) ** 2)
    k = k / k.sum()
    occ = features[:, : v * len(COARTIC_S)].reshape(len(features), len(COARTIC_S), v)
    return np.einsum("tdv,d->tv", occ, k)


def _opening_scores(y: Tensor, opening_grad: Optional[Tensor]) -> Tensor:  # y: [N,C] -> [N] opening (any unit)
    if opening_grad is not None:
        return y[:, : opening_grad.shape[0]] @ opening_grad.double()
    yc = y - y.mean(0)
    _, _, vt = torch.linalg.svd(yc, full_matrices=False)
    s = yc @ vt[0]
    jaw_x = yc[:, -6] if yc.shape[1] >= 6 else yc[:, 0]  # channels [expr | jaw (3) | neck (3)]
    return s if float((s * jaw_x).sum()) >= 0 else -s  # no rig: the first component, opening with the jaw


def generic_table(y: Tensor, weights: Tensor, opening_grad: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(generic mouths [V,C], rest pose [C], opening direction [C]) from the person's frames y [N,C] and their
    class weights [N,V]."""
    score = _opening_scores(y, opening_grad)
    z = (score - score.mean()) / score.std().clamp_min(1e-12)
    yc = y - y.mean(0)
    direction = (z[:, None] * yc).mean(0)  # channels per standard deviation of opening
    rest_w = weights[:, VISEME_NAMES.index("rest")]
    pauses = rest_w > 0.9
    if int(pauses.sum()) >= REST_FRAMES_MIN:
        rest = y[pauses].mean(0)
    else:  # no pauses: the most closed sixth of the frames
        rest = y[z <= torch.quantile(z, 1 / 6)].mean(0)
    levels = torch.tensor([OPENING_LEVEL[n] for n in VISEME_NAMES], dtype=y.dtype)
    generic = rest[None] + levels[:, None] * direction[None]  # levels count from the rest pose
    return generic, rest, direction


class VisemeModel:
    """Predicts normalised channels [T,C] from phonetic features [T,F]; state in `tensors()`."""

    NAMES = ("table", "rest", "weight", "loadings", "bias", "x_mean", "x_std")

    def __init__(self, cfg: VisemeConfig, table: Tensor, rest: Tensor, weight: Optional[Tensor],
                 loadings: Optional[Tensor], bias: Optional[Tensor], x_mean: Optional[Tensor],
                 x_std: Optional[Tensor]):
        # table: [V,C]; rest: [C]; weight: [F,K]; loadings: [K,C]; bias: [C]; x_mean/x_std: [F]
        self.cfg = cfg
        self.table, self.rest = table, rest
        self.weight, self.loadings, self.bias = weight, loadings, bias
        self.x_mean, self.x_std = x_mean, x_std

    def tensors(self) -> dict[str, Tensor]:
        return {f"viseme.{n}": getattr(self, n).float().contiguous() for n in self.NAMES
                if getattr(self, n) is not None}

    @classmethod
    def from_tensors(cls, cfg: dict, tensors: dict[str, Tensor]) -> "VisemeModel":
        get = lambda n: tensors[f"viseme.{n}"].double() if f"viseme.{n}" in tensors else None  # noqa: E731
        return cls(VisemeConfig(**cfg), *(get(n) for n in cls.NAMES))

    def predict_table(self, features: np.ndarray) -> Tensor:  # [T,F] -> [T,C]
        return torch.as_tensor(prior_weights(features)) @ self.table

    def predict(self, features: np.ndarray) -> Tensor:  # [T,F] -> [T,C]
        out = self.predict_table(features)
        if self.weight is not None:
            x = (torch.as_tensor(features, dtype=torch.float64) - self.x_mean) / self.x_std
            out = out + self.bias + (x @ self.weight) @ self.loadings
        return out.float()

    @classmethod
    def fit(cls, cfg: VisemeConfig, features: np.ndarray, target: Tensor, lip_jacobian: Optional[Tensor],
            opening_grad: Optional[Tensor]) -> "VisemeModel":
        """features: [N,F] phonetic features of the training frames; target: [N,C] their normalised channels."""
        y = target.double()
        w = torch.as_tensor(prior_weights(features))  # [N,V]
        generic, rest, _ = generic_table(y, w, opening_grad)
        k = cfg.prior_frames
        table = torch.linalg.solve(w.T @ w + k * torch.eye(w.shape[1], dtype=y.dtype), w.T @ y + k * generic)
        table[VISEME_NAMES.index("rest")] = rest
        if not cfg.regressor:
            return cls(cfg, table, rest, None, None, None, None, None)
        resid = y - w @ table
        x = torch.as_tensor(features, dtype=torch.float64)
        x_mean, x_std = x.mean(0), x.std(0).clamp_min(1e-3)
        x = (x - x_mean) / x_std
        rc = resid - resid.mean(0)
        scores = component_scores(rc, cfg.components, lip_jacobian, opening_grad)  # [N,K]
        loadings = torch.linalg.lstsq(scores, rc, rcond=None).solution  # [K,C]
        f = x.shape[1]
        weight = torch.linalg.solve(x.T @ x + cfg.alpha * f * torch.eye(f, dtype=x.dtype), x.T @ scores)
        return cls(cfg, table, rest, weight, loadings, resid.mean(0), x_mean, x_std)
