"""Photometric losses and regularisers of Gaussian avatar training.

L1 + lambda * D-SSIM (as 3DGS), an optional per-pixel weight map (mouth and eyes count more), the
GaussianAvatars regularisers that keep each Gaussian near its parent triangle and not much larger than
it. (LPIPS, when its weights are on this machine, is `render.metrics`'s network: trainer.py adds it.)
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.gaussians.model import BoundGaussians
from avatar3d.render import native
from avatar3d.rotation import quaternion_to_matrix


def _gaussian_1d(size: int, sigma: float, like: Tensor) -> Tensor:  # -> [size]
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def padded_ssim_map(a: Tensor, b: Tensor) -> Tensor:
    # a, b: [H,W,C] images in [0,1]
    """Per-pixel SSIM [H,W] (11-tap Gaussian window, sigma 1.5, the constants of Wang et al.) with zero padding,
    differentiable: the training loss's D-SSIM, as 3DGS computes it, so every pixel (and its weight) counts up to
    the border. The reported metric is `render.metrics.ssim` (valid windows only, as the field reports it).

    A float32 CPU render against a constant target goes through the native op (forward and gradient in a few
    passes, `cuda_ext/ssim_cpu.cpp`); anything else through `padded_ssim_map_reference`, which it matches.
    """
    if (a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32 and not b.requires_grad
            and native.is_available()):
        return native.ssim_map(a, b)
    return padded_ssim_map_reference(a, b)


def padded_ssim_map_reference(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    # a, b: [H,W,C] images in [0,1]
    """`padded_ssim_map` in PyTorch ops (autograd for the gradients): the reference of the native op, and the
    path on a GPU. The five local statistics are blurred in one separable pass (two 1D convolutions over 5C
    channels)."""
    c = a.shape[-1]
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)  # [C,H,W]
    stack = torch.cat([x, y, x * x, y * y, x * y])[None]  # [1,5C,H,W]
    g = _gaussian_1d(window, sigma, a)
    pad = window // 2
    k = 5 * c
    blurred = F.conv2d(stack, g.view(1, 1, 1, -1).expand(k, 1, 1, window), padding=(0, pad), groups=k)
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1).expand(k, 1, window, 1), padding=(pad, 0), groups=k)
    mu_x, mu_y, exx, eyy, exy = blurred[0].split(c)
    sxx = exx - mu_x ** 2
    syy = eyy - mu_y ** 2
    sxy = exy - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean(0)


def padded_ssim(a: Tensor, b: Tensor) -> Tensor:  # a, b: [H,W,C] -> []
    """Mean of `padded_ssim_map`."""
    return padded_ssim_map(a, b).mean()


def photometric_loss(render: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                     lambda_dssim: float = 0.2) -> Tensor:
    # render, target: [H,W,3]; weight: [H,W] per-pixel weight (mean ~1) or None
    """(1 - lambda) * L1 + lambda * (1 - SSIM), as 3DGS; each term averaged under the weight map."""
    l1 = (render - target).abs().mean(-1)  # [H,W]
    dssim = 1.0 - padded_ssim_map(render, target)  # [H,W]
    if weight is None:
        return (1 - lambda_dssim) * l1.mean() + lambda_dssim * dssim.mean()
    norm = weight.sum()
    return ((1 - lambda_dssim) * (l1 * weight).sum() + lambda_dssim * (dssim * weight).sum()) / norm


def binding_regularizer(gaussians: BoundGaussians, threshold_position: float = 1.0,
                        threshold_scale: float = 0.6) -> tuple[Tensor, Tensor]:
    """GaussianAvatars' (position, scale) penalties, both in units of the parent triangle's size.

    A Gaussian may sit up to `threshold_position` triangle sizes from its triangle's centre and be up to
    `threshold_scale` of it large for free; beyond that it costs linearly, so no Gaussian drifts away from the
    part of the rig that moves it or grows into a blob that smears the expression.
    """
    position = F.relu(gaussians.local_means.norm(dim=-1) - threshold_position).mean()
    scale = F.relu(torch.exp(gaussians.log_scales) - threshold_scale).mean()
    return position, scale


def surface_regularizer(gaussians: BoundGaussians, max_needle: float = 3.0) -> tuple[Tensor, Tensor]:
    """(thickness, needle) penalties that keep Gaussians lying on their triangle, both without a free zone.

    thickness: mean offset from the triangle's plane plus mean standard deviation along its normal (triangle
    sizes). needle: mean excess of largest/middle scale over `max_needle`. The training camera barely
    constrains depth, so a Gaussian may drift off the surface or stretch into a needle along the view ray
    without changing the training images — and then shows as a streak past the silhouette from the side.
    Weak weights suffice: Adam moves an otherwise unconstrained parameter at its full rate for any steady
    gradient, while photometric gradients win wherever the images do need the offset (hair volume).
    """
    q = gaussians.quats / gaussians.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    R = quaternion_to_matrix(q)  # [N,3,3]
    s = torch.exp(gaussians.log_scales)  # [N,3]
    normal_std = ((R[:, 2, :] * s) ** 2).sum(-1).clamp_min(1e-12).sqrt()  # extent along the local z (normal)
    thickness = gaussians.local_means[:, 2].abs().mean() + normal_std.mean()
    top2 = torch.topk(s, 2, dim=-1).values
    needle = F.relu(top2[:, 0] / top2[:, 1].clamp_min(1e-12) - max_needle).mean()
    return thickness, needle


def region_weight_map(boxes: list[tuple[float, float, float, float]], height: int, width: int, extra: float,
                      like: Tensor) -> Tensor:
    """[H,W] weight: 1 everywhere, `extra` inside each (x0, y0, x1, y1) pixel box (mouth, eyes)."""
    weight = torch.ones(height, width, dtype=like.dtype, device=like.device)
    for x0, y0, x1, y1 in boxes:
        xa, xb = max(0, int(math.floor(x0))), min(width, int(math.ceil(x1)))
        ya, yb = max(0, int(math.floor(y0))), min(height, int(math.ceil(y1)))
        if xb > xa and yb > ya:
            weight[ya:yb, xa:xb] = extra
    return weight
