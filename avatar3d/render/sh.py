"""Real spherical harmonics up to degree 3 with the constants and sign conventions of 3DGS.

Shared by every rasterizer backend (the colours are evaluated here, in PyTorch, before compositing), so the
backends cannot disagree on them. Differentiable in the coefficients and, through the view direction, in
the means.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.camera import camera_centre
from avatar3d.errors import InputError

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of coefficients of a degree-`degree` expansion: (degree + 1)²."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:  # dirs: [...,3] unit vectors -> [...,(degree+1)²]
    """The real SH basis functions evaluated at unit directions (3DGS ordering and signs)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise InputError(f"sh_degree={degree} is not supported; pass an SH degree in 0..{MAX_SH_DEGREE}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [torch.full_like(x, SH_C0)]
    if degree > 0:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree > 2:
        out += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:  # coeffs: [N,K,3], dirs: [N,3] -> [N,3]
    """Raw SH value (no +0.5 offset) along unit `dirs`; only the first (degree+1)² of K coefficients are used."""
    k = num_sh_bases(degree)
    if coeffs.ndim != 3 or coeffs.shape[-1] != 3 or coeffs.shape[1] < k:
        raise InputError(f"SH coefficients have shape {tuple(coeffs.shape)} but degree {degree} needs [N,>={k},3]; "
                         f"pass [N,(deg+1)^2,3] coefficients or lower sh_degree")
    basis = sh_basis(degree, dirs)  # [N,k]
    return (basis.unsqueeze(-1) * coeffs[:, :k, :]).sum(dim=1)


def sh_to_rgb(degree: int, coeffs: Tensor, means: Tensor, viewmat: Tensor) -> Tensor:
    # coeffs: [N,K,3], means: [N,3], viewmat: [4,4] -> [N,3]
    """View-dependent colour: rgb = max(SH(normalize(mean - camera centre)) + 0.5, 0), as in 3DGS."""
    # The direction in float64: for a Gaussian a centimetre from the camera, float32's -R^T t and the
    # difference cancel to ~1e-5 of the direction, which degree-3 SH turn into colour errors of 2e-5.
    offset = means.double() - camera_centre(viewmat.double())
    dirs = F.normalize(offset, dim=-1, eps=1e-12).to(means.dtype)
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)
