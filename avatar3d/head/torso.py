"""A torso proxy below the rig's neck: shoulders and chest as a surface that Gaussians can be bound to.

Head rigs stop at the neck. A portrait needs the shoulders, clothes and hair over them, and they must stay attached
when the camera orbits or the head turns, so the torso is part of the 3D avatar, not a pasted image. The proxy is a
parametric surface (`TorsoShape`: shoulder width, how far the shoulders drop, chest depth, length) swept around the
body's vertical axis: for each direction around the axis, a profile leaves the neck's base ring, slopes down and out
along the trapezius to the shoulder (a quadratic Bézier, rounded at the shoulder's edge), then falls straight down
the upper arm and chest. Its cross-section is a superellipse (boxier than an ellipse, as shoulders are).

`attach_torso` appends it to a rig: its vertices are skinned wholly to the root joint, as the rigs' own neck skin is,
so the torso follows the body's rotation and translation while the head turns on the neck above it and there is no
seam where the two meet. Each column of the sweep takes the identity and expression shapes of the neck vertex it
starts at, so a subject's own neck carries the torso with it; the torso's own proportions come from the `TorsoShape`
fitted to them. Its triangles carry the region "torso".
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.head.rig import HeadRig

NECK_BAND = 0.012  # metres above and below the neck base whose neck vertices give its ring
SEGMENTS = 40  # vertices around each ring of the sweep (torso_mesh: ring by ring, the neck's ring first)
SUPERELLIPSE_POWER = 4.0  # the torso's cross-section: |x/a|^p + |z/b|^p = 1
SLOPE_RINGS = 8  # bands of the sweep from the neck ring to the shoulder's edge


@dataclass
class TorsoShape:
    """The proxy's proportions, metres (defaults: an average adult)."""

    shoulder_width: float = 0.40
    """From one shoulder's outer edge to the other."""
    shoulder_drop: float = 0.07
    """How far the shoulder's edge lies below the neck's base."""
    chest_depth: float = 0.22
    """Front to back at the chest."""
    length: float = 0.32
    """From the neck's base down to where the proxy ends (below the frame's edge in a portrait)."""
    rounding: float = 0.05
    """Radius over which the shoulder turns from the slope into the upper arm."""
    fall_rings: int = 6
    """Bands of the straight part below the shoulder (the fit makes them about FALL_BAND tall)."""

    def check(self) -> "TorsoShape":
        for name in ("shoulder_width", "chest_depth", "length", "rounding"):
            if not getattr(self, name) > 0:
                raise InputError(f"torso {name} must be a positive number of metres, got {getattr(self, name)}")
        if not (isinstance(self.fall_rings, int) and self.fall_rings >= 1):
            raise InputError(f"torso fall_rings must be a whole number of bands, at least 1, got {self.fall_rings}")
        if not 0 <= self.shoulder_drop < self.length - self.rounding:
            raise InputError(f"torso shoulder_drop must be in [0, length - rounding), got {self.shoulder_drop}")
        return self


@dataclass
class Section:
    """The rig's surface cut by a horizontal plane: segments in (x, z), each end a point on a triangle edge."""

    points: Tensor  # [M,2,2] segment ends (x, z)
    edges: Tensor  # [M,2,2] int64 the rig vertices (i, j) of the edge each end lies on
    t: Tensor  # [M,2] where on that edge: (1 - t) v_i + t v_j

    def weights(self, segment: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:  # [K], [K] -> [K,4] idx, [K,4] w
        """The point `s` of the way along each given segment, as a weighted sum of four rig vertices."""
        e, t = self.edges[segment], self.t[segment]  # [K,2,2], [K,2]
        idx = e.reshape(-1, 4)
        w = torch.stack([(1 - s) * (1 - t[:, 0]), (1 - s) * t[:, 0], s * (1 - t[:, 1]), s * t[:, 1]], 1)
        return idx, w


@dataclass
class NeckBase:
    """The ring where the torso meets the neck: centre (x, y, z), the ring's half-width and half-depth, and the
    rig's cross-section at that height that the ring follows exactly."""

    centre: Tensor  # [3]
    half_width: float
    half_depth: float
    section: Section  # the rig's surface cut by the plane y = centre[1]

    def crossing(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # theta: [K] -> radius [K], hit [K] bool, segment [K] int64, s [K]
        """Along each ray (sin θ, cos θ) from the centre: the distance to the section's outermost crossing, whether
        the ray meets the section at all (a rig's neck may end above this height on some sides), and which segment
        it meets where (s of the way from its first end)."""
        d = torch.stack([theta.sin(), theta.cos()], 1)  # [K,2] ray directions in (x, z)
        points = self.section.points
        a = points[:, 0] - self.centre[[0, 2]]  # [M,2]
        e = points[:, 1] - points[:, 0]  # [M,2]
        cross = lambda u, v: u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]  # noqa: E731
        denom = cross(d[:, None], e[None])  # [K,M]; the ray r d meets a + s e at r = a×e / d×e, s = a×d / d×e
        safe = torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom))
        r, s = cross(a[None], e[None]) / safe, cross(a[None], d[:, None]) / safe
        hit = (denom.abs() > 1e-12) & (s >= 0) & (s <= 1) & (r > 0)
        far, segment = torch.where(hit, r, torch.zeros_like(r)).max(1)
        return far, hit.any(1), segment, s.gather(1, segment[:, None])[:, 0].clamp(0, 1)

    def radius(self, theta: Tensor) -> Tensor:  # theta: [K] evenly spaced over the circle -> [K]
        """The ring: on the section where the rays meet it, interpolated around the circle between those
        directions where they do not (the ellipse of the half-width and half-depth when none do)."""
        ellipse = 1.0 / torch.sqrt((theta.sin() / self.half_width) ** 2 + (theta.cos() / self.half_depth) ** 2)
        if len(self.section.points) == 0:
            return ellipse
        r, hit, _, _ = self.crossing(theta)
        if not bool(hit.any()):
            return ellipse
        k, idx = len(theta), torch.nonzero(hit).flatten()
        pos = torch.arange(k, dtype=torch.float64)
        xs = torch.cat([idx - k, idx, idx + k]).double()  # periodic copies for the wrap-around
        ys = r[idx].repeat(3)
        right = torch.searchsorted(xs, pos).clamp(1, len(xs) - 1)
        w = (pos - xs[right - 1]) / (xs[right] - xs[right - 1])
        return torch.where(hit, r, ys[right - 1] + w * (ys[right] - ys[right - 1]))


def neck_base(rig: HeadRig) -> NeckBase:
    """The neck's ring at the root joint's height (below it the rigs' necks flare into a collar, which the torso
    replaces), from the neck vertices of the rig's mean identity within NECK_BAND of that height."""
    neck = rig.region("neck")
    if not bool(neck.any()):
        raise InputError(f"the head model {rig.name!r} marks no neck vertices, so a torso cannot be attached; "
                         f"use a head model with a neck region (ICT-FaceKit, FLAME)")
    verts = rig.template.detach().double().cpu()
    height = float((rig.joint_regressor.detach().double().cpu() @ verts)[0, 1])
    band = verts[neck.cpu() & ((verts[:, 1] - height).abs() < NECK_BAND)]
    if len(band) < 8:
        raise InputError(f"the head model {rig.name!r} has too few neck vertices at its root joint's height to "
                         f"attach a torso; use a head model whose neck reaches below the root joint")
    lo, hi = band.min(0).values, band.max(0).values
    centre = torch.tensor([0.5 * float(lo[0] + hi[0]), height, 0.5 * float(lo[2] + hi[2])], dtype=torch.float64)
    faces = rig.faces.cpu()[rig.renderable_faces().cpu()]  # below the head only the neck's skin crosses it
    return NeckBase(centre, 0.5 * float(hi[0] - lo[0]), 0.5 * float(hi[2] - lo[2]), plane_section(verts, faces, height))


def plane_section(verts: Tensor, faces: Tensor, height: float) -> Section:  # verts: [V,3], faces: [F,3]
    """Where the triangles cross the plane y = height: a segment per crossing triangle, between the points where
    two of its edges cross."""
    y = verts[faces][..., 1] - height  # [F,3]
    crossing = (y.min(1).values < 0) & (y.max(1).values > 0)
    tri, yt, fc = verts[faces[crossing]], y[crossing], faces[crossing]  # [C,3,3], [C,3], [C,3]
    pts, ts, edges, on = [], [], [], []
    for i, j in ((0, 1), (1, 2), (2, 0)):
        gap = yt[:, i] - yt[:, j]
        t = yt[:, i] / gap.where(gap.abs() > 1e-15, torch.ones_like(gap))
        pts.append((tri[:, i] + t[:, None] * (tri[:, j] - tri[:, i]))[:, [0, 2]])
        ts.append(t)
        edges.append(torch.stack([fc[:, i], fc[:, j]], 1))
        on.append((yt[:, i] < 0) != (yt[:, j] < 0))
    on_t = torch.stack(on, 1)  # [C,3]
    keep = on_t.sum(1) == 2  # each crossing triangle has exactly two crossing edges: its segment joins their points
    order = torch.argsort(on_t[keep].long(), dim=1, descending=True, stable=True)[:, :2]  # [C',2]
    pick = lambda x: torch.gather(x[keep], 1, order.reshape(order.shape + (1,) * (x.dim() - 2)).expand(  # noqa: E731
        (-1, -1) + x.shape[2:]))
    return Section(pick(torch.stack(pts, 1)), pick(torch.stack(edges, 1)), pick(torch.stack(ts, 1)))


def _superellipse_radius(theta: Tensor, a: float, b: float) -> Tensor:  # theta: [K] -> [K]
    """Distance from the centre to the superellipse |x/a|^p + |z/b|^p = 1 along (sin θ, cos θ)."""
    p = SUPERELLIPSE_POWER
    return ((theta.sin().abs() / a) ** p + (theta.cos().abs() / b) ** p) ** (-1.0 / p)


def _profile(rings_slope: int, rings_fall: int) -> Tensor:  # -> [R] parameters in [0, 2]: 0..1 slope, 1..2 fall
    slope = torch.linspace(0.0, 1.0, rings_slope + 1, dtype=torch.float64)
    fall = torch.linspace(1.0, 2.0, rings_fall + 1, dtype=torch.float64)[1:]
    return torch.cat([slope, fall])


def torso_mesh(base: NeckBase, shape: TorsoShape, segments: int = SEGMENTS, rings_slope: int = SLOPE_RINGS,
               rings_fall: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
    """(vertices [N,3] float64 rig space, faces [M,3] int64 counter-clockwise seen from outside, profile [N] in
    [0, 2]: 0 the neck ring, 1 the shoulder's rounded edge, 2 the bottom) of the proxy swept around the body.
    rings_fall: the straight part's bands (default: the shape's fall_rings)."""
    shape.check()
    rings_fall = shape.fall_rings if rings_fall is None else int(rings_fall)
    theta = torch.arange(segments, dtype=torch.float64) * (2.0 * math.pi / segments)  # 0: front (+z)
    radial_dir = torch.stack([theta.sin(), torch.zeros_like(theta), theta.cos()], 1)  # [K,3]
    neck_r = base.radius(theta)
    outer_r = _superellipse_radius(theta, 0.5 * shape.shoulder_width, 0.5 * shape.chest_depth)
    outer_r = torch.maximum(outer_r, neck_r + 1e-3)
    top = base.centre[1]
    # the shoulder's edge is lowest at the sides; front and back (chest, upper back) fall less
    side = theta.sin() ** 2
    corner_y = top - shape.shoulder_drop * side - 0.35 * shape.shoulder_drop * (1 - side)
    s = _profile(rings_slope, rings_fall)  # [R]
    radius = torch.empty(len(s), segments, dtype=torch.float64)
    height = torch.empty_like(radius)
    slope = s <= 1.0
    t = s[slope][:, None]
    end_y = corner_y - shape.rounding
    # Bézier from the neck ring (r_n, top) through the corner (r_o, corner_y) to (r_o, corner_y - rounding)
    radius[slope] = (1 - t) ** 2 * neck_r + 2 * t * (1 - t) * outer_r + t ** 2 * outer_r
    height[slope] = (1 - t) ** 2 * top + 2 * t * (1 - t) * corner_y + t ** 2 * end_y
    u = (s[~slope] - 1.0)[:, None]
    radius[~slope] = outer_r.expand(int((~slope).sum()), -1)
    height[~slope] = end_y + u * ((top - shape.length) - end_y)
    verts = base.centre + radius[..., None] * radial_dir  # [R,K,3]
    verts[..., 1] = height
    faces = _grid_faces(len(s), segments)
    return verts.reshape(-1, 3), faces, s[:, None].expand(-1, segments).reshape(-1)


def _grid_faces(rings: int, segments: int) -> Tensor:  # -> [2*(rings-1)*segments, 3]
    """Two triangles per quad of the (ring, segment) grid, wrapping around; outward with the sweep above (θ turns
    from the front towards +x, rings go down). Triangle 2 (band K + segment) + half: band b lies between rings b and
    b + 1 (`grid_cells` reads it back)."""
    r = torch.arange(rings - 1)[:, None]
    k = torch.arange(segments)[None]
    a = r * segments + k
    b = r * segments + (k + 1) % segments
    c = a + segments
    d = b + segments
    tri = torch.stack([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)], 2)  # [R-1,K,2,3]
    return tri.reshape(-1, 3).long()


def _neck_weights(rig: HeadRig, base: NeckBase, verts: Tensor, profile: Tensor) -> tuple[Tensor, Tensor]:
    # -> [N,4] rig vertex indices, [N,4] weights
    """Per torso vertex, the rig surface point at the top of its column as a weighted sum of rig vertices (the
    section's edge points; the nearest neck vertex where the column's ray missed the section): the torso takes that
    point's identity and expression shapes, so a person's own neck carries it and the join stays closed."""
    top = profile == 0
    columns = int(top.sum())
    ring = verts[top]  # [K,3]
    theta = torch.atan2(ring[:, 0] - base.centre[0], ring[:, 2] - base.centre[2])
    neck = torch.nonzero(rig.region("neck")).flatten().cpu()
    nearest = neck[torch.cdist(ring, rig.template.detach().double().cpu()[neck]).argmin(1)]  # [K]
    idx = nearest[:, None].repeat(1, 4)
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).repeat(columns, 1)
    if len(base.section.points):
        _, hit, segment, s = base.crossing(theta)
        on_idx, on_w = base.section.weights(segment, s)
        idx, w = torch.where(hit[:, None], on_idx, idx), torch.where(hit[:, None], on_w, w)
    column = torch.arange(len(verts)) % columns
    return idx[column], w[column]


def grid_cells(rig: HeadRig, faces: Tensor) -> Tensor:  # faces: [F] int64 indices into rig.faces -> [F,3]
    """(band, segment, half) of each torso triangle of the sweep's grid (band 0 at the neck; the straight part from
    band `rig.meta["torso_grid"]["slope_bands"]` down), -1 for triangles that are not the torso's."""
    grid = rig.meta["torso_grid"]
    j = faces - grid["first_face"]
    k = grid["segments"]
    cells = torch.stack([j // (2 * k), (j // 2) % k, j % 2], 1)
    on = (j >= 0) & (j < 2 * k * grid["bands"])
    return torch.where(on[:, None], cells, torch.full_like(cells, -1))


def attach_torso(rig: HeadRig, shape: TorsoShape, base: Optional[NeckBase] = None, **mesh_options) -> HeadRig:
    """A copy of `rig` with the torso proxy appended (vertices after the rig's, triangles after its triangles, region
    "torso", skinned to the root joint, each column moving with its neck vertex's identity and expression shapes).
    The rig's own vertices, triangles and joints are unchanged, so everything bound to them stays valid; the checksum
    stays the base rig's (the torso belongs to the avatar). `base`: the rig's neck_base, when already at hand."""
    base = base if base is not None else neck_base(rig)
    verts, faces, profile = torso_mesh(base, shape, **mesh_options)
    segments = int(mesh_options.get("segments", SEGMENTS))
    grid = {"first_face": rig.num_faces, "segments": segments, "bands": len(verts) // segments - 1,
            "slope_bands": int(mesh_options.get("rings_slope", SLOPE_RINGS))}
    n, v0 = len(verts), rig.num_vertices
    like = lambda t, *size: t.new_zeros(*size)  # noqa: E731
    idx, w = _neck_weights(rig, base, verts, profile)  # where on the neck each torso vertex's column starts
    carry = lambda basis: (basis[idx.to(rig.device)] * w.to(basis)[..., None, None]).sum(1)  # noqa: E731
    weights = like(rig.lbs_weights, n, rig.lbs_weights.shape[1])
    weights[:, 0] = 1.0
    regions = {name: torch.cat([mask, mask.new_zeros(n)]) for name, mask in rig.regions.items()}
    regions["torso"] = torch.cat([torch.zeros(v0, dtype=torch.bool, device=rig.device),
                                  torch.ones(n, dtype=torch.bool, device=rig.device)])
    out = dataclasses.replace(
        rig,
        template=torch.cat([rig.template, verts.to(rig.template)]),
        faces=torch.cat([rig.faces, faces.to(rig.faces) + v0]),
        shape_basis=torch.cat([rig.shape_basis, carry(rig.shape_basis)]),
        expr_basis=torch.cat([rig.expr_basis, carry(rig.expr_basis)]),
        joint_regressor=torch.cat([rig.joint_regressor, like(rig.joint_regressor, rig.joint_regressor.shape[0], n)], 1),
        lbs_weights=torch.cat([rig.lbs_weights, weights]),
        pose_correctives=torch.cat([rig.pose_correctives,
                                    like(rig.pose_correctives, n, 3, rig.pose_correctives.shape[2])]),
        regions=regions,
        meta={**rig.meta, "cache_key": rig.checksum(), "torso": dataclasses.asdict(shape), "torso_grid": grid},
    )
    if rig.face_uvs is not None and rig.uvs is not None:  # the torso gets no texture: its faces use uv (0, 0)
        out.uvs = torch.cat([rig.uvs, rig.uvs.new_zeros(1, 2)])
        out.face_uvs = torch.cat([rig.face_uvs, rig.face_uvs.new_full((len(faces), 3), len(rig.uvs))])
    return out


# ------------------------------------------------------------------------------------------ the avatar's torso
TORSO_JSON = "torso.json"


def save_torso(folder: Path, shape: TorsoShape, info: Optional[dict] = None) -> None:
    """AVATAR/torso.json: the fitted proportions (and how the fit went); its presence makes the avatar a portrait."""
    from avatar3d.io.atomic import atomic_write_json

    atomic_write_json(Path(folder) / TORSO_JSON, {"shape": dataclasses.asdict(shape.check()), "info": info or {}})


def load_torso(folder: Path) -> Optional[TorsoShape]:
    """The avatar's torso proportions, or None for a head-only avatar."""
    import json

    path = Path(folder) / TORSO_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return TorsoShape(**data["shape"]).check()
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"the avatar's {TORSO_JSON} is damaged ({type(err).__name__}); re-enroll it") from None


def avatar_rig(rig: HeadRig, folder: Path) -> HeadRig:
    """The rig an avatar in `folder` is bound to: the head model, with the avatar's torso when it has one (a rig
    that already carries a torso is returned as it is)."""
    if "torso" in rig.meta:
        return rig
    shape = load_torso(folder)
    return rig if shape is None else attach_torso(rig, shape)
