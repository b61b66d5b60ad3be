"""Triangle-local frames: how a Gaussian bound to a parent triangle follows the posed mesh.

As in GaussianAvatars, each triangle gets an orthonormal frame (origin at the centroid, x along the
first edge, z along the normal) and a scale (the mean edge length). A Gaussian's position, rotation
and scale are stored in that frame, so every rig parameter that moves the triangle moves the Gaussian.
"""
from __future__ import annotations

import torch
from torch import Tensor

from avatar3d.rotation import matrix_to_quaternion, quaternion_multiply


def triangle_frames(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Local frames of every triangle.

    vertices: [...,V,3]; faces: [F,3] int64.
    Returns origin [...,F,3] (centroid), rotation [...,F,3,3] (columns: x, y, z axes in world space),
    scale [...,F] (mean edge length).
    """
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    x = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(eps)
    n = torch.cross(e1, e2, dim=-1)
    z = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    y = torch.cross(z, x, dim=-1)
    rotation = torch.stack([x, y, z], dim=-1)
    scale = (e1.norm(dim=-1) + e2.norm(dim=-1) + (v2 - v1).norm(dim=-1)) / 3.0
    return (v0 + v1 + v2) / 3.0, rotation, scale


def local_to_world(
    local_means: Tensor,  # [N,3] position in the parent frame, in units of the triangle scale
    local_quats: Tensor,  # [N,4] (w,x,y,z) rotation relative to the parent frame (normalised here)
    local_scales: Tensor,  # [N,3] linear scales in units of the triangle scale
    parent: Tensor,  # [N] int64 parent triangle
    origin: Tensor,  # [F,3]
    rotation: Tensor,  # [F,3,3]
    scale: Tensor,  # [F]
) -> tuple[Tensor, Tensor, Tensor]:
    """World means [N,3], quaternions [N,4] (w,x,y,z) and scales [N,3] of bound Gaussians (what
    `BoundGaussians.world` poses every frame)."""
    R = rotation[parent]
    k = scale[parent, None]
    means = origin[parent] + k * (R @ local_means[..., None])[..., 0]
    unit = local_quats / local_quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    frame_quats = matrix_to_quaternion(rotation)[parent]  # once per triangle: several Gaussians share one
    return means, quaternion_multiply(frame_quats, unit), k * local_scales


def world_to_local(
    means: Tensor,  # [N,3] world positions
    parent: Tensor,  # [N] int64
    origin: Tensor,  # [F,3]
    rotation: Tensor,  # [F,3,3]
    scale: Tensor,  # [F]
) -> Tensor:
    """Inverse of the position part of `local_to_world` for one pose: local means [N,3]."""
    R = rotation[parent]
    return (R.transpose(-1, -2) @ (means - origin[parent])[..., None])[..., 0] / scale[parent, None]
