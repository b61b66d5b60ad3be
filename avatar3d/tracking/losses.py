"""Loss terms of the rig fit: MediaPipe-478 landmark groups, per-landmark weights, robust reprojection.

The landmark groups use MediaPipe's face-mesh indices (the embedding's order):
- `LIPS`, `EYE_RING`, `BROWS`, `IRIS` come from the embedding module (one definition in the package);
- `FACE_OVAL` is the face contour: on a real face these points slide along the silhouette (the
  detector puts them on the visible outline, not on fixed skin points), so they get a low weight;
- `STABLE` are points that barely move with expression (eye corners, nose ridge and base, nostrils,
  glabella): the rigid stage fits the head pose and focal length on them alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avatar3d.head.embedding import BROWS, EYE_RING, IRIS, LIPS, NUM_LANDMARKS

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 9, 129, 358, 64, 294, 48, 278, 122, 351)
LIP_IDX = tuple(sorted(LIPS))
EYE_IDX = tuple(EYE_RING["right"] + EYE_RING["left"])
BROW_IDX = tuple(sorted(BROWS))
IRIS_IDX = tuple(range(468, 478))
IRIS_CENTRES = (IRIS["right"][0], IRIS["left"][0])  # 468 (subject's right eye), 473 (subject's left eye)


@dataclass(frozen=True)
class RegionWeights:
    """Relative weight of each landmark group in the reprojection loss (1 = an ordinary face point)."""

    mouth: float = 3.0
    """Lip contours (outer and inner): lip sync lives here."""
    eyes: float = 2.0
    """Eyelid contours: blinks and squints."""
    brows: float = 1.0
    """Eyebrows."""
    contour: float = 0.15
    """Face oval: the detector's points slide on the silhouette, so only a weak pull."""
    other: float = 1.0
    """Every other face-mesh point (cheeks, nose, forehead)."""


def landmark_weights(regions: RegionWeights, *, device=None) -> Tensor:  # -> [478]
    """Per-landmark weights of the 468 mesh points from the region weights; the iris points get 0
    (they have their own loss)."""
    w = torch.full((NUM_LANDMARKS,), float(regions.other), device=device)
    w[list(FACE_OVAL)] = regions.contour
    w[list(BROW_IDX)] = regions.brows
    w[list(EYE_IDX)] = regions.eyes
    w[list(LIP_IDX)] = regions.mouth
    w[list(IRIS_IDX)] = 0.0
    return w


def stable_weights(*, device=None) -> Tensor:  # -> [478]
    """Weights of the rigid stage: 1 on the STABLE points, 0 elsewhere."""
    w = torch.zeros(NUM_LANDMARKS, device=device)
    w[list(STABLE)] = 1.0
    return w


def iris_weights(centre: float = 1.0, ring: float = 0.25, *, device=None) -> Tensor:  # -> [478]
    """Weights of the iris loss: the centres decide the gaze; the ring points (noisier) add a little."""
    w = torch.zeros(NUM_LANDMARKS, device=device)
    w[list(IRIS_IDX)] = ring
    w[list(IRIS_CENTRES)] = centre
    return w


def huber(residual_sq: Tensor, delta: float) -> Tensor:  # residual_sq: [...] squared distances -> [...]
    """Huber penalty of a distance d given d^2: d^2 below `delta`, linear (2 delta d - delta^2) above, so a
    few outlier landmarks cannot drag the fit. Gradient stays finite at d = 0."""
    d = (residual_sq + 1e-12).sqrt()
    return torch.where(d <= delta, residual_sq, 2.0 * delta * d - delta * delta)


def reprojection_loss(pred: Tensor,  # [B,L,2] projected rig landmarks, pixels
                      target: Tensor,  # [B,L,2] detected landmarks, pixels
                      lm_weight: Tensor,  # [L] per-landmark weight
                      frame_weight: Tensor,  # [B] per-frame weight (detection confidence)
                      scale: float, delta: float, norm: float) -> Tensor:
    """Sum over frames and landmarks of w_t w_l huber(|pred - target| / scale), divided by `norm`
    (the total weight over all frames, so chunks of a sequence add up to the full-sequence mean)."""
    r2 = ((pred - target) ** 2).sum(-1) / (scale * scale)  # [B,L]
    per = huber(r2, delta) * lm_weight  # [B,L]
    return (per.sum(-1) * frame_weight).sum() / norm


EYELID_PAIRS = ((160, 144), (159, 145), (158, 153), (387, 373), (386, 374), (385, 380))
"""Upper and lower eyelid points facing each other across the middle of each eye (MediaPipe face mesh)."""


def eye_closure_loss(pred: Tensor,  # [B,L,2] projected rig landmarks, pixels
                     target: Tensor,  # [B,L,2] detected landmarks, pixels
                     pair_weight: Tensor,  # [P] weight of each of EYELID_PAIRS
                     frame_weight: Tensor,  # [B] per-frame weight (detection confidence)
                     scale: float, norm: float) -> Tensor:
    """Sum over frames and EYELID_PAIRS of w_t w_p |gap_pred - gap_target|^2 / scale^2, divided by `norm`: the
    lids' opening (DECA's eye-closure term). Unlike each lid point's own residual it is blind to where the eye sits
    and is not capped by the Huber penalty, so a blink the points show is a blink the rig makes."""
    upper = [u for u, _ in EYELID_PAIRS]
    lower = [v for _, v in EYELID_PAIRS]
    gap_pred = pred[:, upper] - pred[:, lower]
    gap_target = target[:, upper] - target[:, lower]
    r2 = ((gap_pred - gap_target) ** 2).sum(-1) / (scale * scale)  # [B,P]
    return ((r2 * pair_weight).sum(-1) * frame_weight).sum() / norm
