"""Tracking quality figures: landmark errors in pixels, NME, held-out (cv) error and pose jitter.

All pixel errors compare the detector's landmarks with the fitted rig's projected landmarks at the
tracked resolution. An RMSE is sqrt(mean over frames and landmarks of the squared 2D distance);
frames can be restricted (e.g. to those where detection succeeded).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.head.embedding import NUM_LANDMARKS
from avatar3d.rotation import angle_between_matrices
from avatar3d.tracking.losses import EYE_IDX, IRIS_CENTRES, IRIS_IDX, LIP_IDX

EYE_CORNERS = (33, 263)  # outer eye corners: the inter-ocular distance of the NME
CV_FRACTION = 0.10
CV_SEED = 20240  # fixed: the held-out landmarks are the same for every video and run


def cv_mask(num_landmarks: int = NUM_LANDMARKS, fraction: float = CV_FRACTION) -> Tensor:  # -> [478] bool
    """The landmarks left out of the fit for the cross-validation error: a fixed (seeded) 10% of the
    468 mesh points, never the iris points (the gaze needs them) nor the NME eye corners."""
    protected = set(IRIS_IDX) | set(EYE_CORNERS)
    pool = np.array([i for i in range(min(num_landmarks, 468)) if i not in protected])
    count = int(round(fraction * min(num_landmarks, 468)))
    chosen = np.random.default_rng(CV_SEED).choice(pool, size=count, replace=False)
    mask = torch.zeros(num_landmarks, dtype=torch.bool)
    mask[torch.from_numpy(np.sort(chosen))] = True
    return mask


def _frames(err2: Tensor, frames: Optional[Tensor]) -> Tensor:  # err2: [T,L] -> [T',L]
    if frames is None:
        return err2
    if frames.dtype != torch.bool or frames.shape != err2.shape[:1]:
        raise InputError(f"frames must be a bool mask [T={err2.shape[0]}], got {tuple(frames.shape)} "
                         f"{frames.dtype}; pass e.g. the detector's `detected` flags")
    return err2[frames.to(err2.device)]


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise InputError(f"projected landmarks {tuple(pred.shape)} and detections {tuple(target.shape)} must "
                         f"both be [T,L,2] pixels; pass FitResult.projected and the detector's points")


def landmark_rmse(pred: Tensor,  # [T,L,2] projected rig landmarks, pixels
                  target: Tensor,  # [T,L,2] detected landmarks, pixels
                  landmarks=None,  # [L] bool mask or a sequence of indices; None = all
                  frames: Optional[Tensor] = None,  # [T] bool
                  ) -> float:
    """RMSE in pixels over the chosen landmarks and frames."""
    _check_pair(pred, target)
    err2 = ((pred - target) ** 2).sum(-1)  # [T,L]
    if landmarks is not None:
        idx = torch.as_tensor(landmarks, device=err2.device)
        err2 = err2[:, idx]
    err2 = _frames(err2, frames)
    return float(err2.mean().sqrt()) if err2.numel() else float("nan")


def nme(pred: Tensor, target: Tensor,  # [T,L,2] each, pixels
        landmarks=None, frames: Optional[Tensor] = None) -> float:
    """Mean landmark distance over the detected inter-ocular distance (outer eye corners 33 and 263),
    per frame, averaged over frames."""
    _check_pair(pred, target)
    dist = ((pred - target) ** 2).sum(-1).sqrt()  # [T,L]
    if landmarks is not None:
        dist = dist[:, torch.as_tensor(landmarks, device=dist.device)]
    iod = (target[:, EYE_CORNERS[0]] - target[:, EYE_CORNERS[1]]).norm(dim=-1).clamp_min(1e-6)  # [T]
    per_frame = dist.mean(-1) / iod
    if frames is not None:
        per_frame = per_frame[frames.to(per_frame.device)]
    return float(per_frame.mean()) if per_frame.numel() else float("nan")


def pose_jitter_deg(head_rot: Tensor) -> float:  # head_rot: [T,3,3] head rotation per frame
    """Median over frames of the angle (degrees) of the second difference of the head rotation: the
    rotation between consecutive frame-to-frame rotations, D_t = (R_t+1 R_t^T)(R_t R_t-1^T)^T."""
    if head_rot.dim() != 3 or head_rot.shape[-2:] != (3, 3):
        raise InputError(f"head rotations must be [T,3,3], got {tuple(head_rot.shape)}")
    if head_rot.shape[0] < 3:
        return 0.0
    R = head_rot.double()
    step = R[1:] @ R[:-1].transpose(-1, -2)  # [T-1,3,3] frame-to-frame rotation
    ang = angle_between_matrices(step[:-1], step[1:])  # [T-2]
    return float(ang.median())


def tracking_metrics(pred: Tensor,  # [T,478,2] projected rig landmarks, pixels
                     target: Tensor,  # [T,478,2] detected landmarks, pixels
                     head_rot: Tensor,  # [T,3,3] head rotation per frame
                     held_out: Optional[Tensor] = None,  # [478] bool, landmarks left out of the fit
                     frames: Optional[Tensor] = None,  # [T] bool, frames to score (detected)
                     ) -> dict:
    """The figures of `track_report.json` (without timing): landmark_rmse_px (fitted landmarks), nme,
    cv_rmse_px (held-out landmarks; nan when none were held out), mouth_rmse_px (lip contours),
    eye_rmse_px (eyelid contours and iris centres), pose_jitter_deg."""
    pred, target = pred.detach().float(), target.detach().float()
    n = pred.shape[1]
    held = torch.zeros(n, dtype=torch.bool) if held_out is None else held_out.cpu().bool()
    fitted = torch.nonzero(~held).flatten()
    cv = torch.nonzero(held).flatten()
    eyes = list(EYE_IDX) + list(IRIS_CENTRES)
    return {
        "landmark_rmse_px": landmark_rmse(pred, target, fitted, frames),
        "nme": nme(pred, target, fitted, frames),
        "cv_rmse_px": landmark_rmse(pred, target, cv, frames) if len(cv) else float("nan"),
        "mouth_rmse_px": landmark_rmse(pred, target, list(LIP_IDX), frames),
        "eye_rmse_px": landmark_rmse(pred, target, eyes, frames),
        "pose_jitter_deg": pose_jitter_deg(head_rot.detach()),
    }
