"""After training: drop the Gaussians that add least to the pictures (fewer Gaussians at equal quality).

A Gaussian's contribution is its blending weight (alpha times the transmittance in front of it) summed over the
pixels of some training pictures: the gradient of the rendered image's sum by a constant colour per Gaussian. The
Gaussians of least contribution add almost nothing to any picture, yet each costs every frame its posing,
projection, binning and blending. A Gaussian's blending cost follows its footprint, the pixels its alpha >= 1/255
ellipse covers: a large faint splat layered over a surface is evaluated at every one of them and adds little at
each, so `faint_kept` ranks by contribution per pixel covered. Measured quality and speed: docs/performance.md,
docs/portrait.md.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from avatar3d.gaussians.avatar_render import pose_gaussians
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.render.rasterize import rasterize


ALPHA_MIN = 1.0 / 255.0  # the rasterizer skips a Gaussian where its alpha is below this (cuda_ext/README.md)


def contributions(gaussians: BoundGaussians, faces: Tensor, views: list[tuple[Tensor, Tensor, Tensor]], width: int,
                  height: int) -> Tensor:
    # faces: [F',3] binding triangles; views: (posed vertices [V,3], K [3,3], viewmat [4,4][, RigParams]) per
    # picture, the frame's parameters (when given) setting the expression offsets as the render does
    """[N] each Gaussian's blending weight summed over the pixels of every view."""
    return blend_statistics(gaussians, faces, views, width, height)[0]


def footprint_area(conics: Tensor, opacities: Tensor, radii: Tensor) -> Tensor:
    # conics: [N,3], opacities: [N] effective, radii: [N] (0: culled), as in `rasterize`'s meta -> [N] pixels
    """Pixels inside each projected Gaussian's alpha >= 1/255 ellipse (0 where culled):
    0.5 d^T C d <= s with s = log(opacity / ALPHA_MIN) has area 2 pi s / sqrt(det C), C the conic."""
    det = (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2).clamp_min(1e-12)
    s = torch.log((opacities / ALPHA_MIN).clamp_min(1.0))
    return torch.where(radii > 0, 2.0 * math.pi * s / det.sqrt(), torch.zeros_like(s))


def blend_statistics(gaussians: BoundGaussians, faces: Tensor, views: list[tuple[Tensor, Tensor, Tensor]],
                     width: int, height: int) -> tuple[Tensor, Tensor]:
    # faces, views: as in `contributions` -> ([N], [N])
    """Each Gaussian's blending weight summed over the pixels of every view, and its footprint (`footprint_area`,
    pixels, the picture's edge ignored) summed over the views."""
    total = torch.zeros(gaussians.num_gaussians, dtype=torch.float32, device=gaussians.local_means.device)
    area = torch.zeros_like(total)
    for vertices, K, viewmat, *face in views:
        with torch.no_grad():
            world = pose_gaussians(gaussians, vertices, faces, face[0] if face else None)
        ones = torch.ones(gaussians.num_gaussians, 1, dtype=world.means.dtype, device=world.means.device,
                          requires_grad=True)
        image, _, meta = rasterize(world.means.detach(), world.quats.detach(), world.scales.detach(),
                                   world.opacities.detach(), ones, viewmat, K, width, height)
        image.sum().backward()
        total += ones.grad[:, 0].to(total.dtype)
        area += footprint_area(meta["conics"].detach(), meta["opacities"].detach(), meta["radii"]).to(area.dtype)
    return total, area


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


def faint_kept(weights: Tensor, areas: Tensor, candidates: Tensor, share: float) -> Tensor:
    # weights, areas: [N] from `blend_statistics`; candidates: [N] bool -> [N] bool
    """Which Gaussians to keep when the `share` (rounded down) of the `candidates` that add least per pixel they
    cover (weight / (area + 1 pixel)) go; ties go by index, lowest first."""
    keep = torch.ones(weights.shape[0], dtype=torch.bool, device=weights.device)
    index = torch.nonzero(candidates).flatten()
    drop = int(index.numel() * float(share))
    if drop > 0:
        density = weights[index] / (areas[index] + 1.0)
        keep[index[torch.argsort(density, stable=True)[:drop]]] = False
    return keep
