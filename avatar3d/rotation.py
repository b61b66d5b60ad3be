"""Rotations: axis-angle (radians) <-> matrix <-> quaternion (w, x, y, z), and head-pose Euler angles.

All functions are batched over leading dimensions, differentiable (finite gradients at the identity),
and keep the dtype/device of their input (float32 or float64).

Euler convention (DESIGN.md, rig space x = subject's left, y up, z out of the face), in DEGREES:
  yaw   about +y, positive turns the face towards the subject's left (+x);
  pitch about +x, positive makes the face look down (-y);
  roll  about +z, positive tilts the top of the head towards the subject's right (-x).
All three are right-handed rotations, composed as

    R = R_y(yaw) @ R_x(pitch) @ R_z(roll)

i.e. roll is applied first, then pitch, then yaw (the usual "turn, nod, tilt" head-pose order, which
keeps yaw and pitch meaningful for a face that is both turned and tilted).
"""
from __future__ import annotations

import torch
from torch import Tensor

# Below this squared angle the Taylor series are used: their truncation error is far below float64 eps.
_SMALL_SQ = 1e-8


def _skew(v: Tensor) -> Tensor:
    """v: [...,3] -> [...,3,3] cross-product matrix ([v]x w = v x w)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """aa: [...,3] axis * angle (radians) -> [...,3,3] rotation matrix (Rodrigues).

    R = I + a [k]x + b [k]x^2 with a = sin(t)/t, b = (1-cos t)/t^2 applied to the unnormalised
    axis; near t = 0 both use their Taylor series, so value and gradient stay finite.
    """
    t2 = (aa * aa).sum(-1)  # [...]
    small = t2 < _SMALL_SQ
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = t2_safe.sqrt()
    a = torch.where(small, 1.0 - t2 / 6.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2_safe)
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """q: [...,4] (w, x, y, z), any norm > 0 -> [...,3,3]."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    m = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(m, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """R: [...,3,3] rotation -> [...,4] unit quaternion (w, x, y, z) with w >= 0.

    Shepperd's method: of the four algebraically equal candidates, the one built from the largest
    diagonal combination is used, so there is no cancellation for any rotation angle.
    """
    m = R
    r00, r11, r22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2
    d = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    s21, s12 = m[..., 2, 1], m[..., 1, 2]
    s02, s20 = m[..., 0, 2], m[..., 2, 0]
    s10, s01 = m[..., 1, 0], m[..., 0, 1]
    # candidate i (row) = 4 * q_i * q, one row per choice of the large component
    cand = torch.stack([
        torch.stack([d[..., 0], s21 - s12, s02 - s20, s10 - s01], -1),
        torch.stack([s21 - s12, d[..., 1], s10 + s01, s02 + s20], -1),
        torch.stack([s02 - s20, s10 + s01, d[..., 2], s21 + s12], -1),
        torch.stack([s10 - s01, s02 + s20, s21 + s12, d[..., 3]], -1),
    ], -2)  # [...,4,4]
    best = d.argmax(-1)  # [...]
    idx = best[..., None, None].expand(*best.shape, 1, 4)
    q = cand.gather(-2, idx).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of [...,4] quaternions (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quaternion_to_axis_angle(q: Tensor) -> Tensor:
    """q: [...,4] (w, x, y, z) -> [...,3] axis-angle with angle in [0, pi]."""
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    s2 = (v * v).sum(-1)
    small = s2 < _SMALL_SQ
    s = torch.where(small, torch.ones_like(s2), s2).sqrt()
    angle = 2.0 * torch.atan2(s, w)
    # angle / |v|; near 0: 2/w * (1 - s^2/(3 w^2)) from the series of atan
    w_safe = torch.where(small, w, torch.ones_like(w))
    factor = torch.where(small, 2.0 / w_safe * (1.0 - s2 / (3.0 * w_safe * w_safe)), angle / s)
    return v * factor[..., None]


def axis_angle_to_quaternion(aa: Tensor) -> Tensor:
    """aa: [...,3] -> [...,4] unit quaternion (w, x, y, z)."""
    t2 = (aa * aa).sum(-1)
    small = t2 < _SMALL_SQ
    t = torch.where(small, torch.ones_like(t2), t2).sqrt()
    half = torch.where(small, 0.5 - t2 / 48.0, torch.sin(t / 2) / t)  # sin(t/2)/t
    w = torch.where(small, 1.0 - t2 / 8.0, torch.cos(t / 2))
    return torch.cat([w[..., None], aa * half[..., None]], -1)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """R: [...,3,3] -> [...,3] axis-angle (angle in [0, pi]); stable for every angle."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def euler_to_matrix(yaw, pitch, roll) -> Tensor:
    """yaw, pitch, roll: degrees, scalars or [...] tensors -> [...,3,3] = R_y(yaw) R_x(pitch) R_z(roll)."""
    like = next((v for v in (yaw, pitch, roll) if isinstance(v, Tensor)), None)
    yaw, pitch, roll = (_as_tensor(v, like) for v in (yaw, pitch, roll))
    yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    z = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack([z, torch.deg2rad(yaw), z], -1))
    rx = axis_angle_to_matrix(torch.stack([torch.deg2rad(pitch), z, z], -1))
    rz = axis_angle_to_matrix(torch.stack([z, z, torch.deg2rad(roll)], -1))
    return ry @ rx @ rz


def euler_to_axis_angle(yaw, pitch, roll) -> Tensor:
    """yaw, pitch, roll: degrees (scalars or [...]) -> [...,3] axis-angle radians (see module doc)."""
    return matrix_to_axis_angle(euler_to_matrix(yaw, pitch, roll))


def matrix_to_euler(R: Tensor) -> Tensor:
    """R: [...,3,3] -> [...,3] (yaw, pitch, roll) degrees, pitch in [-90, 90]; inverse of euler_to_matrix.

    From R = R_y R_x R_z: R[1,2] = -sin(pitch), R[0,2]/R[2,2] = tan(yaw), R[1,0]/R[1,1] = tan(roll).
    At pitch = +-90 (gimbal lock) yaw and roll are not separable; roll is then reported as 0.
    """
    sp = (-R[..., 1, 2]).clamp(-1.0, 1.0)
    cp = torch.sqrt(R[..., 1, 0] ** 2 + R[..., 1, 1] ** 2)
    pitch = torch.atan2(sp, cp)
    lock = cp < 1e-7
    yaw = torch.where(lock, torch.atan2(-R[..., 2, 0], R[..., 0, 0]), torch.atan2(R[..., 0, 2], R[..., 2, 2]))
    roll = torch.where(lock, torch.zeros_like(pitch), torch.atan2(R[..., 1, 0], R[..., 1, 1]))
    return torch.rad2deg(torch.stack([yaw, pitch, roll], -1))


def axis_angle_to_euler(aa: Tensor) -> Tensor:
    """aa: [...,3] axis-angle radians -> [...,3] (yaw, pitch, roll) degrees."""
    return matrix_to_euler(axis_angle_to_matrix(aa))


def angle_between_matrices(R1: Tensor, R2: Tensor) -> Tensor:
    """R1, R2: [...,3,3] -> [...] angle of the relative rotation R1^T R2, in degrees (0..180).

    Uses the quaternion's atan2 form, which is accurate for tiny angles (acos of the trace is not).
    """
    q = matrix_to_quaternion(R1.transpose(-1, -2) @ R2)
    return torch.rad2deg(2.0 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0].abs()))


def angle_between_axis_angles(a1: Tensor, a2: Tensor) -> Tensor:
    """a1, a2: [...,3] axis-angle -> [...] relative rotation angle in degrees."""
    return angle_between_matrices(axis_angle_to_matrix(a1), axis_angle_to_matrix(a2))


__all__ = [
    "axis_angle_to_matrix", "matrix_to_axis_angle", "quaternion_to_matrix", "matrix_to_quaternion",
    "axis_angle_to_quaternion", "quaternion_to_axis_angle", "euler_to_matrix", "euler_to_axis_angle",
    "matrix_to_euler", "axis_angle_to_euler", "angle_between_matrices", "angle_between_axis_angles",
]
