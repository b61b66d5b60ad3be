"""After training: drop the Gaussians that add least to the pictures (fewer Gaussians at equal quality).

A Gaussian's contribution is its blending weight (alpha times the transmittance in front of it) summed over the
pixels of some training pictures: the gradient of the rendered image's sum by a constant colour per Gaussian. The
Gaussians of least contribution add almost nothing to any picture, yet each costs every frame its posing,
projection, binning and blending. Measured quality and speed: docs/performance.md.
"""
from __future__ import annotations

import torch
from torch import Tensor

from avatar3d.gaussians.avatar_render import pose_gaussians
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.render.rasterize import rasterize


def contributions(gaussians: BoundGaussians, faces: Tensor, views: list[tuple[Tensor, Tensor, Tensor]], width: int,
                  height: int) -> Tensor:
    # faces: [F',3] binding triangles; views: (posed vertices [V,3], K [3,3], viewmat [4,4]) per picture
    """[N] each Gaussian's blending weight summed over the pixels of every view."""
    total = torch.zeros(gaussians.num_gaussians, dtype=torch.float32, device=gaussians.local_means.device)
    for vertices, K, viewmat in views:
        with torch.no_grad():
            world = pose_gaussians(gaussians, vertices, faces)
        ones = torch.ones(gaussians.num_gaussians, 1, dtype=world.means.dtype, device=world.means.device,
                          requires_grad=True)
        image, _, _ = rasterize(world.means.detach(), world.quats.detach(), world.scales.detach(),
                                world.opacities.detach(), ones, viewmat, K, width, height)
        image.sum().backward()
        total += ones.grad[:, 0].to(total.dtype)
    return total


def prune_least(gaussians: BoundGaussians, weights: Tensor, share: float) -> BoundGaussians:
    # weights: [N] contributions
    """`gaussians` without the `share` of them (rounded down) of least weight; ties go by index, lowest first."""
    n = gaussians.num_gaussians
    drop = int(n * float(share))
    if drop <= 0:
        return gaussians
    order = torch.argsort(weights, stable=True)
    keep = torch.ones(n, dtype=torch.bool, device=weights.device)
    keep[order[:drop]] = False
    return gaussians.subset(keep)
