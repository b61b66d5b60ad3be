"""Cross-reenactment: another person's tracked motion, moved onto this avatar's face.

Both people are tracked with the same head model, so their coefficients mean the same shapes. What
differs is each person's resting face: the driver's expression, head pose and gaze are taken relative to
the driver's own means and added to the avatar's means (so a driver who always smiles a little does not
make the avatar smile). The jaw is copied as it is: a closed jaw means the same for everyone. The
identity (`shape`) is always the avatar's.
"""
from __future__ import annotations

import numpy as np

from avatar3d.drive.face import PersonStats
from avatar3d.drive.params import DriveParams
from avatar3d.rotation import axis_angle_to_matrix, matrix_to_axis_angle


def _relative_rotation(values: np.ndarray, mean: np.ndarray, target_mean: np.ndarray) -> np.ndarray:
    # values: [T,3] axis-angle; mean, target_mean: [3] -> [T,3] = R(values) R(mean)ᵀ R(target_mean)
    import torch

    r = axis_angle_to_matrix(torch.as_tensor(values, dtype=torch.float64))
    m = axis_angle_to_matrix(torch.as_tensor(mean, dtype=torch.float64))
    t = axis_angle_to_matrix(torch.as_tensor(target_mean, dtype=torch.float64))
    return matrix_to_axis_angle(r @ m.T @ t).numpy().astype(np.float32)


def transfer_motion(driver, avatar_shape: np.ndarray, avatar: PersonStats, audio=None) -> DriveParams:
    # driver: TrackedSequence of the other person (same head model); avatar_shape: [S]
    """DriveParams that make the avatar perform the driver's motion."""
    drv = PersonStats.from_arrays(driver.expr, driver.jaw, driver.neck, driver.eyes, driver.global_rot,
                                  driver.transl, [])
    t = driver.num_frames
    expr = avatar.expr[None] + (np.asarray(driver.expr, np.float32) - drv.expr[None])
    neck = _relative_rotation(driver.neck, drv.neck, avatar.neck)
    eyes = avatar.eyes[None] + (np.asarray(driver.eyes, np.float32) - drv.eyes[None])
    head_motion = np.asarray(driver.transl, np.float32) - drv.transl[None]  # keep the driver's small sways
    return DriveParams(
        shape=avatar_shape, expr=expr, global_rot=np.repeat(avatar.global_rot[None], t, 0), neck=neck,
        jaw=np.asarray(driver.jaw, np.float32), eyes=eyes, transl=avatar.transl[None] + head_motion,
        fps=float(driver.fps), audio=audio, source="video")
