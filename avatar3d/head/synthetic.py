"""A small synthetic head rig built in code (deterministic, no data files): for tests and the demo.

Geometry (metres, rig space: x subject's left, y up, z out of the face):
* skin: one grid of rays from a centre inside the head (rows from the crown to the bottom of the neck,
  columns around the head, denser over the face). Each ray ends on the smooth union of a skull
  ellipsoid, a jaw ellipsoid and a neck cylinder; the face is then shaped by height offsets (nose,
  brow ridge, cheekbones, lips, chin) and by eye sockets whose lids lie on an ellipsoid just outside
  each eyeball, with an almond-shaped opening pushed behind the eyeball so the eye shows through.
* a lip slit: the grid row through the mouth is split (the lower lip gets its own vertices), so the
  mouth opens when the jaw turns; behind it a mouth-interior pocket and two teeth rows.
* two rigid spherical eyeballs (separate meshes, front pole = pupil), joints at their centres.
* a tiny "helper" strip inside the head (never rendered: tests check that renderers skip it).

Rigging follows FLAME: root (neck base), neck (head on the neck), jaw (lower face, lower lip, lower
teeth), left/right eye (eyeballs). Eyelids follow the eye rotation through pose correctives that are
exactly the linearised rotation of the lid about the eye centre, weighted per vertex. Identity shapes:
head width, face length, nose size, jaw width. Expressions (unit = full expression, ARKit-like names,
_L = subject's left): eyeBlink_L/R, mouthSmile_L/R, browInnerUp, browDown, mouthPucker.

UVs (OBJ convention, v up) form an atlas recorded in `meta["uv_atlas"]`: the skin is a spherical
projection in u 0..0.75 (front of the face at u = 0.375, crown at v = 1); eyeballs, mouth interior
and teeth use azimuthal projections around their front pole in tiles on the right (the pupil is the
centre of each eye tile).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .rig import NUM_JOINTS, NUM_POSE_FEATURES, HeadRig

SYNTHETIC_VERSION = "synthetic-1"

# ---------------------------------------------------------------------------- layout (metres)
CENTRE = np.array([0.0, 0.02, -0.01])  # rays start here (inside skull and jaw volumes)
SKULL = (np.array([0.0, 0.02, -0.01]), np.array([0.075, 0.105, 0.095]))
JAW = (np.array([0.0, -0.035, 0.006]), np.array([0.058, 0.058, 0.074]))
NECK = dict(z=-0.025, radius=0.052, y_bottom=-0.20, y_top=-0.03)
EYE_Y, EYE_X, EYE_Z, EYE_R = 0.030, 0.031, 0.062, 0.0125
LID_R = EYE_R + 0.0012  # lids lie on an ellipsoid (LID_R * (1.45, 1, 1)) around the eye centre
LID_STRETCH_X = 1.45
OPEN_AX, OPEN_AY = 0.0115, 0.0048  # almond-shaped eye opening (half width / height)
MOUTH_Y_NOMINAL, MOUTH_HALF_W = -0.038, 0.024
BROW_Y = EYE_Y + 0.019
ROOT_JOINT = np.array([0.0, -0.16, -0.025])
NECK_JOINT = np.array([0.0, -0.06, -0.028])
JAW_JOINT = np.array([0.0, -0.012, -0.004])

SHAPE_NAMES = ("head_width", "face_length", "nose_size", "jaw_width")
EXPR_NAMES = ("eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "browDown",
              "mouthPucker")
UV_ATLAS = {  # name -> (u0, v0, u1, v1)
    "skin": (0.0, 0.0, 0.75, 1.0),
    "eyeball_left": (0.75, 0.75, 1.0, 1.0),
    "eyeball_right": (0.75, 0.5, 1.0, 0.75),
    "mouth_interior": (0.75, 0.25, 1.0, 0.5),
    "teeth_upper": (0.75, 0.0, 0.875, 0.25),
    "teeth_lower": (0.875, 0.0, 1.0, 0.25),
    "helper": (0.98, 0.48, 1.0, 0.5),
}


# ---------------------------------------------------------------------------- small helpers
def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x, c, s):
    return np.exp(-0.5 * ((x - c) / s) ** 2)


def _smax(a, b, k):
    """Smooth maximum (polynomial), blends over a width k."""
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0.0, 1.0)
    return b + (a - b) * h + 0.5 * k * h * (1.0 - h)


def _warped(n: int, lo: float, hi: float, dense: tuple[float, float], factor: float, centred: bool) -> np.ndarray:
    """n samples in [lo, hi) with `factor` x density inside `dense`; at cell centres when `centred`,
    else starting at `lo` (for a symmetric `dense`, sample n/2 is then the middle of the range)."""
    fine = np.linspace(lo, hi, 4001)
    density = np.where((fine >= dense[0]) & (fine <= dense[1]), factor, 1.0)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    cdf /= cdf[-1]
    t = (np.arange(n) + 0.5) / n if centred else np.arange(n) / n
    return np.interp(t, cdf, fine)


def _ray_ellipsoid_exit(o, d, centre, axes):
    """Far intersection distance of rays o + t d with an ellipsoid (0 where missed)."""
    oc = (o - centre) / axes
    dd = d / axes
    a = (dd * dd).sum(-1)
    b = 2 * (oc * dd).sum(-1)
    c = (oc * oc).sum(-1) - 1
    disc = b * b - 4 * a * c
    t = (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, np.maximum(t, 0), 0.0)


def _ray_neck_exit(o, d):
    """Far intersection distance with the finite neck cylinder (0 where missed)."""
    r, zc = NECK["radius"], NECK["z"]
    ox, oz = o[0], o[2] - zc
    dx, dz = d[..., 0], d[..., 2]
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - r * r
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0))
    a_safe = np.where(a > 1e-12, a, 1.0)
    t0c = np.where(a > 1e-12, (-b - sq) / (2 * a_safe), -np.inf)
    t1c = np.where(a > 1e-12, (-b + sq) / (2 * a_safe), np.inf)
    dy = np.where(np.abs(d[..., 1]) > 1e-12, d[..., 1], 1e-12)
    ta = (NECK["y_bottom"] - o[1]) / dy
    tb = (NECK["y_top"] - o[1]) / dy
    t0s, t1s = np.minimum(ta, tb), np.maximum(ta, tb)
    t0, t1 = np.maximum(t0c, t0s), np.minimum(t1c, t1s)
    hit = (disc > 0) & (t1 > t0) & (t1 > 0)
    return np.where(hit, t1, 0.0)


def _cap_sphere(n_rings: int, n_segs: int, max_polar: float):
    """Unit sphere cap around +z: front pole + rings up to `max_polar` (open at the back).

    Returns unit points [N,3], faces [F,3] (counter-clockwise seen from outside) and azimuthal
    projection coordinates [N,2] in [-1,1] (the pole at 0, the last ring on the unit circle)."""
    pts = [np.array([0.0, 0.0, 1.0])]
    proj = [np.zeros(2)]
    for k in range(1, n_rings + 1):
        pol = max_polar * k / n_rings
        for s in range(n_segs):
            az = 2 * np.pi * s / n_segs
            pts.append(np.array([np.sin(pol) * np.cos(az), np.sin(pol) * np.sin(az), np.cos(pol)]))
            proj.append(k / n_rings * np.array([np.cos(az), np.sin(az)]))
    faces = []
    for s in range(n_segs):
        faces.append((0, 1 + s, 1 + (s + 1) % n_segs))
    for k in range(n_rings - 1):
        r0, r1 = 1 + k * n_segs, 1 + (k + 1) * n_segs
        for s in range(n_segs):
            a, b = r0 + s, r0 + (s + 1) % n_segs
            c, d = r1 + s, r1 + (s + 1) % n_segs
            faces += [(a, c, d), (a, d, b)]
    pts, faces = np.array(pts), np.array(faces, dtype=np.int64)
    return pts, _orient_outward(pts, faces, np.zeros(3)), np.array(proj)


def _orient_outward(verts, faces, centre):
    """Flip triangles whose normal points towards `centre` (for star-shaped parts)."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = np.cross(b - a, c - a)
    flip = ((n * ((a + b + c) / 3 - centre)).sum(1)) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


# ---------------------------------------------------------------------------- the skin
def _face_offsets(x, y, mouth_y):
    """Height offsets (z) of the facial features at face-plane points (x, y); nose separately."""
    dz = 0.006 * _gauss(y, BROW_Y - 0.002, 0.007) * (1 - _smoothstep(0.04, 0.065, np.abs(x)))  # brow ridge
    dz += 0.006 * _gauss(np.abs(x), 0.047, 0.013) * _gauss(y, 0.004, 0.012)  # cheekbones
    dz += 0.006 * _gauss(x, 0.0, 0.017) * _gauss(y, mouth_y + 0.006, 0.0055)  # upper lip
    dz += 0.0065 * _gauss(x, 0.0, 0.015) * _gauss(y, mouth_y - 0.007, 0.0055)  # lower lip
    dz += 0.016 * _gauss(x, 0.0, 0.017) * _gauss(y, -0.074, 0.011)  # chin
    return dz


def _nose_offset(x, y):
    t = np.clip((0.05 - y) / 0.055, 0.0, 1.0)  # 0 at the bridge top, 1 at the tip
    profile = (0.003 + 0.019 * t ** 1.5) * _smoothstep(-0.019, -0.004, y) * _smoothstep(0.058, 0.045, y)
    width = 0.0055 + 0.0055 * t
    dz = profile * _gauss(x, 0.0, width)
    dz += 0.005 * (_gauss(x, 0.011, 0.0045) + _gauss(x, -0.011, 0.0045)) * _gauss(y, -0.011, 0.0045)  # alae
    return dz


def _eye_coords(x, y, side):
    """(dx, dy, rho: almond-normalised radius, e: lid-ellipsoid-normalised radius) for one eye."""
    dx = x - side * EYE_X
    dy = y - EYE_Y
    rho = np.sqrt((dx / OPEN_AX) ** 2 + (dy / OPEN_AY) ** 2)
    e = np.sqrt((dx / (LID_R * LID_STRETCH_X)) ** 2 + (dy / LID_R) ** 2)
    return dx, dy, rho, e


def _lid_z(dx, dy):
    """Depth of the closed-lid ellipsoid surface (in front of the eyeball)."""
    q = 1 - (dx / (LID_R * LID_STRETCH_X)) ** 2 - (dy / LID_R) ** 2
    return EYE_Z + LID_R * np.sqrt(np.clip(q, 0.0, 1.0))


def _eye_socket(x, y, z, side, closed: bool):
    """Skin depth with the eye socket of one eye (open or closed lids) blended in."""
    dx, dy, rho, e = _eye_coords(x, y, side)
    lid = _lid_z(dx, dy)
    r_in = 0.6 * EYE_R  # inside the opening the skin is pushed behind the eyeball's front
    inner = EYE_Z + np.sqrt(np.clip(r_in ** 2 - dx ** 2 - dy ** 2, 0.0, None))
    target = lid if closed else np.where(rho < 1.0, inner + (lid - inner) * _smoothstep(0.8, 1.0, rho), lid)
    w = 1.0 - _smoothstep(0.72, 1.0, e)
    return z + (target - z) * w


def _skin(rows: int, cols: int):
    theta = _warped(rows, 0.0, np.pi, (np.radians(52), np.radians(132)), 3.0, centred=True)
    # columns start at the back (-pi) so that, with an even count, one column is exactly at the front
    # and the grid is mirror-symmetric
    phi = _warped(cols, -np.pi, np.pi, (np.radians(-80), np.radians(80)), 3.0, centred=False)
    phi[cols // 2] = 0.0
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1)  # [R,C,3]
    d = np.concatenate([np.array([[0.0, 1.0, 0.0]]), d.reshape(-1, 3), np.array([[0.0, -1.0, 0.0]])])
    r = _smax(_ray_ellipsoid_exit(CENTRE, d, *SKULL), _ray_ellipsoid_exit(CENTRE, d, *JAW), 0.02)
    r = _smax(r, _ray_neck_exit(CENTRE, d), 0.02)
    base = CENTRE + r[:, None] * d
    return base, theta, phi


def _grid_faces(rows, cols):
    idx = 1 + np.arange(rows * cols).reshape(rows, cols)
    top, bottom = 0, rows * cols + 1
    faces = []
    for j in range(cols):
        jn = (j + 1) % cols
        faces.append((top, idx[0, j], idx[0, jn]))
        faces.append((idx[rows - 1, j], bottom, idx[rows - 1, jn]))
    for i in range(rows - 1):
        for j in range(cols):
            jn = (j + 1) % cols
            a, b, c, dd = idx[i, j], idx[i, jn], idx[i + 1, j], idx[i + 1, jn]
            faces += [(a, c, b), (b, c, dd)]
    return np.array(faces, dtype=np.int64), idx


# ---------------------------------------------------------------------------- joints
def _regressor_row(verts, mirror, candidates, target):
    """Positive weights over `candidates` (mirror-symmetric, summing to 1) whose weighted mean is `target`.

    Maximum-entropy weights w_k ~ exp(lam . (p_k - target)) over the mirror-pair midpoints p_k (x = 0),
    with lam (y, z) found by Newton's method on the convex dual; exact whenever the target lies inside
    the candidates' hull.
    """
    cand = np.unique(np.concatenate([candidates, mirror[candidates]]))
    cand = cand[cand <= mirror[cand]]  # one representative per mirror pair
    rel = (0.5 * (verts[cand] + verts[mirror[cand]]) - target)[:, 1:] / 0.05  # [K,2], well scaled
    lam = np.zeros(2)
    for _ in range(100):
        logits = rel @ lam
        w = np.exp(logits - logits.max())
        w /= w.sum()
        mean = w @ rel
        if np.abs(mean).max() < 1e-12:
            break
        cov = (rel * w[:, None]).T @ rel - np.outer(mean, mean)
        lam -= np.linalg.solve(cov + 1e-12 * np.eye(2), mean)
    row = np.zeros(len(verts))
    np.add.at(row, cand, 0.5 * w)
    np.add.at(row, mirror[cand], 0.5 * w)
    return row


def _mirror_map(verts):
    from scipy.spatial import cKDTree

    flipped = verts * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(verts).query(flipped)
    return idx, dist


# ---------------------------------------------------------------------------- build
def synthetic_rig(rows: int = 72, cols: int = 80, name: str = "synthetic") -> HeadRig:
    """The synthetic head (about 6.5k vertices): deterministic, float32, on the CPU."""
    m = _build_mesh(rows, cols)
    regions = _synthetic_regions(m)
    weights = _skinning_weights(m)
    regressor = _joint_regressor(m)
    correctives = _eye_correctives(m, regions["eyelids"])
    shape_basis = _identity_shapes(m)
    expr_basis = _expression_shapes(m)
    uvs, face_uvs = _uv_layout(rows, cols, m.theta, m.phi, m.n_grid, m.slit, m.faces_skin, m.parts, m.part_range, m.V)
    lm68 = _landmarks_68(m.verts, m.n_grid, m.n_skin, m.slit, m.corners, m.mouth_y)  # Multi-PIE order

    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    meta = {
        "source": "synthetic", "converter_version": SYNTHETIC_VERSION,
        "shape_names": list(SHAPE_NAMES), "uv_atlas": {k: list(v) for k, v in UV_ATLAS.items()},
        "mouth_y": m.mouth_y, "eye_centres": {k: v.tolist() for k, v in m.eye_centres.items()},
    }
    return HeadRig(
        name=name,
        template=f32(m.verts),
        faces=torch.from_numpy(m.faces.astype(np.int64)),
        shape_basis=f32(shape_basis),
        expr_basis=f32(expr_basis),
        joint_regressor=f32(regressor),
        lbs_weights=f32(weights),
        pose_correctives=f32(correctives),
        expr_names=list(EXPR_NAMES),
        regions={k: torch.from_numpy(v) for k, v in regions.items()},
        landmarks_68=torch.from_numpy(lm68),
        uvs=f32(uvs),
        face_uvs=torch.from_numpy(face_uvs),
        meta=meta,
    )


@dataclass
class _Mesh:
    """The synthetic head's geometry and the bookkeeping every later part (regions, weights, shapes) reads."""

    verts: np.ndarray  # [V,3] skin, then the parts
    faces: np.ndarray  # [F,3]
    faces_skin: np.ndarray  # [Fs,3] the skin's triangles (lower lip re-indexed to the slit's duplicates)
    theta: np.ndarray  # the skin grid's polar angles
    phi: np.ndarray  # the skin grid's azimuths
    n_grid: int  # skin grid vertices; the slit's duplicates (the lower lip) follow
    n_skin: int  # skin vertices, grid + duplicates
    slit: np.ndarray  # grid vertices of the lip slit (the upper lip's edge)
    corners: list  # the two mouth-corner vertices
    mouth_y: float
    z_open: np.ndarray  # [n_skin] skin depth with the eyes open
    z_closed: dict  # "L"/"R" -> [n_skin] skin depth with that eye closed
    parts: dict  # name -> (vertices, faces, projection) of the parts inside and around the skin
    part_range: dict  # name -> (first, end) vertex index
    eye_centres: dict  # "eyeball_left"/"eyeball_right" -> [3]

    @property
    def V(self) -> int:
        return len(self.verts)

    @property
    def is_skin(self) -> np.ndarray:  # [V] bool
        m = np.zeros(self.V, dtype=bool)
        m[:self.n_skin] = True
        return m

    def part_mask(self, *keys: str) -> np.ndarray:  # [V] bool
        m = np.zeros(self.V, dtype=bool)
        for k in keys:
            m[slice(*self.part_range[k])] = True
        return m


def _build_mesh(rows: int, cols: int) -> _Mesh:
    base, theta, phi = _skin(rows, cols)
    n_grid = len(base)
    faces_skin, idx = _grid_faces(rows, cols)
    slit, corners, mouth_y = _lip_slit(base, idx, faces_skin, n_grid, int(np.argmin(np.abs(phi))))
    skin_base = np.concatenate([base, base[slit]])
    skin, z_open, z_closed = _face_surface(skin_base, mouth_y)
    n_skin = len(skin)
    # mouth interior and teeth, placed from the lips' depth
    z_lip = float(skin[n_grid + int(np.argmin(np.abs(skin[n_grid:, 0])))][2])
    parts, eye_centres = _inner_parts(mouth_y, z_lip)
    verts, faces, part_range, offset = [skin], [faces_skin], {}, n_skin
    for key, (pv, pf, _) in parts.items():
        part_range[key] = (offset, offset + len(pv))
        verts.append(pv)
        faces.append(pf + offset)
        offset += len(pv)
    return _Mesh(np.concatenate(verts), np.concatenate(faces), faces_skin, theta, phi, n_grid, n_skin, slit, corners,
                 mouth_y, z_open, z_closed, parts, part_range, eye_centres)


def _lip_slit(base: np.ndarray, idx: np.ndarray, faces_skin: np.ndarray, n_grid: int, front_col: int):
    """(slit vertices, mouth corners, mouth height): the lip slit is the row nearest the nominal mouth line,
    its vertices with |x| < MOUTH_HALF_W; the triangles below it are re-indexed (in place) to duplicates of
    those vertices (numbered from `n_grid`), which become the lower lip."""
    row_y = base[idx[:, front_col], 1]
    i_m = int(np.argmin(np.abs(row_y - MOUTH_Y_NOMINAL)))
    mouth_y = float(row_y[i_m])
    slit = idx[i_m][np.abs(base[idx[i_m], 0]) < MOUTH_HALF_W]
    corners = [idx[i_m][np.argmin(np.where(base[idx[i_m], 0] < -MOUTH_HALF_W, -base[idx[i_m], 0], np.inf))],
               idx[i_m][np.argmin(np.where(base[idx[i_m], 0] > MOUTH_HALF_W, base[idx[i_m], 0], np.inf))]]
    dup_of = {int(v): n_grid + k for k, v in enumerate(slit)}
    band = np.zeros(len(faces_skin), dtype=bool)  # triangles between the slit row and the row below
    below = set(int(v) for v in idx[i_m + 1])
    for fi, f in enumerate(faces_skin):
        fs = set(int(v) for v in f)
        band[fi] = bool(fs & below) and bool(fs & set(int(v) for v in idx[i_m]))
    for fi in np.nonzero(band)[0]:
        faces_skin[fi] = [dup_of.get(int(v), int(v)) for v in faces_skin[fi]]
    return slit, corners, mouth_y


def _face_surface(skin_base: np.ndarray, mouth_y: float):
    """(skin [n,3] with the facial features as height offsets weighted towards the front of the head, its depth
    with the eyes open, {"L", "R"}: its depth with that eye closed)."""
    x, y, z0 = skin_base[:, 0], skin_base[:, 1], skin_base[:, 2]
    front = _smoothstep(0.0, 0.035, z0) * _smoothstep(-0.13, -0.095, y)
    nose = _nose_offset(x, y) * front
    z1 = z0 + (_face_offsets(x, y, mouth_y) * front) + nose
    z_open = z1.copy()
    z_closed = {}
    for side, tag in ((1, "L"), (-1, "R")):
        near = (front > 0) & (_eye_coords(x, y, side)[3] < 1.0)
        z_open = np.where(near, _eye_socket(x, y, z_open, side, closed=False), z_open)
    for side, tag in ((1, "L"), (-1, "R")):
        near = (front > 0) & (_eye_coords(x, y, side)[3] < 1.0)
        z_closed[tag] = np.where(near, _eye_socket(x, y, z_open, side, closed=True), z_open)
    return np.stack([x, y, z_open], 1), z_open, z_closed


def _inner_parts(mouth_y: float, z_lip: float):
    """(parts: name -> (vertices, faces, projection), eyeball centres): mouth interior, teeth, eyeballs and a
    helper strip (2 x 6) inside the head behind the left eye's inner corner."""
    parts = {}
    unit, tri, proj = _cap_sphere(6, 16, np.radians(150))
    parts["mouth_interior"] = (unit * [0.022, 0.013, 0.012] + [0.0, mouth_y - 0.004, z_lip - 0.034], tri, proj)
    unit_t, tri_t, proj_t = _cap_sphere(4, 16, np.radians(120))
    parts["teeth_upper"] = (unit_t * [0.018, 0.0045, 0.007] + [0.0, mouth_y + 0.0045, z_lip - 0.014], tri_t, proj_t)
    parts["teeth_lower"] = (unit_t * [0.016, 0.004, 0.007] + [0.0, mouth_y - 0.0055, z_lip - 0.015], tri_t, proj_t)
    unit_e, tri_e, proj_e = _cap_sphere(10, 20, np.radians(165))
    eye_centres = {"eyeball_left": np.array([EYE_X, EYE_Y, EYE_Z]), "eyeball_right": np.array([-EYE_X, EYE_Y, EYE_Z])}
    for key, c in eye_centres.items():
        parts[key] = (unit_e * EYE_R + c, tri_e, proj_e)
    hs = np.array([[0.012 + 0.002 * k, EYE_Y + dy, EYE_Z - 0.006] for dy in (-0.001, 0.001) for k in range(6)])
    hf = np.array([(k, 6 + k, k + 1) for k in range(5)] + [(k + 1, 6 + k, 7 + k) for k in range(5)], dtype=np.int64)
    hproj = np.stack([np.tile(np.linspace(-1, 1, 6), 2), np.repeat([-1.0, 1.0], 6)], 1)
    parts["helper"] = (hs, hf, hproj)
    return parts, eye_centres


def _synthetic_regions(m: _Mesh) -> dict[str, np.ndarray]:
    is_skin, mouth_y = m.is_skin, m.mouth_y
    sx, sy, sz = m.verts[:, 0], m.verts[:, 1], m.verts[:, 2]
    eyelid = np.zeros(m.V, dtype=bool)
    for side in (1, -1):
        eyelid |= is_skin & (_eye_coords(sx, sy, side)[3] < 1.0) & (sz > 0.03)
    lips = is_skin & ((sx / 0.029) ** 2 + ((sy - mouth_y) / 0.013) ** 2 < 1.0) & (sz > 0.03)
    brows = is_skin & (sy > EYE_Y + 0.011) & (sy < EYE_Y + 0.028) & (np.abs(sx) > 0.008) & (np.abs(sx) < 0.056) & (sz > 0.03)
    face = is_skin & (sz > -0.02) & (sy < EYE_Y + 0.062) & ((sy > -0.095) | (sz > 0.045)) & (np.abs(sx) < 0.072)
    face |= lips | eyelid | brows
    neck = is_skin & ~face & ((sy < -0.085) | ((sz > 0.0) & (sy < -0.03)))
    scalp = is_skin & ~face & ~neck
    return {
        "face": face, "lips": lips, "eyelids": eyelid, "brows": brows, "scalp": scalp, "neck": neck,
        "mouth_interior": m.part_mask("mouth_interior"), "teeth": m.part_mask("teeth_upper", "teeth_lower"),
        "eyeball_left": m.part_mask("eyeball_left"), "eyeball_right": m.part_mask("eyeball_right"),
        "helper": m.part_mask("helper"),
    }


def _skinning_weights(m: _Mesh) -> np.ndarray:  # -> [V,5]
    is_skin, mouth_y = m.is_skin, m.mouth_y
    sx, sy, sz = m.verts[:, 0], m.verts[:, 1], m.verts[:, 2]
    w_jaw = np.zeros(m.V)
    below_mouth = _smoothstep(mouth_y + 0.001, mouth_y - 0.008, sy)
    w_jaw_skin = (below_mouth * (1 - _smoothstep(0.032, 0.066, np.abs(sx))) * _smoothstep(-0.03, 0.02, sz)
                  * _smoothstep(-0.105, -0.082, sy))
    w_jaw[is_skin] = w_jaw_skin[is_skin]
    w_jaw[m.slit] = 0.0  # upper lip
    w_jaw[m.n_grid:m.n_skin] = 1.0  # lower lip
    w_jaw[m.corners] = 0.5
    mi = m.part_mask("mouth_interior")
    w_jaw[mi] = _smoothstep(mouth_y + 0.004, mouth_y - 0.006, sy[mi])
    w_jaw[m.part_mask("teeth_lower")] = 1.0
    t_neck = _smoothstep(-0.17, -0.10, sy)  # down the neck the root takes over
    weights = np.zeros((m.V, NUM_JOINTS))
    weights[:, 2] = w_jaw
    weights[:, 1] = (1 - w_jaw) * t_neck
    weights[:, 0] = (1 - w_jaw) * (1 - t_neck)
    for key, j in (("eyeball_left", 3), ("eyeball_right", 4)):
        mask = m.part_mask(key)
        weights[mask] = 0.0
        weights[mask, j] = 1.0
    return weights


def _joint_regressor(m: _Mesh) -> np.ndarray:  # -> [5,V]
    verts, is_skin = m.verts, m.is_skin
    mirror, _ = _mirror_map(verts)
    regressor = np.zeros((NUM_JOINTS, m.V))
    for j, target in ((0, ROOT_JOINT), (1, NECK_JOINT), (2, JAW_JOINT)):
        cand = np.nonzero(is_skin & (np.linalg.norm(verts - target, axis=1) < 0.1))[0]
        regressor[j] = _regressor_row(verts, mirror, cand, target)
    for key, j in (("eyeball_left", 3), ("eyeball_right", 4)):
        regressor[j] = _sphere_centre_row(verts, np.nonzero(m.part_mask(key))[0], m.eye_centres[key])
    return regressor


def _eye_correctives(m: _Mesh, eyelid: np.ndarray) -> np.ndarray:  # -> [V,3,P]: the lids follow the eyes
    verts = m.verts
    sx, sy = verts[:, 0], verts[:, 1]
    correctives = np.zeros((m.V, 3, NUM_POSE_FEATURES))
    for side, j, key in ((1, 3, "eyeball_left"), (-1, 4, "eyeball_right")):
        dx, dy, rho, e = _eye_coords(sx, sy, side)
        follow = np.where(dy > 0, 0.75, 0.5) * (1 - _smoothstep(0.45, 0.95, e))
        follow = np.where(rho < 0.9, 1.0, follow) * eyelid * (np.sign(sx) == side)
        rel = verts - m.eye_centres[key]
        block = 9 * (j - 1)
        for c in range(3):  # offset_c = sum_b (R - I)[c, b] * rel_b  (feature index block + 3c + b)
            for b in range(3):
                correctives[:, c, block + 3 * c + b] = follow * rel[:, b]
    return correctives


def _identity_shapes(m: _Mesh) -> np.ndarray:  # -> [V,3,S]
    verts, is_skin, V = m.verts, m.is_skin, m.V

    def rigid_eyes(field):
        """Eyeballs move with the field at their centre (they stay spheres)."""
        out = field(verts)
        for key, c in m.eye_centres.items():
            out[m.part_mask(key)] = field(c[None])[0]
        return out

    def f_width(p):
        return np.stack([0.04 * p[:, 0] * _smoothstep(-0.16, -0.08, p[:, 1]), 0 * p[:, 0], 0 * p[:, 0]], 1)

    def f_length(p):
        dy = -0.04 * np.clip(EYE_Y - p[:, 1], 0.0, EYE_Y + 0.1)
        return np.stack([0 * dy, dy, 0 * dy], 1)

    def f_nose(p):
        fr = _smoothstep(0.0, 0.035, p[:, 2])
        dz = 0.3 * _nose_offset(p[:, 0], p[:, 1]) * fr * (is_skin if len(p) == V else 1.0)
        return np.stack([0 * dz, 0 * dz, dz], 1)

    def f_jaw(p):
        dx = 0.06 * p[:, 0] * _smoothstep(0.01, -0.04, p[:, 1]) * _smoothstep(-0.13, -0.09, p[:, 1])
        return np.stack([dx, 0 * dx, 0 * dx], 1)

    return np.stack([rigid_eyes(f) for f in (f_width, f_length, f_nose, f_jaw)], -1)


def _expression_shapes(m: _Mesh) -> np.ndarray:  # -> [V,3,E] in EXPR_NAMES order
    is_skin, mouth_y, n_skin = m.is_skin, m.mouth_y, m.n_skin
    sx, sy, sz = m.verts[:, 0], m.verts[:, 1], m.verts[:, 2]
    zeros = np.zeros((m.V, 3))
    expr = []
    for tag in ("L", "R"):  # blinks: the opening's skin comes forward onto the lid ellipsoid
        d = zeros.copy()
        d[:n_skin, 2] = m.z_closed[tag] - m.z_open
        d[:n_skin, 1] = -0.6 * np.clip(d[:n_skin, 2], 0, None) * (sy[:n_skin] > EYE_Y)  # upper lid comes down a bit
        expr.append(d)
    for side in (1, -1):  # smile: the mouth corner goes up, out and back, the cheek rises
        g = _gauss(sx, side * MOUTH_HALF_W, 0.009) * _gauss(sy, mouth_y, 0.009) * is_skin
        g2 = _gauss(sx, side * 0.036, 0.012) * _gauss(sy, mouth_y + 0.016, 0.011) * is_skin * (sz > 0)
        d = np.stack([side * 0.003 * g, 0.0045 * g + 0.002 * g2, -0.002 * g + 0.002 * g2], 1)
        expr.append(d)
    band = _gauss(sy, BROW_Y, 0.009) * (1 - _smoothstep(0.045, 0.07, np.abs(sx))) * (sz > 0.02) * is_skin
    forehead = _smoothstep(EYE_Y + 0.006, BROW_Y, sy) * (1 - _smoothstep(BROW_Y, EYE_Y + 0.075, sy))
    lift = forehead * (1 - _smoothstep(0.045, 0.07, np.abs(sx))) * (sz > 0.02) * is_skin
    expr.append(np.stack([0 * sx, 0.005 * lift, 0.001 * band], 1))  # browInnerUp
    expr.append(np.stack([-0.002 * np.sign(sx) * band, -0.0035 * band, 0.0008 * band], 1))  # browDown
    g = np.exp(-0.5 * ((sx / 0.02) ** 2 + ((sy - mouth_y) / 0.011) ** 2)) * is_skin * (sz > 0.03)
    expr.append(np.stack([-0.3 * sx * g, 0 * sx, 0.006 * g], 1))  # mouthPucker
    return np.stack(expr, -1)


def _sphere_centre_row(verts, idx, centre):
    """Regressor row over a sphere cap's vertices whose weighted mean is the sphere's centre.

    A cap's plain centroid lies towards its pole; weighting the vertices by how far back they are
    (solved exactly for the z coordinate; the cap is symmetric in x and y) moves it to the centre.
    """
    rel_z = verts[idx, 2] - centre[2]
    # weights w = a + b * (-rel_z), sum 1, sum w rel_z = 0
    n, s1, s2 = len(idx), rel_z.sum(), (rel_z ** 2).sum()
    # a*n - b*s1 = 1 ; a*s1 - b*s2 = 0
    det = -n * s2 + s1 * s1
    a = -s2 / det
    b = -s1 / det
    w = a - b * rel_z
    row = np.zeros(len(verts))
    row[idx] = w
    return row


def _uv_layout(rows, cols, theta, phi, n_grid, slit, faces_skin, parts, part_range, V):
    u0, v0, u1, v1 = UV_ATLAS["skin"]
    # skin: (cols + 1) columns so the seam at the back gets two u values; poles get one uv per column
    phis = np.concatenate([phi, [phi[0] + 2 * np.pi]])
    col_u = u0 + (u1 - u0) * (phis - phis[0]) / (2 * np.pi)
    row_v = v1 - (v1 - v0) * theta / np.pi
    grid_uv = np.stack(np.meshgrid(row_v, col_u, indexing="ij")[::-1], -1)  # [rows, cols+1, 2] (u, v)
    mid_u = 0.5 * (col_u[:-1] + col_u[1:])
    uvs = [grid_uv.reshape(-1, 2), np.stack([mid_u, np.full(cols, v1)], 1), np.stack([mid_u, np.full(cols, v0)], 1)]
    n_gu = rows * (cols + 1)
    top_uv0, bottom_uv0 = n_gu, n_gu + cols

    def grid_uv_index(vid, col_hint):
        i, j = divmod(vid - 1, cols)
        return i * (cols + 1) + (cols if (j == 0 and col_hint) else j)

    slit_grid = {n_grid + k: int(v) for k, v in enumerate(slit)}
    face_uvs = np.zeros((len(faces_skin), 3), dtype=np.int64)
    for fi, f in enumerate(faces_skin):
        g = [slit_grid.get(int(v), int(v)) for v in f]
        cs = [((vv - 1) % cols) if 0 < vv <= rows * cols else None for vv in g]
        wraps = any(c == cols - 1 for c in cs if c is not None) and any(c == 0 for c in cs if c is not None)
        col0 = min(c for c in cs if c is not None)
        if wraps:
            col0 = cols - 1
        for k, vv in enumerate(g):
            if vv == 0:
                face_uvs[fi, k] = top_uv0 + col0
            elif vv == rows * cols + 1:
                face_uvs[fi, k] = bottom_uv0 + col0
            else:
                face_uvs[fi, k] = grid_uv_index(vv, wraps)
    total = n_gu + 2 * cols
    all_face_uvs = [face_uvs]
    for key, (pv, pf, proj) in parts.items():
        a0, b0, a1, b1 = UV_ATLAS[key]
        uv = np.stack([0.5 * (a0 + a1) + 0.5 * (a1 - a0) * 0.98 * proj[:, 0],
                       0.5 * (b0 + b1) + 0.5 * (b1 - b0) * 0.98 * proj[:, 1]], 1)
        uvs.append(uv)
        all_face_uvs.append(pf + total)
        total += len(uv)
    return np.concatenate(uvs), np.concatenate(all_face_uvs)


def _landmarks_68(verts, n_grid, n_skin, slit, corners, mouth_y):
    """Vertex indices of the 68 Multi-PIE landmarks (0 = subject's right jaw end, 8 = chin, ...)."""
    skin = verts[:n_skin]
    hidden = np.zeros(n_skin, dtype=bool)
    for side in (1, -1):
        hidden |= _eye_coords(skin[:, 0], skin[:, 1], side)[2] < 0.9
    visible = np.nonzero((skin[:, 2] > 0.0) & ~hidden & (np.arange(n_skin) < n_grid + 1))[0]
    margin = np.zeros(n_skin, dtype=bool)
    for side in (1, -1):
        rho = _eye_coords(skin[:, 0], skin[:, 1], side)[2]
        margin |= (rho >= 0.9) & (rho < 1.35)
    margin_idx = np.nonzero(margin & (skin[:, 2] > 0.03))[0]

    def nearest(xy, pool):
        d = ((skin[pool, :2] - np.asarray(xy)) ** 2).sum(1)
        return int(pool[np.argmin(d)])

    pts = []
    for t in range(17):  # jaw contour, subject's right to left
        a = np.pi * t / 16
        pts.append(((-np.cos(a) * 0.066, 0.012 - 0.097 * np.sin(a) ** 1.2), visible))
    for xs, ys in (((-0.052, -0.043, -0.033, -0.023, -0.013), (0.044, 0.049, 0.051, 0.05, 0.047)),
                   ((0.013, 0.023, 0.033, 0.043, 0.052), (0.047, 0.05, 0.051, 0.049, 0.044))):
        pts += [((px, py), visible) for px, py in zip(xs, ys)]
    pts += [((0.0, yy), visible) for yy in (0.033, 0.021, 0.009, -0.003)]  # bridge to tip
    pts += [((xx, yy), visible) for xx, yy in zip((-0.012, -0.006, 0.0, 0.006, 0.012),
                                                   (-0.014, -0.016, -0.017, -0.016, -0.014))]
    for c, order in ((-EYE_X, (-1, -0.35, 0.35, 1, 0.35, -0.35)), (EYE_X, (-1, -0.35, 0.35, 1, 0.35, -0.35))):
        ups = (0, 1, 1, 0, -1, -1)
        for k, (o, u) in enumerate(zip(order, ups)):
            pts.append(((c + o * OPEN_AX, EYE_Y + u * OPEN_AY * 0.95), margin_idx))
    my = mouth_y
    outer = [(-0.024, my), (-0.016, my + 0.006), (-0.007, my + 0.009), (0.0, my + 0.009), (0.007, my + 0.009),
             (0.016, my + 0.006), (0.024, my), (0.016, my - 0.008), (0.007, my - 0.011), (0.0, my - 0.011),
             (-0.007, my - 0.011), (-0.016, my - 0.008)]
    pts += [(p, visible) for p in outer]
    upper = np.asarray(slit)
    lower = np.arange(n_grid, n_skin)
    idx = [nearest(p, pool) for p, pool in pts]
    right_c, left_c = (corners if verts[corners[0], 0] < 0 else corners[::-1])
    idx += [int(right_c), nearest((-0.008, my), upper), nearest((0.0, my), upper), nearest((0.008, my), upper),
            int(left_c), nearest((0.008, my), lower), nearest((0.0, my), lower), nearest((-0.008, my), lower)]
    return np.asarray(idx, dtype=np.int64)


__all__ = ["synthetic_rig", "SYNTHETIC_VERSION", "SHAPE_NAMES", "EXPR_NAMES", "UV_ATLAS"]
