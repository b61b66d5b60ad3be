"""MediaPipe-478 landmark embedding of any rig (triangle id + barycentrics per landmark).

Procedure (the same for ICT-FaceKit, FLAME and the synthetic rig):

1. Load MediaPipe's canonical face (468 vertices in face-mesh landmark order, shipped as package data)
   and check its ordering: landmark 4 (nose tip) must be its most forward point.
2. Similarity registration (Umeyama) of the canonical face to the rig's neutral face from a few
   unmistakable points: nose tip (landmark 4 <-> the rig's most forward face vertex), eye corners
   (33, 133, 362, 263), mouth corners (61, 291) and chin (152) where the rig names them through its
   68 landmarks; otherwise eye-opening centres (<-> the front of each eyeball) and mouth corners
   (<-> the extreme lips vertices) found geometrically.
3. Non-rigid refinement: a few iterations of "move every point towards its closest point on the rig's
   face surface", the moves smoothed over the canonical mesh (stiff first, looser later) and the
   correspondence points pulled onto their rig points.
4. Projection: each refined point's closest point on the face surface gives its triangle and
   barycentrics.
5. Irises: 468 (subject's right) / 473 (subject's left) at the front pole of the eyeball along the rest
   gaze (+z); the ring points 469..472 / 474..477 (+x, up, -x, down as MediaPipe orders them) at the
   iris radius around it; all projected onto the eyeball triangles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from avatar3d.errors import HeadModelError
from avatar3d.head.obj import read_obj
from avatar3d.head.rig import HeadRig, LandmarkEmbedding

CANONICAL_PATH = Path(__file__).resolve().parent / "data" / "mediapipe_canonical_face.obj"
NUM_CANONICAL = 468
NUM_LANDMARKS = 478
NOSE_TIP = 4
IRIS_RADIUS_M = 0.0059  # human iris diameter is ~11.8 mm
# MediaPipe index -> 68-landmark (Multi-PIE) index, for rigs that carry landmarks_68
MP_TO_68 = {33: 36, 133: 39, 362: 42, 263: 45, 61: 48, 291: 54, 152: 8}
EYE_RING = {  # eye-opening contours (subject's right, subject's left)
    "right": [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    "left": [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
}
IRIS = {"right": (468, (469, 470, 471, 472)), "left": (473, (474, 475, 476, 477))}
MOUTH_CORNERS = {"right": 61, "left": 291}
LIPS = {  # MediaPipe's lip contours (outer and inner)
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
}
BROWS = {46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336}


# ---------------------------------------------------------------------------------------- canonical
def load_canonical_face(path: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's canonical face: vertices [468,3] in metres (rig axes) and triangles [F,3]."""
    path = CANONICAL_PATH if path is None else Path(path)
    if not path.is_file():
        raise HeadModelError(
            f"the MediaPipe canonical face {path} is missing; reinstall avatar3d (it ships as package data)"
        )
    mesh = read_obj(path)
    verts = mesh.vertices * 0.01  # centimetres -> metres
    check_canonical_order(verts)
    return verts, mesh.faces


def check_canonical_order(vertices: np.ndarray) -> None:
    """vertices: [468,3]. Fails loudly when the mesh is not in face-mesh landmark order."""
    if vertices.shape != (NUM_CANONICAL, 3):
        raise HeadModelError(
            f"the canonical face has {vertices.shape[0]} vertices, expected {NUM_CANONICAL}; "
            "use MediaPipe's canonical_face_model.obj"
        )
    front = int(np.argmax(vertices[:, 2]))
    if front != NOSE_TIP:
        raise HeadModelError(
            f"the canonical face's most forward point is vertex {front}, not the nose tip {NOSE_TIP}: its vertex "
            "order is not MediaPipe's landmark order; use MediaPipe's canonical_face_model.obj unmodified"
        )


# ---------------------------------------------------------------------------------------- geometry
def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics [N,3] of the closest point on triangles (a,b,c) to points p (all [N,3]).

    Ericson, Real-Time Collision Detection 5.1.5, vectorised; later assignments win, in the order of
    his tests' priority (vertex A is tested first there, so it is assigned last here).
    """
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    dot = lambda x, y: (x * y).sum(-1)  # noqa: E731
    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v, w = vb / denom, vc / denom
        bary = np.stack([1 - v - w, v, w], -1)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        t_ac = d2 / (d2 - d6)
        t_ab = d1 / (d1 - d3)
    bary = np.nan_to_num(bary, nan=1.0 / 3)
    one = np.ones_like(d1)
    zero = np.zeros_like(d1)

    def put(mask, vals):
        bary[mask] = np.nan_to_num(np.stack(vals, -1)[mask], nan=0.5)

    put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), [zero, 1 - t_bc, t_bc])
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), [1 - t_ac, zero, t_ac])
    put((d6 >= 0) & (d5 <= d6), [zero, zero, one])
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), [1 - t_ab, t_ab, zero])
    put((d3 >= 0) & (d4 <= d3), [zero, one, zero])
    put((d1 <= 0) & (d2 <= 0), [one, zero, zero])
    return bary


class SurfaceProjector:
    """Closest points on a triangle set: candidates from the nearest triangle centroids, exact test."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, candidates: int = 32):
        # vertices: [V,3], faces: [F,3] (the triangle subset to project onto)
        if len(faces) == 0:
            raise HeadModelError("the rig has no surface to embed landmarks on; the model's regions are empty")
        self.vertices, self.faces = vertices, faces
        self.tree = cKDTree(vertices[faces].mean(1))
        self.k = min(candidates, len(faces))

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """points [N,3] -> (closest [N,3], local triangle index [N], barycentrics [N,3], distance [N])."""
        _, cand = self.tree.query(points, k=self.k)
        cand = cand.reshape(len(points), self.k)
        tri = self.vertices[self.faces[cand]]  # [N,k,3,3]
        p = np.repeat(points[:, None], self.k, 1)
        bary = closest_point_on_triangles(p, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])  # [N,k,3]
        q = (bary[..., None] * tri).sum(-2)
        dist = np.linalg.norm(q - p, axis=-1)
        best = dist.argmin(1)
        rows = np.arange(len(points))
        return q[rows, best], cand[rows, best], bary[rows, best], dist[rows, best]


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R [3,3], t [3]) minimising |s R src + t - dst| over points [K,3]."""
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    u, sig, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / (xs**2).sum() * len(src))
    return scale, rot, md - scale * rot @ ms


def _mesh_adjacency(faces: np.ndarray, n: int) -> sp.csr_matrix:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    deg = np.maximum(np.asarray(a.sum(1)).ravel(), 1.0)
    return sp.diags(1.0 / deg) @ a


# ---------------------------------------------------------------------------------------- rig side
def _mask(rig: HeadRig, name: str) -> np.ndarray:
    return rig.region(name).cpu().numpy().astype(bool)


def _eyeball_mask(rig: HeadRig, side: str) -> np.ndarray:
    """[V] eyeball vertices of one eye: the region, else the vertices skinned mostly to that eye joint."""
    m = _mask(rig, f"eyeball_{side}")
    if m.any():
        return m
    joint = 3 if side == "left" else 4
    w = rig.lbs_weights.cpu().numpy()
    return (w.argmax(1) == joint) & (w[:, joint] > 0.5)


def face_surface(rig: HeadRig) -> np.ndarray:
    """Indices [F'] of the triangles that face landmarks may land on (renderable skin of the face)."""
    faces = rig.faces.cpu().numpy()
    keep = rig.renderable_faces().cpu().numpy()
    face = _mask(rig, "face")
    if face.any():
        keep &= face[faces].all(1)
    else:  # no face region: everything renderable except eyes and the mouth's inside
        hidden = _eyeball_mask(rig, "left") | _eyeball_mask(rig, "right")
        for name in ("mouth_interior", "teeth", "gums"):
            hidden |= _mask(rig, name)
        keep &= ~hidden[faces].any(1)
    return np.nonzero(keep)[0]


def _correspondences(rig: HeadRig, canon: np.ndarray, verts: np.ndarray, surface: np.ndarray):
    """(canonical points [K,3], rig points [K,3], MediaPipe indices pinned during refinement)."""
    faces = rig.faces.cpu().numpy()
    skin = np.unique(faces[surface])
    src, dst, pinned = [canon[NOSE_TIP]], [verts[skin[np.argmax(verts[skin, 2])]]], []
    if rig.landmarks_68 is not None and len(rig.landmarks_68) == 68:
        lm = rig.landmarks_68.cpu().numpy()
        for mp_idx, idx68 in MP_TO_68.items():
            src.append(canon[mp_idx])
            dst.append(verts[lm[idx68]])
            pinned.append(mp_idx)
        return np.array(src), np.array(dst), pinned
    for side in ("right", "left"):
        eye = _eyeball_mask(rig, side)
        if not eye.any():
            raise HeadModelError(
                f"the rig {rig.name!r} has no {side} eyeball (region or eye-joint skinning), so the MediaPipe "
                "embedding cannot be registered; give the rig eyeball regions or landmarks_68"
            )
        src.append(canon[EYE_RING[side]].mean(0))
        dst.append(verts[eye][np.argmax(verts[eye, 2])])  # front of the eyeball ~ centre of the opening
    lips = _mask(rig, "lips")
    if lips.any():
        lv = verts[lips]
        src += [canon[MOUTH_CORNERS["right"]], canon[MOUTH_CORNERS["left"]]]
        dst += [lv[np.argmin(lv[:, 0])], lv[np.argmax(lv[:, 0])]]
    return np.array(src), np.array(dst), pinned


def _iris_points(rig: HeadRig, verts: np.ndarray) -> dict[int, tuple[int, np.ndarray]]:
    """MediaPipe index -> (global triangle index, barycentrics [3]) for the 10 iris points."""
    faces = rig.faces.cpu().numpy()
    joints = (rig.joint_regressor.double() @ rig.template.double()).cpu().numpy()
    out = {}
    for side, joint in (("left", 3), ("right", 4)):
        eye = _eyeball_mask(rig, side)
        tris = np.nonzero(eye[faces].all(1))[0]
        if len(tris) == 0:
            raise HeadModelError(
                f"the rig {rig.name!r} has no {side} eyeball triangles, so the iris landmarks cannot be placed; "
                "give the rig eyeball regions"
            )
        centre = joints[joint]
        radius = float(np.linalg.norm(verts[eye] - centre, axis=1).max())
        proj = SurfaceProjector(verts, faces[tris])
        gaze = np.array([0.0, 0.0, 1.0])  # rest gaze: straight ahead
        sides = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]))
        centre_idx, ring = IRIS[side]
        alpha = np.arcsin(min(IRIS_RADIUS_M / radius, 0.9))
        for _ in range(4):  # rays from the centre, projected from outside; widen until the ring has the iris radius
            dirs = [gaze] + [np.cos(alpha) * gaze + np.sin(alpha) * d for d in sides]
            q, local, bary, _ = proj(np.array([centre + 1.5 * radius * d for d in dirs]))
            offset = np.linalg.norm((q[1:] - centre)[:, :2] - (q[0] - centre)[:2], axis=1).mean()
            alpha = min(alpha * IRIS_RADIUS_M / max(offset, 1e-6), 1.2)
        for mp_idx, li, b in zip((centre_idx, *ring), local, bary):
            out[mp_idx] = (int(tris[li]), b)
    return out


def build_mediapipe_embedding(rig: HeadRig, iterations: int = 10) -> tuple[LandmarkEmbedding, dict]:
    """The rig's MediaPipe-478 embedding and a summary of the registration (errors in mm)."""
    emb, summary, _ = _embed(rig, iterations)
    return emb, summary


def _embed(rig: HeadRig, iterations: int) -> tuple[LandmarkEmbedding, dict, np.ndarray]:
    canon, canon_faces = load_canonical_face()
    verts = rig.template.detach().double().cpu().numpy()
    faces = rig.faces.cpu().numpy()
    surface = face_surface(rig)
    proj = SurfaceProjector(verts, faces[surface])

    src, dst, pinned = _correspondences(rig, canon, verts, surface)
    scale, rot, trans = umeyama(src, dst)
    points = scale * canon @ rot.T + trans
    rigid_anchor_mm = float(np.linalg.norm(scale * src @ rot.T + trans - dst, axis=1).mean() * 1000)
    _, _, _, rigid_dist = proj(points)

    adj = _mesh_adjacency(canon_faces, NUM_CANONICAL)
    pin_idx = np.array(pinned, dtype=np.int64)
    pin_pts = dst[1:1 + len(pinned)] if len(pinned) else np.zeros((0, 3))
    for it in range(iterations):
        closest, _, _, _ = proj(points)
        move = closest - points
        if len(pin_idx):
            move[pin_idx] = pin_pts - points[pin_idx]
        for _ in range(max(1, 8 - it)):  # stiff first (smooth, rigid-like moves), then local
            move = 0.5 * move + 0.5 * (adj @ move)
        points = points + move
    closest, local, bary, dist = proj(points)

    face_idx = np.zeros(NUM_LANDMARKS, dtype=np.int64)
    bary_all = np.zeros((NUM_LANDMARKS, 3))
    face_idx[:NUM_CANONICAL] = surface[local]
    bary_all[:NUM_CANONICAL] = bary
    for mp_idx, (tri, b) in _iris_points(rig, verts).items():
        face_idx[mp_idx], bary_all[mp_idx] = tri, b
    bary_all = np.clip(bary_all, 0.0, 1.0)
    bary_all /= bary_all.sum(1, keepdims=True)
    valid = np.ones(NUM_LANDMARKS, dtype=bool)
    valid[:NUM_CANONICAL] = rigid_dist < 0.015  # grossly off after the similarity: no counterpart on this rig
    emb = LandmarkEmbedding(
        face_idx=torch.from_numpy(face_idx),
        bary=torch.from_numpy(bary_all.astype(np.float32)),
        valid=torch.from_numpy(valid),
    )
    summary = {
        "procedure": "similarity (Umeyama) + smoothed closest-point refinement + projection",
        "anchors": "landmarks_68" if pinned else "geometric",
        "rigid_anchor_mean_mm": rigid_anchor_mm,
        "rigid_surface_mean_mm": float(rigid_dist.mean() * 1000),
        "scale": scale,
        "invalid": int((~valid).sum()),
    }
    return emb, summary, closest


def derive_regions(rig: HeadRig, registered: np.ndarray) -> dict[str, np.ndarray]:
    """Face, lips, eyelids and brows [V] bool from the canonical face registered onto the rig.

    registered: [468,3] canonical points on the rig surface. A rig vertex belongs to the face when it
    lies within 5 mm of the registered canonical surface; to the lips / eyelids / brows when the closest
    canonical triangle is a lip triangle / touches an eye contour / touches a brow line.
    """
    _, canon_faces = load_canonical_face()
    verts = rig.template.detach().double().cpu().numpy()
    hidden = _eyeball_mask(rig, "left") | _eyeball_mask(rig, "right") | _mask(rig, "helper")
    for name in ("mouth_interior", "teeth", "gums"):
        hidden |= _mask(rig, name)
    _, tri, _, dist = SurfaceProjector(registered, canon_faces)(verts)
    near = (dist < 0.005) & ~hidden
    corner = lambda ids: np.isin(canon_faces[tri], list(ids))  # noqa: E731  [V,3]
    eyes = set(EYE_RING["left"]) | set(EYE_RING["right"])
    adj = _mesh_adjacency(rig.faces.cpu().numpy(), len(verts))
    grow = lambda m: near & (m | (adj @ m.astype(np.float64) > 0))  # noqa: E731  one ring: the canonical is coarse
    return {
        "face": near,
        "lips": grow(near & corner(LIPS).all(1)),
        "eyelids": grow(near & corner(eyes).any(1)),
        "brows": grow(near & (corner(BROWS).sum(1) >= 2)),
    }


def attach_mediapipe_embedding(rig: HeadRig, derive_missing_regions: bool = True) -> HeadRig:
    """Set `rig.landmarks_mp` (and `rig.meta["mp_embedding"]`) in place; returns the rig.

    With `derive_missing_regions`, face/lips/eyelids/brows regions the rig lacks (FLAME without its
    mask file) are derived from the same registration (`derive_regions`).
    """
    emb, summary, registered = _embed(rig, 10)
    if derive_missing_regions:
        missing = [n for n in ("face", "lips", "eyelids", "brows") if not bool(rig.region(n).any())]
        if missing:
            derived = derive_regions(rig, registered)
            for n in missing:
                rig.regions[n] = torch.from_numpy(derived[n]).to(rig.device)
            summary["derived_regions"] = missing
    rig.landmarks_mp = LandmarkEmbedding(
        emb.face_idx.to(rig.device), emb.bary.to(rig.device, rig.template.dtype), emb.valid.to(rig.device)
    )
    rig.meta["mp_embedding"] = summary
    return rig
