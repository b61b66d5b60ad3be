"""The oracle's projection op: 3D Gaussians -> 2D means, conics, depths, radii (cuda_ext/README.md, steps 1-8).

Pure PyTorch; gradients come from autograd. Works in float32 and float64 on any device.
Culled Gaussians (radius 0) get means2d, conics and opacities_eff of exactly 0 (and no gradient through
them); their depth is still the camera-space z.
"""
from __future__ import annotations

import torch
from torch import Tensor

from avatar3d.rotation import quaternion_to_matrix as quat_to_rotmat  # normalises; gradient flows through

EPS2D = 0.3  # screen-space dilation (pixels²), also the antialiasing filter variance
CLIP_MARGIN = 0.3  # tangent clamp margin, as a fraction of the image size


def _projected_det(n: Tensor) -> Tensor:  # n: [N,2,3] = J R M -> [N]
    """det(J Σ_c Jᵀ) as the sum of the squared 2x2 minors of J R M (Cauchy-Binet): keeps its relative precision
    for a flat Gaussian seen edge-on, where a0 c0 - b0² cancels (README step 4)."""
    m01 = n[:, 0, 0] * n[:, 1, 1] - n[:, 0, 1] * n[:, 1, 0]
    m02 = n[:, 0, 0] * n[:, 1, 2] - n[:, 0, 2] * n[:, 1, 0]
    m12 = n[:, 0, 1] * n[:, 1, 2] - n[:, 0, 2] * n[:, 1, 1]
    return m01 * m01 + m02 * m02 + m12 * m12


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
            width: int, height: int, near: float = 0.01, far: float = 100.0, antialiased: bool = False):
    # means: [N,3], quats: [N,4], scales: [N,3], opacities: [N], viewmat: [4,4], K: [3,3]
    """Project Gaussians to the image.

    Returns (means2d [N,2], conics [N,3] = (a, b, c) of Σ2⁻¹, depths [N], radii [N] int32 (0 = culled),
    opacities_eff [N]).
    """
    rot_cw, t_cw = viewmat[:3, :3], viewmat[:3, 3]
    # Camera space, accumulated in float64 whatever the input dtype (README step 1): near the camera the
    # float32 sum of metre-sized terms cancels to a centimetre depth and loses its relative precision.
    wide = torch.promote_types(means.dtype, torch.float64)
    t = (means.to(wide) @ rot_cw.to(wide).T + t_cw.to(wide)).to(means.dtype)  # [N,3] camera space
    x, y, z = t.unbind(-1)
    in_depth = (z > near) & (z < far)
    # Culled Gaussians are computed at a harmless depth so that nothing inf/nan can leak into the gradients.
    zs = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + CLIP_MARGIN * width / fx
    lim_x_neg = cx / fx + CLIP_MARGIN * width / fx
    lim_y_pos = (height - cy) / fy + CLIP_MARGIN * height / fy
    lim_y_neg = cy / fy + CLIP_MARGIN * height / fy
    tx = zs * torch.clamp(x / zs, min=-lim_x_neg, max=lim_x_pos)  # gradient 0 outside the range
    ty = zs * torch.clamp(y / zs, min=-lim_y_neg, max=lim_y_pos)
    # The footprint (steps 2-5) in float64 too, rounded once at the end: a flat Gaussian seen as a thin line has a
    # near-singular conic whose quadratic form amplifies any error of the conic along the line (README step 5).
    zw, txw, tyw = zs.to(wide), tx.to(wide), ty.to(wide)
    zeros = torch.zeros_like(zw)
    fx_w, fy_w = fx.to(wide), fy.to(wide)
    jac = torch.stack([fx_w / zw, zeros, -fx_w * txw / (zw * zw),
                       zeros, fy_w / zw, -fy_w * tyw / (zw * zw)], dim=-1).reshape(-1, 2, 3)  # [N,2,3]

    rot_q = quat_to_rotmat(quats.to(wide))  # [N,3,3]
    m_cam = rot_cw.to(wide) @ (rot_q * scales.to(wide).unsqueeze(-2))  # [N,3,3], cov_c = m_cam m_camᵀ
    cov_c = m_cam @ m_cam.transpose(-1, -2)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [N,2,2], before dilation
    a0, b0, c0 = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    a, b, c = a0 + EPS2D, b0, c0 + EPS2D
    # a c - b² expanded into terms that are all >= 0 (README step 4): it cancels for a thin-line footprint
    pdet = _projected_det(jac @ m_cam)
    det = pdet + EPS2D * (a0 + c0) + EPS2D * EPS2D
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))

    opac = opacities
    if antialiased:
        ratio = pdet / det_safe
        ratio_ok = ratio > 0
        rho = torch.sqrt(torch.where(ratio_ok, ratio, torch.ones_like(ratio)))
        opac = opacities * torch.where(ratio_ok, rho, torch.zeros_like(rho)).to(opacities.dtype)

    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1).to(means.dtype)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = (mid + torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))).to(means.dtype)
        radius = torch.ceil(3.0 * torch.sqrt(lam))
        mx, my = means2d[:, 0], means2d[:, 1]
        off = (mx + radius <= 0) | (mx - radius >= width) | (my + radius <= 0) | (my - radius >= height)
        visible = in_depth & det_ok & (radius > 0) & ~off
        radii = torch.where(visible, radius, torch.zeros_like(radius)).to(torch.int32)

    keep = visible.unsqueeze(-1)
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    opac = torch.where(visible, opac, torch.zeros_like(opac))
    return means2d, conics, z, radii, opac
