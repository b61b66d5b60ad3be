"""Below the frame: the torso continued as the video last showed it.

The torso proxy reaches far below the enrolled frame's lower edge, because a backed-off camera sees there
(training/torso_fit.py), but no frame showed that part: its Gaussians got no gradient and keep their first, faint
state, and a camera at x1.5 would see the torso fade and end in the middle of the picture. After training, column
by column of the proxy's grid (head/torso.py), the straight part's lowest band that the frames showed in full is
repeated downward band by band wherever no frame showed: its Gaussians are copied with the same triangle-local
parameters onto the same triangles of the bands below, so the clothes continue as they were last seen (a striped
shirt keeps its stripes). What the frames showed is kept as trained; columns the frames never showed in full (a
shoulder beside the frame) are left as they are.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from avatar3d.gaussians.avatar_render import binding_index
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.rig import HeadRig
from avatar3d.head.torso import grid_cells


def shown(gaussians: BoundGaussians, faces: Tensor, views: Sequence[tuple[Tensor, Tensor, Tensor]],
          width: int, height: int, footprint: bool = True) -> Tensor:
    # faces: [F',3] binding triangles; views: (posed vertices [V,3], K [3,3], viewmat [4,4]) per frame -> [N] bool
    """Whether some frame had a part of each Gaussian in its picture: its 3-sigma footprint (in front of the camera)
    meeting the picture, so the Gaussians that trained the picture's edge count as shown (`footprint` False: its
    centre inside the picture)."""
    seen = torch.zeros(gaussians.num_gaussians, dtype=torch.bool, device=faces.device)
    with torch.no_grad():
        for vertices, K, viewmat in views:
            world = gaussians.world(vertices, faces)
            cam = world.means @ viewmat[:3, :3].T + viewmat[:3, 3]
            z = cam[:, 2].clamp_min(1e-6)
            x, y = K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]
            r = 3.0 * world.scales.max(dim=1).values * K[0, 0] / z if footprint else torch.zeros_like(z)  # pixels
            seen |= (cam[:, 2] > 0) & (x + r >= 0) & (x - r < width) & (y + r >= 0) & (y - r < height)
    return seen


def continue_torso(gaussians: BoundGaussians, rig: HeadRig, views: Sequence[tuple[Tensor, Tensor, Tensor]],
                   width: int, height: int) -> BoundGaussians:
    # gaussians bound to binding_faces(rig); views as in `shown`
    """The Gaussians with the torso's unseen straight part filled from the lowest band seen in full (module doc)."""
    if "torso_grid" not in rig.meta:
        return gaussians
    grid = rig.meta["torso_grid"]
    binding = binding_index(rig)  # [F'] where each binding triangle sits among the rig's
    faces = rig.faces[binding]
    cells = grid_cells(rig, binding)[gaussians.parent]  # [N,3] (band, segment, half) or -1
    seen = shown(gaussians, faces, views, width, height)
    source_band = _source_bands(cells, seen, grid)[cells[:, 1].clamp_min(0)]  # [N] its segment's, -1: none
    fall = (cells[:, 0] >= grid["slope_bands"]) & (source_band >= 0)
    keep = ~(fall & (cells[:, 0] > source_band) & ~seen)  # untrained, below a band seen in full: the copies replace
    lookup = _lookup(rig, binding, grid)  # [bands, K, 2] binding index of each grid cell
    parts = [gaussians.subset(keep)]
    source = torch.nonzero(fall & (cells[:, 0] == source_band)).flatten()
    for step in range(1, grid["bands"] - grid["slope_bands"]):
        band = cells[source, 0] + step
        inside = band < grid["bands"]
        if not bool(inside.any()):
            break
        parent = lookup[band[inside], cells[source[inside], 1], cells[source[inside], 2]]
        picked = source[inside][parent >= 0]
        copy = gaussians.subset(picked)
        copy.parent = parent[parent >= 0]
        # a copy fills up to the picture's edge: the trained Gaussians there reach only partly beyond it
        parts.append(copy.subset(~shown(copy, faces, views, width, height, footprint=False)))
    return _concat(parts)


def _source_bands(cells: Tensor, seen: Tensor, grid: dict) -> Tensor:  # -> [K] int64
    """Per segment, the lowest band of the straight part whose Gaussians the frames all showed (-1: none)."""
    k, bands = grid["segments"], grid["bands"]
    on = (cells[:, 0] >= grid["slope_bands"])
    index = cells[on, 0] * k + cells[on, 1]
    count = torch.zeros(bands * k, dtype=torch.long, device=cells.device).index_add_(0, index, torch.ones_like(index))
    unseen = torch.zeros_like(count).index_add_(0, index, (~seen[on]).long())
    full = ((count > 0) & (unseen == 0)).reshape(bands, k)
    band = torch.arange(bands, device=cells.device)[:, None].expand(bands, k)
    return torch.where(full, band, torch.full_like(band, -1)).max(0).values


def _lookup(rig: HeadRig, binding: Tensor, grid: dict) -> Tensor:  # -> [bands, K, 2] int64 (-1: not bound)
    cells = grid_cells(rig, binding)
    table = torch.full((grid["bands"], grid["segments"], 2), -1, dtype=torch.long, device=binding.device)
    on = cells[:, 0] >= 0
    table[cells[on, 0], cells[on, 1], cells[on, 2]] = torch.nonzero(on).flatten()
    return table


def _concat(parts: Sequence[BoundGaussians]) -> BoundGaussians:
    cat = lambda name: torch.cat([getattr(p, name).detach() for p in parts])  # noqa: E731
    return BoundGaussians(cat("parent"), cat("local_means"), cat("log_scales"), cat("quats"), cat("opacity_logits"),
                          cat("sh"))
