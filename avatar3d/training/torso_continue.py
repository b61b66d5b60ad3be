"""Below the frame: the torso continued in the colours the video last showed.

The torso proxy reaches far below the enrolled frame's lower edge, because a backed-off camera sees there
(training/torso_fit.py), but no frame showed that part: its Gaussians got no gradient and keep their first, faint
state, and a camera at x1.5 would see the torso fade and end in the middle of the picture. After training, column
by column of the proxy's grid (head/torso.py), the straight part's lowest band that the frames showed in full gives
the colour: each triangle of the bands below, wherever no frame showed, gets one opaque Gaussian flat along it in
the colour the pictures show where the source band's Gaussians of its column and half lie. One Gaussian per
triangle, sized so neighbours overlap, covers the surface with a few splats a pixel; copying the source band's
trained Gaussians down instead (a striped shirt kept its stripes) cost a backed-off clip more than the rest of the
torso, since those are many, large and faint. What the frames showed is kept as trained; columns the frames never
showed in full (a shoulder beside the frame) are left as they are.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from avatar3d.gaussians.avatar_render import binding_index, pose_gaussians
from avatar3d.gaussians.binding import triangle_frames
from avatar3d.gaussians.expression import OFFSET_NAMES
from avatar3d.gaussians.model import BASE_NAMES, BoundGaussians, rgb_to_sh0
from avatar3d.head.rig import HeadRig
from avatar3d.head.torso import grid_cells

FILL_SIGMA = 0.5  # a fill Gaussian's in-plane scale, in its triangle's mean edge: neighbours overlap to opaque
FILL_MIN_SIGMA = 0.15  # smaller than this, near a picture's edge, a fill Gaussian is left out
FILL_FLATNESS = 0.1  # its scale along the normal, relative to the in-plane one
FILL_OPACITY_LOGIT = 5.0  # opacity 0.993: the compositor's 0.99 cap


def _project(means: Tensor, K: Tensor, viewmat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # means: [N,3] world -> x, y [N] pixels, z [N] camera depth (x, y meaningless where z <= 0)
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2].clamp_min(1e-6)
    return K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2], cam[:, 2]


def shown(gaussians: BoundGaussians, faces: Tensor, views: Sequence[tuple[Tensor, Tensor, Tensor]],
          width: int, height: int) -> Tensor:
    # faces: [F',3] binding triangles; views: (posed vertices [V,3], K [3,3], viewmat [4,4][, RigParams]) per frame
    # (as in training/prune.py) -> [N] bool
    """Whether some frame had a part of each Gaussian in its picture: its 3-sigma footprint (in front of the camera)
    meeting the picture, so the Gaussians that trained the picture's edge count as shown."""
    seen = torch.zeros(gaussians.num_gaussians, dtype=torch.bool, device=faces.device)
    with torch.no_grad():
        for vertices, K, viewmat, *face in views:
            world = pose_gaussians(gaussians, vertices, faces, face[0] if face else None)
            x, y, z = _project(world.means, K, viewmat)
            r = 3.0 * world.scales.max(dim=1).values * K[0, 0] / z.clamp_min(1e-6)  # pixels
            seen |= (z > 0) & (x + r >= 0) & (x - r < width) & (y + r >= 0) & (y - r < height)
    return seen


def continue_torso(gaussians: BoundGaussians, rig: HeadRig, views: Sequence[tuple[Tensor, Tensor, Tensor]],
                   pictures: Sequence[Tensor], width: int, height: int) -> BoundGaussians:
    # gaussians bound to binding_faces(rig); views as in `shown`; pictures: [H,W,3] float in [0,1] per view
    """The Gaussians with the torso's unseen straight part filled below the lowest band seen in full (module doc)."""
    if "torso_grid" not in rig.meta:
        return gaussians
    grid = rig.meta["torso_grid"]
    binding = binding_index(rig)  # [F'] where each binding triangle sits among the rig's
    faces = rig.faces[binding]
    cells = grid_cells(rig, binding)[gaussians.parent]  # [N,3] (band, segment, half) or -1
    seen = shown(gaussians, faces, views, width, height)
    bands = _source_bands(cells, seen, grid)  # [K] each column's, -1: none
    source_band = bands[cells[:, 1].clamp_min(0)]  # [N] its column's
    fall = (cells[:, 0] >= grid["slope_bands"]) & (source_band >= 0)
    keep = ~(fall & (cells[:, 0] > source_band) & ~seen)  # untrained, below a band seen in full: the fill replaces
    colours = _source_colours(gaussians, fall & (cells[:, 0] == source_band), cells, faces, views, pictures,
                              grid["segments"])
    fill = _fill(_lookup(rig, binding, grid), bands, colours, gaussians.sh.shape[1])
    fill = _kept_outside(fill, faces, views, width, height)
    return _concat([gaussians.subset(keep), fill])


def _source_colours(gaussians: BoundGaussians, source: Tensor, cells: Tensor, faces: Tensor,
                    views: Sequence[tuple[Tensor, Tensor, Tensor]], pictures: Sequence[Tensor],
                    segments: int) -> Tensor:
    # source: [N] bool the Gaussians of the source bands; cells: [N,3] their grid cells -> [K,2,3], NaN: unknown
    """Per column and half, the mean colour the pictures show at the centres of its source band's Gaussians (each
    weighted by its opacity). Not the triangles' own pixels: where the proxy's front lies ahead of the person's
    clothes the frames' colour is carried by Gaussians on its far side."""
    sums = torch.zeros(segments * 2, 3, device=faces.device)
    weights = torch.zeros(segments * 2, device=faces.device)
    picked = gaussians.subset(source)
    slot = cells[source, 1] * 2 + cells[source, 2]  # [S]
    opacity = torch.sigmoid(picked.opacity_logits.detach().flatten())
    with torch.no_grad():
        for (vertices, K, viewmat, *_), picture in zip(views, pictures):
            x, y, z = _project(picked.world(vertices, faces).means, K, viewmat)
            x, y = torch.floor(x).long(), torch.floor(y).long()
            h, w = picture.shape[:2]
            inside = (z > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            sums.index_add_(0, slot[inside], picture[y[inside], x[inside]].to(sums) * opacity[inside, None])
            weights.index_add_(0, slot[inside], opacity[inside])
    return (sums / weights[:, None]).reshape(segments, 2, 3)  # 0/0: NaN, none inside a picture


def _fill(lookup: Tensor, bands: Tensor, colours: Tensor, sh_coeffs: int) -> BoundGaussians:
    # lookup: [bands, K, 2] binding triangle of each cell; bands: [K] source band (-1: none); colours: [K,2,3]
    """One opaque flat Gaussian on every cell below its column's source band, in its source cell's colour (else
    the other half's)."""
    parents, rgb = [], []
    for k in torch.nonzero(bands >= 0).flatten().tolist():
        for half in range(2):
            colour = _known_colour(colours[k, half], colours[k, 1 - half])
            below = lookup[int(bands[k]) + 1:, k, half]
            below = below[below >= 0]
            if colour is not None and below.numel():
                parents.append(below)
                rgb.append(colour.expand(below.numel(), 3))
    parent = torch.cat(parents) if parents else lookup.new_zeros(0)
    n = parent.numel()
    sh = torch.zeros(n, sh_coeffs, 3, device=lookup.device)
    if n:
        sh[:, 0] = rgb_to_sh0(torch.cat(rgb).clamp(0.0, 1.0))
    in_plane = math.log(FILL_SIGMA)
    log_scales = torch.tensor([in_plane, in_plane, in_plane + math.log(FILL_FLATNESS)],
                              device=lookup.device).expand(n, 3).clone()
    quats = torch.zeros(n, 4, device=lookup.device)
    quats[:, 0] = 1.0
    return BoundGaussians(parent, torch.zeros(n, 3, device=lookup.device), log_scales, quats,
                          torch.full((n,), FILL_OPACITY_LOGIT, device=lookup.device), sh)


def _kept_outside(fill: BoundGaussians, faces: Tensor, views: Sequence[tuple[Tensor, Tensor, Tensor]], width: int,
                  height: int) -> BoundGaussians:
    """The fill shrunk where it would reach into a training picture (painting over what was trained there): each
    Gaussian's 3-sigma footprint ends at the nearest picture's edge; those that would have to shrink below
    FILL_MIN_SIGMA, or lie inside a picture, go."""
    if fill.num_gaussians == 0:  # else some view showed its sources
        return fill
    room = torch.full((fill.num_gaussians,), float("inf"), device=faces.device)  # metres to the nearest picture
    with torch.no_grad():
        for vertices, K, viewmat, *_ in views:
            x, y, z = _project(fill.world(vertices, faces).means, K, viewmat)
            outside = torch.stack([-x, x - width, -y, y - height], dim=1).amax(dim=1).clamp_min(0.0)  # pixels
            room = torch.minimum(room, torch.where(z > 0, outside * z / K[0, 0], room))
        _, _, tri_scale = triangle_frames(views[0][0], faces)
    sigma = torch.minimum(torch.full_like(room, FILL_SIGMA), room / 3.0 / tri_scale[fill.parent])  # triangle units
    fill.log_scales.data[:, :2] = torch.log(sigma.clamp_min(1e-6))[:, None]
    fill.log_scales.data[:, 2] = fill.log_scales.data[:, 0] + math.log(FILL_FLATNESS)
    return fill.subset(sigma >= FILL_MIN_SIGMA)


def _known_colour(*colours: Tensor):  # each [3], NaN: unknown -> the first known, or None
    for colour in colours:
        if not bool(torch.isnan(colour).any()):
            return colour
    return None


def continuation_sources(gaussians: BoundGaussians, rig: HeadRig, seen: Tensor) -> Tensor:
    # seen: [N] bool, `shown` of the frames -> [N] bool
    """The Gaussians `continue_torso` takes the fill's colours from (none for a head): thinning spares them."""
    if "torso_grid" not in rig.meta:
        return torch.zeros(gaussians.num_gaussians, dtype=torch.bool, device=gaussians.parent.device)
    grid = rig.meta["torso_grid"]
    cells = grid_cells(rig, binding_index(rig))[gaussians.parent]
    source_band = _source_bands(cells, seen, grid)[cells[:, 1].clamp_min(0)]
    return (cells[:, 0] >= grid["slope_bands"]) & (source_band >= 0) & (cells[:, 0] == source_band)


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
    """One set of `parts`, under the first one's expression basis (the others' offsets start at zero)."""
    basis = parts[0].expression
    parts = [p if p.expression is basis else p.with_expression(basis) for p in parts]
    cat = lambda name: torch.cat([getattr(p, name).detach() for p in parts])  # noqa: E731
    return BoundGaussians(cat("parent"), *(cat(n) for n in BASE_NAMES), basis, {n: cat(n) for n in OFFSET_NAMES})
