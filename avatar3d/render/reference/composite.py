"""The oracle's compositing op: front-to-back alpha blending of projected Gaussians (cuda_ext/README.md).

Vectorised per chunk of 16x16 tiles: each tile gathers the Gaussians whose tile rectangle covers it (the
same membership as the tile rasterizer), sorted by (depth, index), and evaluates alphas [K,P] for its 256
pixels; the skip and stop cut-offs become masks and the transmittance a cumulative product. Gradients come
from autograd. When gradients are needed each chunk is checkpointed (recomputed in backward), so memory
stays bounded by one chunk rather than growing with the whole scene.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

TILE = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
DEPTH_BLOCK = 32  # Gaussians per tile evaluated at once before checking which pixels have stopped
CHUNK_TILES = 64  # tiles composited together (memory: CHUNK_TILES * DEPTH_BLOCK * 256 values per temporary)


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """(tiles_x, tiles_y): the number of 16-pixel tiles covering the image."""
    return (width + TILE - 1) // TILE, (height + TILE - 1) // TILE


def tile_rects(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    # means2d: [N,2], radii: [N] int32 -> [N,4] int64 (x0, x1, y0, y1), half-open tile ranges
    """Tiles each Gaussian touches: [floor((m - r)/16), ceil((m + r)/16)) clamped to the grid (empty if culled)."""
    tiles_x, tiles_y = tile_grid(width, height)
    m = means2d.detach()
    r = radii.to(m.dtype)
    x0 = torch.floor((m[:, 0] - r) / TILE).clamp(0, tiles_x)
    x1 = torch.ceil((m[:, 0] + r) / TILE).clamp(0, tiles_x)
    y0 = torch.floor((m[:, 1] - r) / TILE).clamp(0, tiles_y)
    y1 = torch.ceil((m[:, 1] + r) / TILE).clamp(0, tiles_y)
    rects = torch.stack([x0, x1, y0, y1], dim=-1).to(torch.int64)
    return torch.where((radii > 0).unsqueeze(-1), rects, torch.zeros_like(rects))


def tile_intersections(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int):
    # means2d: [N,2], radii: [N] int32, depths: [N]
    """Sorted (tile, Gaussian) pairs: returns (gaussian_ids [M] sorted by (tile, depth, index), tile_counts [T])."""
    tiles_x, tiles_y = tile_grid(width, height)
    device = means2d.device
    rects = tile_rects(means2d, radii, width, height)
    w = (rects[:, 1] - rects[:, 0]).clamp_min(0)
    h = (rects[:, 3] - rects[:, 2]).clamp_min(0)
    counts = w * h  # [N]
    ids = torch.repeat_interleave(torch.arange(means2d.shape[0], device=device), counts)  # [M] ascending
    first = torch.cumsum(counts, 0) - counts
    k = torch.arange(ids.shape[0], device=device) - first[ids]
    tx = rects[ids, 0] + k % w[ids]
    ty = rects[ids, 2] + torch.div(k, w[ids], rounding_mode="floor")
    tile = ty * tiles_x + tx
    # Stable sorts, least significant key first: index (already ascending), then depth, then tile.
    order = torch.sort(depths.detach()[ids], stable=True).indices
    ids, tile = ids[order], tile[order]
    order = torch.sort(tile, stable=True).indices
    ids, tile = ids[order], tile[order]
    tile_counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
    return ids, tile_counts


def _blend_tiles(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Tensor,
                 gids: Tensor, valid: Tensor, pix: Tensor, alpha_min: float, t_min: float):
    # means2d: [N,2], conics: [N,3], opacities: [N], colors: [N,C], background: [C],
    # gids: [B,K] Gaussian ids in (depth, index) order (padding arbitrary), valid: [B,K] bool, pix: [B,P,2]
    """Composite B tiles: returns (colour [B,P,C], transmittance [B,P]).

    Walks each tile's list in depth blocks of DEPTH_BLOCK Gaussians, carrying T and the colour, and drops
    tiles whose pixels have all stopped (or whose list is exhausted), so that saturated tiles cost nothing.
    The transmittance is a cumulative product seeded with the carried T, i.e. the same sequence of
    multiplications T *= (1 - alpha) as the per-pixel loop of the spec.
    """
    n_b, n_p = pix.shape[0], pix.shape[1]
    rows = torch.arange(n_b, device=pix.device)
    trans = torch.ones(n_b, n_p, dtype=pix.dtype, device=pix.device)
    color = torch.zeros(n_b, n_p, colors.shape[-1], dtype=pix.dtype, device=pix.device)
    done = torch.zeros(n_b, n_p, dtype=torch.bool, device=pix.device)
    fin_rows, fin_color, fin_trans = [], [], []
    for k0 in range(0, gids.shape[1], DEPTH_BLOCK):
        g = gids[:, k0:k0 + DEPTH_BLOCK]  # [b,k]
        m2 = means2d[g]  # [b,k,2]
        con = conics[g]  # [b,k,3]
        dx = m2[..., 0:1] - pix[:, None, :, 0]  # [b,k,P]
        dy = m2[..., 1:2] - pix[:, None, :, 1]
        sigma = 0.5 * (con[..., 0:1] * dx * dx + con[..., 2:3] * dy * dy) + con[..., 1:2] * dx * dy
        alpha = torch.clamp_max(opacities[g].unsqueeze(-1) * torch.exp(-sigma.clamp_min(0.0)), ALPHA_MAX)
        with torch.no_grad():
            ok = valid[:, k0:k0 + DEPTH_BLOCK].unsqueeze(-1) & (sigma >= 0) & (alpha >= alpha_min) & ~done[:, None]
            seq = torch.cat([trans.detach().unsqueeze(1), torch.where(ok, 1.0 - alpha, torch.ones_like(alpha))], 1)
            t_after = torch.cumprod(seq, dim=1)[:, 1:]
            stop = ok & (t_after <= t_min)
            stopped = torch.cumsum(stop.to(torch.int32), dim=1) > 0  # the stopping Gaussian included
            used = ok & ~stopped
            done = done | stop.any(dim=1)
        alpha = torch.where(used, alpha, torch.zeros_like(alpha))
        seq = torch.cumprod(torch.cat([trans.unsqueeze(1), 1.0 - alpha], dim=1), dim=1)  # [b,k+1,P]
        color = color + torch.einsum("bkp,bkc->bpc", alpha * seq[:, :-1], colors[g])
        trans = seq[:, -1]
        with torch.no_grad():
            finished = done.all(dim=1) | ~valid[:, k0 + DEPTH_BLOCK:].any(dim=1)
        if bool(finished.any()):
            fin_rows.append(rows[finished])
            fin_color.append(color[finished])
            fin_trans.append(trans[finished])
            keep = ~finished
            rows, color, trans, done = rows[keep], color[keep], trans[keep], done[keep]
            gids, valid, pix = gids[keep], valid[keep], pix[keep]
        if rows.shape[0] == 0:
            break
    if rows.shape[0] > 0:  # tiles with an empty list (K = 0)
        fin_rows.append(rows)
        fin_color.append(color)
        fin_trans.append(trans)
    order = torch.argsort(torch.cat(fin_rows))
    t_final = torch.cat(fin_trans)[order]
    return torch.cat(fin_color)[order] + t_final.unsqueeze(-1) * background, t_final


def composite(means2d: Tensor, conics: Tensor, opacities_eff: Tensor, colors: Tensor, background: Tensor | None,
              radii: Tensor, depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    # means2d: [N,2], conics: [N,3], opacities_eff: [N], colors: [N,C], background: [C] or None,
    # radii: [N] int32, depths: [N]
    """Blend the projected Gaussians: returns (image [H,W,C], alpha [H,W,1])."""
    return composite_with_cutoffs(means2d, conics, opacities_eff, colors, background, radii, depths, width, height,
                                  ALPHA_MIN, T_MIN)


def composite_with_cutoffs(means2d: Tensor, conics: Tensor, opacities_eff: Tensor, colors: Tensor,
                           background: Tensor | None, radii: Tensor, depths: Tensor, width: int, height: int,
                           alpha_min: float, t_min: float) -> tuple[Tensor, Tensor]:
    # means2d: [N,2], conics: [N,3], opacities_eff: [N], colors: [N,C], background: [C] or None,
    # radii: [N] int32, depths: [N]
    """`composite` with its two cut-offs (skip below `alpha_min`, stop at `t_min`) moved.

    The tests render the float64 oracle with both nudged a little to find the pixels where a cut-off decision
    sits within float32 rounding of its threshold (cuda_ext/README.md, "How the backends are compared").
    """
    device, dtype = means2d.device, means2d.dtype
    n_ch = colors.shape[-1]
    if background is None:
        background = torch.zeros(n_ch, dtype=dtype, device=device)
    tiles_x, tiles_y = tile_grid(width, height)
    n_tiles = tiles_x * tiles_y
    ids, counts = tile_intersections(means2d, radii, depths, width, height)
    starts = torch.cumsum(counts, 0) - counts

    # Local pixel centres of a tile, offset per tile below.
    local = torch.arange(TILE * TILE, device=device)
    local_xy = torch.stack([local % TILE, local // TILE], dim=-1).to(dtype) + 0.5  # [P,2]

    # Tiles in decreasing order of load so that each chunk pads little.
    tile_order = torch.sort(counts, descending=True, stable=True).indices
    sorted_counts = counts[tile_order].tolist()
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities_eff, colors, background))
    out_rgb, out_t = [], []
    begin = 0
    while begin < n_tiles:
        kmax = sorted_counts[begin]
        end = min(n_tiles, begin + CHUNK_TILES)
        tiles = tile_order[begin:end]  # [B]
        n_b = tiles.shape[0]
        if kmax == 0:  # only background is left
            out_rgb.append(background.expand(n_b, TILE * TILE, n_ch))
            out_t.append(torch.ones(n_b, TILE * TILE, dtype=dtype, device=device))
            begin = end
            continue
        slot = torch.arange(kmax, device=device)
        valid = slot.unsqueeze(0) < counts[tiles].unsqueeze(1)  # [B,K]
        pos = (starts[tiles].unsqueeze(1) + slot.unsqueeze(0)).clamp_max(ids.shape[0] - 1)
        gids = torch.where(valid, ids[pos], torch.zeros_like(pos))
        origin = torch.stack([tiles % tiles_x, torch.div(tiles, tiles_x, rounding_mode="floor")], dim=-1)
        pix = origin.to(dtype).unsqueeze(1) * TILE + local_xy  # [B,P,2]
        args = (means2d, conics, opacities_eff, colors, background, gids, valid, pix, alpha_min, t_min)
        rgb, trans = checkpoint(_blend_tiles, *args, use_reentrant=False) if grad else _blend_tiles(*args)
        out_rgb.append(rgb)
        out_t.append(trans)
        begin = end

    inverse = torch.empty_like(tile_order)
    inverse[tile_order] = torch.arange(n_tiles, device=device)
    rgb = torch.cat(out_rgb)[inverse]  # [T,P,C] in raster tile order
    trans = torch.cat(out_t)[inverse]  # [T,P]

    def untile(x: Tensor) -> Tensor:  # [T,P,D] -> [H,W,D]
        d = x.shape[-1]
        x = x.reshape(tiles_y, tiles_x, TILE, TILE, d).permute(0, 2, 1, 3, 4)
        return x.reshape(tiles_y * TILE, tiles_x * TILE, d)[:height, :width]

    image = untile(rgb)
    alpha = 1.0 - untile(trans.unsqueeze(-1))
    return image, alpha
