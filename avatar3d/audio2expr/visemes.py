"""The person's visemes: how this face makes each class of sound, plus a phonetic lip regressor on top.

Fitted on the enrollment video's training frames, in the normalised channel space of train.py
(`(params - mean) / std`, channels `[expr | jaw | neck]`):
1. The viseme table `[V,C]`: per viseme class the person's own mouth, a least-squares "class mean" over the
   frames where that class is spoken (soft: a frame that is half /m/, half /a/ counts for both), shrunk
   towards a generic mouth for classes the video shows little of. The generic mouth of a class is the
   person's rest pose moved along the person's own opening direction by the class's OPENING_LEVEL
   (phonetic.py): a speaker-independent opening expressed in this face's co-variation of shapes. The rest
   pose is the mean of the frames inside the video's pauses (quiet for 0.3 s or more, features.pause_frames;
   failing those, of every frame the phones call silent, then of the most closed frames), and the silence class
   is pinned to it: silence closes the mouth.
2. A ridge regression from the phonetic features (coarticulation window, boundaries, pauses, prosody) to
   the few lip components the table leaves unexplained (the mouth opening and the top principal components
   of the lip displacement, as in ridge.py), mapped back to every channel by least squares: timing,
   anticipation and coarticulation.
3. The other-voice table `[V,C]`: the same class means with each class weighted by its dominance over its
   neighbours (phonetic.DOMINANCE: a P closes the lips whatever surrounds it, a T leaves them to the vowels) and
   shrunk strongly towards the generic mouths. The enrollment's phones are decoded from one voice and one
   language (a German speaker's phones are only the nearest English ones), so its class means carry that voice's
   habits and the recogniser's confusions; for another speaker's voice the physically grounded pattern, in this
   face's own opening direction and rest pose, carries over better. Inference moves from the first table (and
   the regressor) to this one as the driving voice departs from the enrollment's (infer.voice_distance).
The inputs are phones, not the voice, so the result carries over to other speakers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.phonetic import COARTIC_S, DOMINANCE, OPENING_LEVEL, VISEME_NAMES
from avatar3d.audio2expr.ridge import component_scores

PRIOR_SIGMA_S = 0.04  # the table reads a Gaussian-weighted occupancy around the frame (coarticulation blur)
REST_FRAMES_MIN = 8  # pause frames needed to take the rest pose from pauses
REST = VISEME_NAMES.index("rest")
RANGE_MIN = 0.25  # standard deviations of opening the generic levels span at least, each way from rest
DOMINANCE_OF_CLASS = np.array([DOMINANCE.get(n, 1.0) for n in VISEME_NAMES])  # [V]


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
    other_prior_frames: float = 100.0
    """The other-voice table's shrinkage: how many frames of a class its generic mouth counts as there (the
    enrollment table uses `prior_frames`). Large: another speaker's phones move this face by the physically
    grounded pattern; small: by the enrollment speaker's own class means."""

    def to_json(self) -> dict:
        return asdict(self)


def prior_weights(features: np.ndarray) -> np.ndarray:
    # features: [T,F] from phonetic_frames -> [T,V] Gaussian-weighted class occupancy around each frame
    v = len(VISEME_NAMES)
    k = np.exp(-0.5 * (np.asarray(COARTIC_S) / PRIOR_SIGMA_S) ** 2)
    k = k / k.sum()
    occ = features[:, : v * len(COARTIC_S)].reshape(len(features), len(COARTIC_S), v)
    return np.einsum("tdv,d->tv", occ, k)


def dominance_weights(features: np.ndarray) -> np.ndarray:
    # features: [T,F] from phonetic_frames -> [T,V] rows summing to 1
    """The class weights around each frame (prior_weights) scaled by each class's dominance and renormalised: a
    P inside the window closes the lips even where vowels fill most of it; a T barely moves them."""
    w = prior_weights(features) * DOMINANCE_OF_CLASS[None]
    return w / np.maximum(w.sum(1, keepdims=True), 1e-12)


def _shrunk_table(w: Tensor, y: Tensor, generic: Tensor, rest: Tensor, frames: float) -> Tensor:
    # w: [N,V] class weights; y: [N,C]; generic: [V,C]; rest: [C] -> [V,C]
    """Least-squares class means shrunk towards the generic mouths (`frames` frames' worth), silence at rest."""
    eye = torch.eye(w.shape[1], dtype=y.dtype)
    table = torch.linalg.solve(w.T @ w + frames * eye, w.T @ y + frames * generic)
    table[REST] = rest
    return table


def _opening_scores(y: Tensor, opening_grad: Optional[Tensor]) -> Tensor:  # y: [N,C] -> [N] opening (any unit)
    if opening_grad is not None:
        return y[:, : opening_grad.shape[0]] @ opening_grad.double()
    yc = y - y.mean(0)
    _, _, vt = torch.linalg.svd(yc, full_matrices=False)
    s = yc @ vt[0]
    jaw_x = yc[:, -6] if yc.shape[1] >= 6 else yc[:, 0]  # channels [expr | jaw (3) | neck (3)]
    return s if float((s * jaw_x).sum()) >= 0 else -s  # no rig: the first component, opening with the jaw


def generic_table(y: Tensor, weights: Tensor, opening_grad: Optional[Tensor],
                  rest_frames: Optional[np.ndarray] = None) -> tuple[Tensor, Tensor, Tensor]:
    """(generic mouths [V,C], rest pose [C], opening direction [C]) from the person's frames y [N,C] and their
    class weights [N,V]. rest_frames: [N] bool, the frames inside the video's pauses (features.pause_frames); the
    rest pose is their mean when there are enough, else the mean of every frame the phones call silent (gaps
    between words too), else of the most closed sixth. The opening levels (phonetic.OPENING_LEVEL) are laid onto
    the person's own range: the widest class at the 95th percentile of their opening, the most closed at the 2nd,
    whether their rest pose sits at the bottom of that range or in its middle (lips parted at rest)."""
    score = _opening_scores(y, opening_grad)
    z = (score - score.mean()) / score.std().clamp_min(1e-12)
    yc = y - y.mean(0)
    direction = (z[:, None] * yc).mean(0)  # channels per standard deviation of opening
    at_rest = _rest_selection(weights, z, rest_frames)
    rest, z_rest = y[at_rest].mean(0), float(z[at_rest].mean())
    levels = torch.tensor([OPENING_LEVEL[n] for n in VISEME_NAMES], dtype=y.dtype)
    up = max(float(torch.quantile(z, 0.95)) - z_rest, RANGE_MIN) / float(levels.max())
    down = max(z_rest - float(torch.quantile(z, 0.02)), RANGE_MIN) / max(-float(levels.min()), 1e-6)
    steps = torch.where(levels > 0, levels * up, levels * down)  # standard deviations of opening from rest
    generic = rest[None] + steps[:, None] * direction[None]
    return generic, rest, direction


def _rest_selection(weights: Tensor, z: Tensor, rest_frames: Optional[np.ndarray]) -> Tensor:
    # weights: [N,V]; z: [N] standardised opening -> [N] bool, the frames the rest pose is the mean of
    if rest_frames is not None and int(rest_frames.sum()) >= REST_FRAMES_MIN:
        return torch.as_tensor(rest_frames)
    pauses = weights[:, REST] > 0.9
    if int(pauses.sum()) >= REST_FRAMES_MIN:
        return pauses
    return z <= torch.quantile(z, 1 / 6)  # no pauses: the most closed sixth of the frames


class VisemeModel:
    """Predicts normalised channels [T,C] from phonetic features [T,F]; state in `tensors()`."""

    NAMES = ("table", "rest", "weight", "loadings", "bias", "x_mean", "x_std", "table_other")

    def __init__(self, cfg: VisemeConfig, table: Tensor, rest: Tensor, weight: Optional[Tensor],
                 loadings: Optional[Tensor], bias: Optional[Tensor], x_mean: Optional[Tensor],
                 x_std: Optional[Tensor], table_other: Optional[Tensor] = None):
        # table, table_other: [V,C]; rest: [C]; weight: [F,K]; loadings: [K,C]; bias: [C]; x_mean/x_std: [F]
        self.cfg = cfg
        self.table, self.rest = table, rest
        self.weight, self.loadings, self.bias = weight, loadings, bias
        self.x_mean, self.x_std = x_mean, x_std
        self.table_other = table_other  # None (models from before it): the enrollment table serves every voice

    def tensors(self) -> dict[str, Tensor]:
        return {f"viseme.{n}": getattr(self, n).float().contiguous() for n in self.NAMES
                if getattr(self, n) is not None}

    @classmethod
    def from_tensors(cls, cfg: dict, tensors: dict[str, Tensor]) -> "VisemeModel":
        get = lambda n: tensors[f"viseme.{n}"].double() if f"viseme.{n}" in tensors else None  # noqa: E731
        return cls(VisemeConfig(**cfg), *(get(n) for n in cls.NAMES))

    def predict_table(self, features: np.ndarray) -> Tensor:  # [T,F] -> [T,C] the enrollment table
        return torch.as_tensor(prior_weights(features)) @ self.table

    def predict_other(self, features: np.ndarray) -> Tensor:  # [T,F] -> [T,C] the other-voice table
        return torch.as_tensor(dominance_weights(features)) @ self.table_other

    def predict(self, features: np.ndarray, other: float = 0.0) -> Tensor:
        # features: [T,F] -> [T,C]
        """other: 0 for the enrollment voice (its table and the regressor), 1 for another speaker's voice (the
        other-voice table), in between for a voice in between. A model saved before the other-voice table
        drives every voice as the enrollment's."""
        other = other if self.table_other is not None else 0.0
        own = None
        if other < 1.0:
            own = self.predict_table(features)
            if self.weight is not None:
                x = (torch.as_tensor(features, dtype=torch.float64) - self.x_mean) / self.x_std
                own = own + self.bias + (x @ self.weight) @ self.loadings
        if other <= 0.0:
            return own.float()
        out = self.predict_other(features)
        return (out if own is None else other * out + (1.0 - other) * own).float()

    @classmethod
    def fit(cls, cfg: VisemeConfig, features: np.ndarray, target: Tensor, lip_jacobian: Optional[Tensor],
            opening_grad: Optional[Tensor], pauses: Optional[np.ndarray] = None) -> "VisemeModel":
        """features: [N,F] phonetic features of the training frames; target: [N,C] their normalised channels;
        pauses: [N] bool, the frames inside the audio's pauses (the rest pose, generic_table)."""
        y = target.double()
        w = torch.as_tensor(prior_weights(features))  # [N,V]
        generic, rest, _ = generic_table(y, w, opening_grad, pauses)
        table = _shrunk_table(w, y, generic, rest, cfg.prior_frames)
        table_other = _shrunk_table(torch.as_tensor(dominance_weights(features)), y, generic, rest,
                                    cfg.other_prior_frames)
        if not cfg.regressor:
            return cls(cfg, table, rest, None, None, None, None, None, table_other)
        resid = y - w @ table
        x = torch.as_tensor(features, dtype=torch.float64)
        x_mean, x_std = x.mean(0), x.std(0).clamp_min(1e-3)
        x = (x - x_mean) / x_std
        rc = resid - resid.mean(0)
        scores = component_scores(rc, cfg.components, lip_jacobian, opening_grad)  # [N,K]
        loadings = torch.linalg.lstsq(scores, rc, rcond=None).solution  # [K,C]
        f = x.shape[1]
        weight = torch.linalg.solve(x.T @ x + cfg.alpha * f * torch.eye(f, dtype=x.dtype), x.T @ scores)
        return cls(cfg, table, rest, weight, loadings, resid.mean(0), x_mean, x_std, table_other)
