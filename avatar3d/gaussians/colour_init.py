"""Initial colour of every binding triangle, from several training frames, with unseen ones filled in.

A triangle takes the mean colour of the pixels where it is the nearest surface (a z-buffer, so occluded
triangles — the mouth interior behind closed lips, the far cheek — do not copy what covers them), over a
few frames chosen to show the head from its most different sides. Triangles that no chosen frame shows
(the neck's flanks, the back of the head) take the colour of their nearest seen neighbours across shared
vertices: a side view then starts as skin or hair next to it, not as the mean colour of the whole frame.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def pick_views(yaw: Tensor, count: int) -> list[int]:
    # yaw: [T] head yaw proxy of each training frame (radians)
    """Positions (into `yaw`) of up to `count` frames: the two extreme turns first, then evenly spaced ones."""
    n = int(yaw.shape[0])
    if n == 0 or count <= 0:
        return []
    chosen = [int(torch.argmin(yaw)), int(torch.argmax(yaw))]
    for k in range(count):
        chosen.append(int(round(k * (n - 1) / max(1, count - 1))))
    out: list[int] = []
    for c in chosen:
        if c not in out:
            out.append(c)
    return out[:max(count, 2)]


def accumulate_colours(vertices: Tensor,  # [V,3] posed mesh of one frame
                       faces: Tensor,  # [F,3] binding triangles
                       image: Tensor,  # [H,W,3] float in [0,1], the frame at the camera below
                       K: Tensor,  # [3,3] pixels at the image's size
                       viewmat: Tensor,  # [4,4] world->camera
                       sums: Tensor,  # [F,3] running colour sums (updated in place)
                       counts: Tensor,  # [F] running pixel counts (updated in place)
                       ) -> None:
    """Add the pixels where each triangle is the visible surface to its colour sum."""
    from avatar3d.render.mesh_raster import rasterize_triangles  # the z-buffer of the synthetic subject

    h, w = int(image.shape[0]), int(image.shape[1])
    frags = rasterize_triangles(vertices, faces, K, viewmat, w, h, backfaces="draw")
    face_id = frags.face_id.reshape(-1)
    hit = face_id >= 0
    ids = face_id[hit].to(sums.device)
    sums.index_add_(0, ids, image.reshape(-1, 3)[hit.to(image.device)].to(sums))
    counts.index_add_(0, ids, torch.ones_like(ids, dtype=counts.dtype))


def fill_unseen(faces: Tensor,  # [F,3] int64
                colours: Tensor,  # [F,3] valid where `seen`
                seen: Tensor,  # [F] bool
                num_vertices: int, max_rings: int = 512) -> Tensor:
    """[F,3] colours where unseen triangles take the mean of their already-coloured neighbours, ring by ring
    (triangle -> vertex -> triangle), so colour flows in from the nearest seen surface. Triangles with no
    seen triangle in their connected piece take the mean seen colour (grey when nothing is seen)."""
    colours = colours.clone()
    known = seen.clone()
    if not bool(known.any()):
        return torch.full_like(colours, 0.5)
    flat = faces.reshape(-1)
    for _ in range(max_rings):
        if bool(known.all()):
            break
        vsum = colours.new_zeros(num_vertices, 3)
        vcnt = colours.new_zeros(num_vertices)
        src = known.repeat_interleave(3)
        vsum.index_add_(0, flat[src], colours.repeat_interleave(3, dim=0)[src])
        vcnt.index_add_(0, flat[src], torch.ones_like(flat[src], dtype=colours.dtype))
        fsum = vsum[faces].sum(1)  # [F,3]
        fcnt = vcnt[faces].sum(1)  # [F]
        grow = ~known & (fcnt > 0)
        if not bool(grow.any()):
            break
        colours[grow] = fsum[grow] / fcnt[grow, None]
        known |= grow
    if not bool(known.all()):
        colours[~known] = colours[seen].mean(0)
    return colours


def triangle_colours(posed: Sequence[Tensor],  # T x [V,3] posed meshes of the chosen frames
                     faces: Tensor,  # [F,3]
                     images: Sequence[Tensor],  # T x [H,W,3] float in [0,1]
                     K: Tensor,  # [3,3] at the images' size
                     viewmat: Tensor,  # [4,4]
                     ) -> tuple[Tensor, Tensor]:
    """([F,3] initial colour per triangle, [F] bool seen in some frame)."""
    device = faces.device
    sums = torch.zeros(faces.shape[0], 3, device=device)
    counts = torch.zeros(faces.shape[0], device=device)
    for vertices, image in zip(posed, images):
        accumulate_colours(vertices, faces, image, K, viewmat, sums, counts)
    seen = counts > 0
    colours = sums / counts.clamp_min(1)[:, None]
    num_vertices = int(posed[0].shape[0]) if len(posed) else int(faces.max()) + 1
    return fill_unseen(faces, colours, seen, num_vertices), seen
