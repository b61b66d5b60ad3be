"""A z-buffer triangle rasterizer in plain PyTorch: the ground-truth renderer of the synthetic subject.

Deliberately a *different representation* from the Gaussian avatar (a textured triangle mesh), so
comparing the two measures something. Not differentiable (not needed); vectorised, no Python loop over
pixels or triangles:

1. project the vertices (OpenCV camera, pixel centres at +0.5, the same `K`/`viewmat` as the Gaussian
   rasterizer), drop triangles behind the near plane, cull back faces;
2. expand every triangle into the pixel centres of its bounding box, in chunks of bounded size;
3. keep the pixel centres inside the triangle (edge functions, inclusive so shared edges leave no
   cracks) and resolve visibility with one `scatter_reduce(amin)` on a packed int64 key
   (depth's float32 bits << 32 | triangle id: positive floats order like their bit patterns, and ties
   go to the lower triangle id, so the result is deterministic);
4. for the winning triangle per pixel: perspective-correct barycentrics, UVs, bilinear texture lookup,
   smooth normals, Lambert + ambient shading.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.errors import InputError

NEAR = 1e-3  # metres: triangles with a vertex closer than this to the camera plane are dropped
CHUNK = 1 << 21  # (triangle, pixel) candidates per chunk: bounds peak memory to a few hundred MB
_NO_KEY = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Per-pixel visibility of a rasterized mesh."""

    face_id: Tensor  # [H,W] int64, -1 where no triangle covers the pixel centre
    bary: Tensor  # [H,W,3] perspective-correct barycentrics of the visible triangle (0 where none)
    depth: Tensor  # [H,W] camera-space z of the visible surface (inf where none)
    front: Tensor  # [H,W] bool, True where the visible triangle faces the camera

    @property
    def mask(self) -> Tensor:  # [H,W] bool
        return self.face_id >= 0


@dataclass
class MeshRender:
    """The output of `render_mesh`."""

    image: Tensor  # [H,W,3] float in [0,1]
    alpha: Tensor  # [H,W,1] float, 1 where the mesh covers the pixel centre
    face_id: Tensor  # [H,W] int64, -1 = none
    depth: Tensor  # [H,W] camera-space z (inf = none)


# ------------------------------------------------------------------------------------------ checks
def _check_inputs(vertices: Tensor, faces: Tensor, K: Tensor, viewmat: Tensor, width: int, height: int) -> None:
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise InputError(f"vertices must be [V,3] world points, got shape {tuple(vertices.shape)}; pass one "
                         f"mesh at a time (index a batch with verts[b])")
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype.is_floating_point:
        raise InputError(f"faces must be an integer [F,3] tensor, got {faces.dtype} {tuple(faces.shape)}; "
                         f"pass triangle vertex indices (quads must be split first)")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise InputError(f"faces index vertices 0..{int(faces.max())} but there are {vertices.shape[0]} "
                         f"vertices; pass the faces that belong to these vertices")
    if tuple(K.shape) != (3, 3) or tuple(viewmat.shape) != (4, 4):
        raise InputError(f"K must be [3,3] and viewmat [4,4], got {tuple(K.shape)} and {tuple(viewmat.shape)}; "
                         f"build them with avatar3d.camera (intrinsics, look_at, orbit_viewmat)")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"image size {width}x{height} is not positive; pass width and height in pixels")


def _as_colour(background: Union[float, Sequence[float], Tensor], like: Tensor) -> Tensor:
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device).reshape(-1)
    if bg.numel() == 1:
        bg = bg.expand(3)
    if bg.numel() != 3:
        raise InputError(f"background must be one grey value or an RGB triple in [0,1], got {background!r}")
    return bg


# ------------------------------------------------------------------------------------------ geometry
def project_vertices(vertices: Tensor,  # [V,3] world
                     K: Tensor,  # [3,3]
                     viewmat: Tensor,  # [4,4] world->camera
                     ) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [V,2] (x right, y down, centres at +0.5) and camera z [V] of world points."""
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    safe = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    uvw = cam @ K.T
    return uvw[:, :2] / safe[:, None], z


def vertex_normals(vertices: Tensor,  # [V,3]
                   faces: Tensor,  # [F,3] int, counter-clockwise seen from outside
                   ) -> Tensor:
    """Unit area-weighted vertex normals [V,3], pointing outwards."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    n = torch.linalg.cross(b - a, c - a)  # length = 2 x area: area weighting for free
    out = torch.zeros_like(vertices)
    out.index_add_(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return F.normalize(out, dim=-1, eps=1e-12)


def rasterize_triangles(vertices: Tensor,  # [V,3] world
                        faces: Tensor,  # [F,3] int, counter-clockwise seen from outside
                        K: Tensor,  # [3,3] pixels, pixel centres at +0.5
                        viewmat: Tensor,  # [4,4] world->camera (OpenCV)
                        width: int, height: int, *, backfaces: str = "cull",
                        face_mask: Optional[Tensor] = None,  # [F] bool, triangles to draw
                        ) -> Fragments:
    """Visibility only: which triangle is nearest at every pixel centre, with its barycentrics.

    backfaces: "cull" (draw only triangles facing the camera), "draw" (two-sided: everything is
    depth-tested), or "holes" (back faces only fill pixels that no front face covers: where a surface
    that should be closed has a gap, its inside shows instead of the background; cheap, because back
    faces whose bounding box is fully covered are skipped). Face ids in the output index the full
    `faces` (also when `face_mask` leaves some out).
    """
    if backfaces not in ("cull", "draw", "holes"):
        raise InputError(f"backfaces={backfaces!r}; pass 'cull', 'draw' or 'holes'")
    _check_inputs(vertices, faces, K, viewmat, width, height)
    W, H = int(width), int(height)
    dev = vertices.device
    verts = vertices.to(torch.float64)  # float64 edge functions: exact enough that coverage tests are crisp
    pix, z = project_vertices(verts, K.to(verts), viewmat.to(verts))
    faces = faces.to(device=dev, dtype=torch.int64)
    keep = (z[faces] > NEAR).all(dim=1)
    if face_mask is not None:
        if face_mask.shape != (faces.shape[0],):
            raise InputError(f"face_mask must be [F]={faces.shape[0]} bools, got {tuple(face_mask.shape)}")
        keep &= face_mask.to(dev, torch.bool)
    p = pix[faces]  # [F,3,2]
    # signed doubled area in pixels; with y down, a triangle counter-clockwise in the world as seen
    # from the camera has a negative area here
    area = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
            - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
    keep &= area.abs() > 1e-12
    facing = area < 0
    # pixel index ranges whose centres (i + 0.5) fall inside the bounding box
    lo = torch.ceil(p.amin(dim=1) - 0.5).clamp_min(0)
    hi = torch.floor(p.amax(dim=1) - 0.5)
    hi = torch.minimum(hi, torch.tensor([W - 1.0, H - 1.0], dtype=hi.dtype, device=dev))
    size = (hi - lo + 1).clamp_min(0)
    count = (size[:, 0] * size[:, 1]).to(torch.int64)
    keep &= count > 0
    lo, width_px = lo.to(torch.int64), size[:, 0].to(torch.int64)

    coef = _plane_coefficients(p, z, faces, area)  # [F,3,3]
    zbuf = torch.full((H * W,), _NO_KEY, dtype=torch.int64, device=dev)
    first = keep & facing if backfaces != "draw" else keep
    _zbuffer(torch.nonzero(first).squeeze(1), count, lo, width_px, coef, W, zbuf)
    if backfaces == "holes":
        hole = zbuf == _NO_KEY
        back = keep & ~facing
        back &= _box_sums(hole.reshape(H, W), lo, lo + size.to(torch.int64)) > 0  # boxes with a hole in them
        if bool(back.any()):
            fill = torch.full_like(zbuf, _NO_KEY)
            _zbuffer(torch.nonzero(back).squeeze(1), count, lo, width_px, coef, W, fill)
            zbuf = torch.where(hole, fill, zbuf)
    face_id = torch.where(zbuf == _NO_KEY, torch.full_like(zbuf, -1), zbuf & 0xFFFFFFFF)
    face_id = face_id.reshape(H, W)
    bary, depth = _barycentrics(face_id, coef)
    front = facing[face_id.clamp_min(0)] & (face_id >= 0)
    return Fragments(face_id=face_id, bary=bary.to(vertices.dtype), depth=depth.to(vertices.dtype), front=front)


def _zbuffer(ids: Tensor, count: Tensor, lo: Tensor, width_px: Tensor, coef: Tensor, W: int, zbuf: Tensor) -> None:
    """Depth-test triangles `ids` [T] into `zbuf` [H*W], in chunks of about CHUNK candidates.

    count: [F] bounding-box pixels, lo: [F,2] int first pixel (x, y), width_px: [F] int box widths."""
    if not ids.numel():
        return
    cum = torch.cumsum(count[ids], 0)
    starts = torch.searchsorted(cum, torch.arange(0, int(cum[-1]), CHUNK, device=ids.device), right=True)
    bounds = torch.cat([starts, torch.tensor([ids.numel()], device=ids.device)]).unique_consecutive()
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        part = ids[s:e]
        _zbuffer_chunk(part, count[part], lo[part], width_px[part], coef, W, zbuf)


def _box_sums(mask: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """mask: [H,W] bool, boxes [lo, hi) as [F,2] int (x, y) -> [F] number of True pixels in each box."""
    H, W = mask.shape
    sat = torch.zeros(H + 1, W + 1, dtype=torch.int64, device=mask.device)  # summed-area table
    sat[1:, 1:] = mask.to(torch.int64).cumsum(0).cumsum(1)
    x0, y0 = lo[:, 0].clamp(0, W), lo[:, 1].clamp(0, H)
    x1, y1 = hi[:, 0].clamp(0, W), hi[:, 1].clamp(0, H)
    return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]


def _plane_coefficients(p: Tensor, z: Tensor, faces: Tensor, area: Tensor) -> Tensor:
    """p: [F,3,2] pixel corners, z: [V] camera depth, area: [F] doubled signed area -> [F,3,3].

    Row k holds (a, b, c) with q_k(x, y) = a x + b y + c = (screen barycentric k) / z_k. The q_k are
    linear in screen space; a pixel centre is inside when all q_k >= 0 (z > 0), 1/z = sum_k q_k, and the
    perspective-correct barycentrics are q_k / sum q.
    """
    coef = torch.empty(p.shape[0], 3, 3, dtype=p.dtype, device=p.device)
    zf = z[faces]  # [F,3]
    safe = torch.where(area != 0, area, torch.ones_like(area))
    for k in range(3):  # edge opposite corner k, from corner k+1 to k+2
        a, b = p[:, (k + 1) % 3], p[:, (k + 2) % 3]
        scale = 1.0 / (safe * zf[:, k])
        coef[:, k, 0] = -(b[:, 1] - a[:, 1]) * scale
        coef[:, k, 1] = (b[:, 0] - a[:, 0]) * scale
        coef[:, k, 2] = ((b[:, 1] - a[:, 1]) * a[:, 0] - (b[:, 0] - a[:, 0]) * a[:, 1]) * scale
    return coef


def _zbuffer_chunk(tri: Tensor, n: Tensor, lo: Tensor, box_w: Tensor, coef: Tensor, W: int, zbuf: Tensor) -> None:
    """Depth-test the bounding-box pixels of triangles `tri` [T] into `zbuf` [H*W] (packed keys, in place).

    n: [T] pixels per box, lo: [T,2] first pixel (x, y) of each box, box_w: [T] box widths."""
    slot = torch.repeat_interleave(torch.arange(tri.numel(), device=tri.device), n)  # [C] box of each candidate
    first = torch.cumsum(n, 0) - n
    local = torch.arange(slot.numel(), device=tri.device) - first[slot]
    bw = box_w[slot]
    px = lo[slot, 0] + local % bw
    py = lo[slot, 1] + local // bw
    c = coef[tri][slot]  # [C,3,3]
    q = c[..., 0] * (px.to(c.dtype) + 0.5)[:, None] + c[..., 1] * (py.to(c.dtype) + 0.5)[:, None] + c[..., 2]
    inside = q.amin(dim=1) >= 0
    if not bool(inside.any()):
        return
    q, slot, px, py = q[inside], slot[inside], px[inside], py[inside]
    depth = (1.0 / q.sum(dim=1)).to(torch.float32)
    key = (depth.contiguous().view(torch.int32).to(torch.int64) << 32) | tri[slot]
    zbuf.scatter_reduce_(0, py * W + px, key, reduce="amin", include_self=True)


def _barycentrics(face_id: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics [H,W,3] and depth [H,W] of the visible triangle per pixel."""
    H, W = face_id.shape
    bary = torch.zeros(H, W, 3, dtype=coef.dtype, device=coef.device)
    depth = torch.full((H, W), float("inf"), dtype=coef.dtype, device=coef.device)
    py, px = torch.nonzero(face_id >= 0, as_tuple=True)
    if py.numel():
        c = coef[face_id[py, px]]
        q = c[..., 0] * (px.to(c.dtype) + 0.5)[:, None] + c[..., 1] * (py.to(c.dtype) + 0.5)[:, None] + c[..., 2]
        inv_z = q.sum(dim=1, keepdim=True)
        bary[py, px] = (q / inv_z).clamp_min(0.0)
        depth[py, px] = 1.0 / inv_z[:, 0]
    return bary, depth


def interpolate(attr: Tensor,  # [N,C] per-vertex (or per-uv) values
                index: Tensor,  # [F,3] int into attr, the same triangles as the fragments'
                frags: Fragments) -> Tensor:
    """Perspective-correct per-pixel values [H,W,C] (0 where no triangle)."""
    H, W = frags.face_id.shape
    out = torch.zeros(H, W, attr.shape[1], dtype=attr.dtype, device=attr.device)
    hit = frags.mask
    f = frags.face_id[hit]
    corners = attr[index.to(attr.device)[f]]  # [P,3,C]
    out[hit] = (corners * frags.bary[hit].to(attr.dtype)[..., None]).sum(dim=1)
    return out


def sample_texture(texture: Tensor,  # [Ht,Wt,C]
                   uv: Tensor,  # [...,2] OBJ convention: v up, texel centres at (i + 0.5) / size
                   ) -> Tensor:
    """Bilinear lookup, clamped at the border -> [...,C]."""
    Ht, Wt, C = texture.shape
    flat = uv.reshape(-1, 2).to(texture.dtype)
    x = (flat[:, 0] * Wt - 0.5).clamp(0, Wt - 1)
    y = ((1.0 - flat[:, 1]) * Ht - 0.5).clamp(0, Ht - 1)
    x0, y0 = x.floor().long().clamp(max=Wt - 2 if Wt > 1 else 0), y.floor().long().clamp(max=Ht - 2 if Ht > 1 else 0)
    x1, y1 = (x0 + 1).clamp(max=Wt - 1), (y0 + 1).clamp(max=Ht - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).reshape(*uv.shape[:-1], C)


# ------------------------------------------------------------------------------------------ shading
def render_mesh(vertices: Tensor,  # [V,3] world
                faces: Tensor,  # [F,3] int, counter-clockwise seen from outside
                K: Tensor,  # [3,3] pixels, pixel centres at +0.5
                viewmat: Tensor,  # [4,4] world->camera (OpenCV)
                width: int, height: int, *,
                uvs: Optional[Tensor] = None,  # [T,2]
                face_uvs: Optional[Tensor] = None,  # [F,3] int into uvs
                texture: Optional[Tensor] = None,  # [Ht,Wt,3] albedo in [0,1]
                vertex_colors: Optional[Tensor] = None,  # [V,3] albedo when there is no texture
                background: Union[float, Sequence[float], Tensor] = 0.0,  # grey or RGB
                light_dir: Union[Sequence[float], Tensor] = (0.3, 0.4, 1.0),  # [3] world, towards the light
                ambient: float = 0.45, diffuse: float = 0.6, backfaces: str = "cull",
                face_mask: Optional[Tensor] = None,  # [F] bool, triangles to draw
                shading: bool = True, backface_color: Optional[Sequence[float]] = None) -> MeshRender:
    """Render a textured (or vertex-coloured) triangle mesh with Lambert + ambient shading.

    colour = albedo x (ambient + diffuse x max(0, n.l)) with smooth (interpolated) normals, clamped to
    [0,1]; pixels no triangle covers get the background.
    backfaces: "cull", "draw" or "holes" (see `rasterize_triangles`); backface_color: RGB, when given the
    visible back faces are painted in this flat colour (e.g. a dark inside seen through a gap).
    """
    frags = rasterize_triangles(vertices, faces, K, viewmat, width, height, backfaces=backfaces,
                                face_mask=face_mask)
    H, W = frags.face_id.shape
    dtype = vertices.dtype if vertices.is_floating_point() else torch.float32
    bg = _as_colour(background, vertices.to(dtype))
    hit = frags.mask
    if texture is not None:
        if uvs is None or face_uvs is None:
            raise InputError("a texture needs uvs [T,2] and face_uvs [F,3]; pass both (HeadRig.uvs, .face_uvs)")
        if texture.dim() != 3 or texture.shape[2] != 3:
            raise InputError(f"texture must be [Ht,Wt,3] RGB in [0,1], got shape {tuple(texture.shape)}")
        if tuple(face_uvs.shape) != tuple(faces.shape):
            raise InputError(f"face_uvs {tuple(face_uvs.shape)} must match faces {tuple(faces.shape)}; pass the "
                             f"uv triangles of the same mesh")
        uv = interpolate(uvs.to(dtype), face_uvs, frags)  # [H,W,2]
        albedo = sample_texture(texture.to(dtype), uv)
    elif vertex_colors is not None:
        albedo = interpolate(vertex_colors.to(dtype), faces, frags)
    else:
        albedo = torch.ones(H, W, 3, dtype=dtype, device=vertices.device)
    if shading:
        normals = interpolate(vertex_normals(vertices.to(dtype), faces.to(vertices.device).long()), faces, frags)
        normals = F.normalize(normals, dim=-1, eps=1e-12)
        light = F.normalize(torch.as_tensor(light_dir, dtype=dtype, device=vertices.device).reshape(3), dim=0)
        lambert = (normals @ light).clamp_min(0.0)[..., None]
        colour = albedo * (ambient + diffuse * lambert)
    else:
        colour = albedo
    if backface_color is not None:
        inside = _as_colour(backface_color, albedo)
        colour = torch.where(frags.front[..., None], colour, inside.expand(H, W, 3))
    colour = colour.clamp(0.0, 1.0)
    alpha = hit[..., None].to(dtype)
    image = torch.where(hit[..., None], colour, bg.expand(H, W, 3))
    return MeshRender(image=image, alpha=alpha, face_id=frags.face_id, depth=frags.depth)


__all__ = ["Fragments", "MeshRender", "rasterize_triangles", "render_mesh", "interpolate", "sample_texture",
           "project_vertices", "vertex_normals"]
