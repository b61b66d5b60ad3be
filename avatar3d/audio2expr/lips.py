"""Lip geometry of a tracked face: the mouth opening from landmarks, and how the rig's lips move per unit of
expression (the Jacobian and the opening gradient the losses and the lip regressor measure in metres)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.tracking.sequence import TrackedSequence

# MediaPipe face-mesh inner-lip pairs (upper, lower) and the outer eye corners (scale)
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))


EYE_CORNERS = (33, 263)


def lip_geometry(rig, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray, batch: int = 64):
    """(lip vertices [T,L,3] metres, mouth opening [T] metres) posed from expression + jaw only."""
    from avatar3d.head.lbs import pose_vertices
    from avatar3d.head.rig import RigParams

    lips = rig.region("lips")
    if not bool(lips.any()):
        raise InputError(f"head model {rig.name!r} defines no lip region; lip-sync metrics need one "
                         "(use the ICT-FaceKit or FLAME model)")
    if rig.landmarks_mp is None:
        raise InputError(f"head model {rig.name!r} has no MediaPipe landmark embedding; re-install it")
    pairs = torch.as_tensor(INNER_LIP_PAIRS)
    verts, opening = [], []
    with torch.no_grad():
        for s in range(0, len(expr), batch):
            e = torch.as_tensor(expr[s:s + batch], dtype=torch.float32)
            n = e.shape[0]
            p = RigParams(torch.as_tensor(shape, dtype=torch.float32), e, torch.zeros(n, 3), torch.zeros(n, 3),
                          torch.as_tensor(jaw[s:s + batch], dtype=torch.float32), torch.zeros(n, 2, 3),
                          torch.zeros(n, 3))
            v = pose_vertices(rig, p)
            lm = rig.landmarks_mp.points(v, rig.faces)  # [n,478,3]
            opening.append((lm[:, pairs[:, 0]] - lm[:, pairs[:, 1]]).norm(dim=-1).mean(-1))
            verts.append(v[:, lips])
    return torch.cat(verts).numpy(), torch.cat(opening).numpy()



def mouth_opening_landmarks(landmarks: np.ndarray) -> np.ndarray:  # [T,478,2] -> [T]
    """Inner-lip distance over the eye-corner distance (scale-free), per frame."""
    lm = np.asarray(landmarks, dtype=np.float64)
    d = np.mean([np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) for a, b in INNER_LIP_PAIRS], axis=0)
    scale = np.linalg.norm(lm[:, EYE_CORNERS[0]] - lm[:, EYE_CORNERS[1]], axis=-1)
    return d / np.maximum(scale, 1e-6)


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
    e = rig.num_expr
    eps = 1e-2
    rows = np.repeat(np.asarray(mean[: e + 3], np.float64)[None], e + 4, 0)
    rows[1:] += np.eye(e + 3) * eps * np.asarray(std[: e + 3])[None]
    _, opening = lip_geometry(rig, seq.shape, rows[:, :e].astype(np.float32), rows[:, e:].astype(np.float32))
    return torch.as_tensor((opening[1:] - opening[0]) / eps, dtype=torch.float32)
