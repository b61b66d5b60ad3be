"""ICT-FaceKit (MIT) OBJ folder -> `HeadRig`.

The ICT Face Model Light is a set of OBJs with one topology (26,719 vertices, quads): a generic
neutral, identity PCA modes `identityNNN.obj` and 53 ARKit-named expression shapes. It has no
skeleton, so the FLAME-style joints are derived here from the shapes themselves:

* units: centimetres -> metres; ICT's axes already match rig space (x subject's left, y up, z out).
* eyes: joint at the centre of a sphere fitted to each sclera; the eyeballs are skinned rigidly to
  it. ICT's eyeLook{Up,Down,In,Out}_{L,R} shapes move only the lids (the eyeballs stay put), so
  each becomes part of a 9-feature pose corrective of its eye joint: we assume the shape at weight
  1 is the lid pose for a gaze rotation of `EYE_LOOK_ANGLE_DEG` (ARKit's "look" extremes are roughly
  25-30 degrees) and fit the minimum-norm corrective that reproduces all four shapes. The eyeLook
  shapes then leave the expression basis (gaze is a pose, not an expression).
* jaw: the lower teeth are rigid in jawOpen, so a Kabsch fit of them gives the jaw rotation (about
  25 degrees) and its centre (the point that rotation leaves fixed). Per-vertex skinning weights are
  the least-squares share of that rotation in jawOpen's motion, smoothed over the mesh (a falloff
  over chin, lower lip, lower teeth, tongue); a jaw pose corrective takes the remainder, so LBS at the
  fitted angle reproduces jawOpen, which then leaves the expression basis. The reproduction error
  over the face (mm, mean and 95th percentile) is stored in `rig.meta["jaw_fit_mm"]`.
* neck: a joint on the neck's axis at mouth height (roughly the top of the neck / base of the
  skull), the root at the neck's base; the head is skinned to the neck with a smooth falloff down
  the neck along a plane that is lower under the chin than at the nape.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
import torch

from avatar3d.errors import HeadModelError
from avatar3d.head.obj import read_obj, read_obj_vertices
from avatar3d.head.rig import NUM_POSE_FEATURES, HeadRig

CONVERTER_VERSION = "ict-1"
CM = 0.01  # ICT is in centimetres
EYE_LOOK_ANGLE_DEG = 25.0  # gaze rotation assumed for an eyeLook* shape at weight 1
NUM_VERTICES = 26719

# Vertex ranges [start, stop) from ICT-FaceKit's README ("Face Model Topology").
RANGES = {
    "face": (0, 9409),
    "head_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678),
    "eye_socket_right": (13678, 14062),
    "gums_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
    "lacrimal_left": (24591, 24795),
    "lacrimal_right": (24795, 24999),
    "eye_blend_left": (24999, 25023),
    "eye_blend_right": (25023, 25047),
    "eye_occlusion_left": (25047, 25199),
    "eye_occlusion_right": (25199, 25351),
    "eyelashes_left": (25351, 26035),
    "eyelashes_right": (26035, 26719),
}
SCLERA = {"left": (21451, 22221), "right": (23021, 23791)}
UPPER_TEETH = (17039, 19247)
LOWER_TEETH = (19247, 21451)
HELPER = (24591, 26719)
# pose-feature columns of each joint in HeadRig.pose_correctives (neck, jaw, left eye, right eye)
FEATURES = {"neck": slice(0, 9), "jaw": slice(9, 18), "left_eye": slice(18, 27), "right_eye": slice(27, 36)}
JOINT = {"root": 0, "neck": 1, "jaw": 2, "left_eye": 3, "right_eye": 4}


# ---------------------------------------------------------------------------------------- geometry
def rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """[3,3] rotation about a unit axis (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points [N,3] -> (centre [3], radius)."""
    a = np.concatenate([2 * points, np.ones((len(points), 1))], axis=1)
    b = (points**2).sum(1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid (R [3,3], t [3]) minimising |R src + t - dst| over points [N,3]."""
    cs, cd = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cd - r @ cs


def affine_weights(anchors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Minimum-norm weights w [N] with sum(w) = 1 and w @ anchors [N,3] = target [3].

    Used for the joint regressor: with anchors that surround the joint, the joint follows the
    identity shape the way the surrounding surface does.
    """
    mean = anchors.mean(0)
    x = (anchors - mean).T  # [3,N], rows sum to zero, so the correction keeps sum(w) = 1
    corr = x.T @ np.linalg.solve(x @ x.T, target - mean)
    return np.full(len(anchors), 1.0 / len(anchors)) + corr


def vertex_adjacency(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """Row-normalised [V,V] adjacency (mean of the 1-ring)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices)).tocsr()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(1)).ravel()
    deg[deg == 0] = 1.0
    return sp.diags(1.0 / deg) @ a


def dilate(mask: np.ndarray, adjacency: sp.csr_matrix, rings: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(rings):
        out = out | (adjacency @ out.astype(np.float64) > 0)
    return out


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def points_in_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of points [N,2] against a closed polygon [P,2]."""
    inside = np.zeros(len(xy), dtype=bool)
    x, y = xy[:, 0], xy[:, 1]
    for i in range(len(poly)):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xc)
    return inside


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of points [N,3] to a polyline [P,3]."""
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def pose_features(rot: np.ndarray) -> np.ndarray:
    """[9] FLAME pose feature of one joint: (R - I) flattened row-major."""
    return (rot - np.eye(3)).reshape(9)


# ---------------------------------------------------------------------------------------- loading
def _model_dir(folder: Path) -> Path:
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise HeadModelError(
            f"ICT-FaceKit folder {folder} does not exist; pass the path of your clone of "
            "https://github.com/ICT-VGL/ICT-FaceKit (or its FaceXModel folder)"
        )
    for cand in (folder, folder / "FaceXModel"):
        if (cand / "generic_neutral_mesh.obj").is_file() and (cand / "vertex_indices.json").is_file():
            return cand
    raise HeadModelError(
        f"{folder} is not an ICT-FaceKit folder: FaceXModel/generic_neutral_mesh.obj and "
        "vertex_indices.json are missing; pass the root of an ICT-FaceKit clone"
    )


def ict_input_files(folder: Path) -> list[Path]:
    """Every file the conversion reads, in a fixed order (the cache checksum covers exactly these)."""
    d = _model_dir(folder)
    names = _expression_names(d)
    files = [d / "generic_neutral_mesh.obj", d / "vertex_indices.json"]
    files += _identity_files(d)
    files += [d / f"{n}.obj" for n in names]
    return files


def _expression_names(d: Path) -> list[str]:
    try:
        info = json.loads((d / "vertex_indices.json").read_text())
        names = list(info["expressions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadModelError(
            f"{d / 'vertex_indices.json'} is damaged ({exc}); restore it from the ICT-FaceKit repository"
        ) from None
    missing = [n for n in names if not (d / f"{n}.obj").is_file()]
    if missing:
        raise HeadModelError(
            f"ICT-FaceKit folder {d} lacks expression shapes {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; restore the complete FaceXModel folder"
        )
    return names


def _identity_files(d: Path) -> list[Path]:
    pat = re.compile(r"identity(\d+)\.obj$")
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_shape(path: Path, neutral: np.ndarray) -> np.ndarray:
    verts = read_obj_vertices(path)
    if verts.shape != neutral.shape:
        raise HeadModelError(
            f"{path} has {verts.shape[0]} vertices but the neutral mesh has {neutral.shape[0]}; "
            "the folder mixes files of different ICT-FaceKit versions"
        )
    return (verts - neutral) * CM


# ---------------------------------------------------------------------------------------- conversion
def convert_ict(folder: Path, progress: Optional[Callable[[str], None]] = None) -> HeadRig:
    """Convert an ICT-FaceKit folder (repository root or its FaceXModel folder) into a `HeadRig`."""
    say = progress or (lambda msg: None)
    d = _model_dir(folder)
    names = _expression_names(d)
    mesh, lm68 = _read_neutral(d)
    neutral_cm = mesh.vertices
    v0 = neutral_cm * CM  # [V,3] metres
    nv = v0.shape[0]
    say(f"reading {len(_identity_files(d))} identity and {len(names)} expression shapes")
    shape_basis = np.stack([_read_shape(p, neutral_cm) for p in _identity_files(d)], axis=-1) if _identity_files(
        d) else np.zeros((nv, 3, 0))
    shapes = {n: _read_shape(d / f"{n}.obj", neutral_cm) for n in names}
    adj = vertex_adjacency(mesh.faces, nv)
    rng = functools.partial(_range_mask, nv=nv)
    j = _joints(v0, shapes, lm68, rng)
    weights, w_neck = _skinning(v0, shapes, j, adj, rng)
    regions = _regions(v0, shapes, lm68, j.eye_centre, w_neck, adj, rng)
    correctives, eye_fit, jaw_fit = _correctives(v0, shapes, weights, j, regions, rng)
    regressor = _joint_regressor(v0, j, rng)
    removed = {"jawOpen"} | {f"eyeLook{d_}_{s}" for d_ in ("Up", "Down", "In", "Out") for s in ("L", "R")}
    kept = [n for n in names if n not in removed]
    expr = np.stack([shapes[n] for n in kept], axis=-1) if kept else np.zeros((nv, 3, 0))

    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    rig = HeadRig(
        name="ict",
        template=f32(v0),
        faces=torch.from_numpy(mesh.faces.astype(np.int64)),
        shape_basis=f32(shape_basis),
        expr_basis=f32(expr),
        joint_regressor=f32(regressor),
        lbs_weights=f32(weights),
        pose_correctives=f32(correctives),
        expr_names=kept,
        regions={k: torch.from_numpy(v) for k, v in regions.items()},
        landmarks_68=torch.from_numpy(lm68),
        uvs=None if mesh.uvs is None else f32(mesh.uvs),
        face_uvs=None if mesh.face_uvs is None else torch.from_numpy(mesh.face_uvs),
        meta={
            "source": "ICT-FaceKit",
            "license": "MIT (ICT-FaceKit, USC Institute for Creative Technologies)",
            "converter_version": CONVERTER_VERSION,
            "jaw_fit_mm": jaw_fit,
            "jaw_open_angle_deg": float(np.degrees(np.arccos(np.clip((np.trace(j.jaw_rot) - 1) / 2, -1, 1)))),
            "eye_look_angle_deg": EYE_LOOK_ANGLE_DEG,
            "eye_corrective_rms_mm": eye_fit,
            "eye_radius_m": {k: float(v) for k, v in j.eye_radius.items()},
            "removed_expressions": sorted(removed & set(names)),
        },
    )
    _verify_jaw_with_lbs(rig, j.jaw_rot, shapes.get("jawOpen"), rng("face"))
    return rig


def _range_mask(name: str, nv: int) -> np.ndarray:
    """[V] bool: the vertices of the ICT mesh part `name` (its index range)."""
    m = np.zeros(nv, dtype=bool)
    a, b = RANGES[name]
    m[a:b] = True
    return m


def _read_neutral(d: Path):
    """(the neutral mesh, its 68 landmark vertex indices), checked against the ICT Face Model Light."""
    info = json.loads((d / "vertex_indices.json").read_text())
    mesh = read_obj(d / "generic_neutral_mesh.obj")
    if mesh.vertices.shape[0] != NUM_VERTICES:
        raise HeadModelError(
            f"{d / 'generic_neutral_mesh.obj'} has {mesh.vertices.shape[0]} vertices, expected {NUM_VERTICES} "
            "(ICT Face Model Light); use the FaceXModel folder of the public ICT-FaceKit repository"
        )
    lm68 = np.asarray(info.get("idx_to_landmark_verts", []), dtype=np.int64)
    if lm68.shape != (68,):
        raise HeadModelError(
            f"{d / 'vertex_indices.json'} lacks the 68 landmark indices; restore it from the ICT-FaceKit repository"
        )
    return mesh, lm68


@dataclass
class _Joints:
    """The rig's joints fitted to the neutral mesh, and what they were fitted from."""

    joints: np.ndarray  # [5,3] root, neck, jaw, left eye, right eye (metres)
    eye_centre: dict  # side -> [3]
    eye_radius: dict  # side -> metres
    jaw_rot: np.ndarray  # [3,3] the jaw rotation that best explains jawOpen
    jaw_centre: np.ndarray  # [3]
    chin: np.ndarray  # [3]
    neck_y: float
    root_y: float
    body: np.ndarray  # [V] bool: face + head/neck vertices


def _joints(v0: np.ndarray, shapes: dict, lm68: np.ndarray, rng) -> _Joints:
    eye_centre, eye_radius = {}, {}
    for side in ("left", "right"):
        a, b = SCLERA[side]
        eye_centre[side], eye_radius[side] = fit_sphere(v0[a:b])
    jaw_rot, jaw_centre = _fit_jaw_rotation(v0, shapes.get("jawOpen"))
    chin = v0[lm68[8]]
    nose_base = v0[lm68[33]]
    body = rng("face") | rng("head_neck")
    neck_y = 0.5 * (nose_base[1] + chin[1])
    neck_axis_z = _cross_section_centre_z(v0, body, chin[1] - 0.025)
    neck_joint = np.array([0.0, neck_y, neck_axis_z])
    root_y = chin[1] - 0.06
    root_joint = np.array([0.0, root_y, _cross_section_centre_z(v0, body, root_y)])
    joints = np.stack([root_joint, neck_joint, jaw_centre, eye_centre["left"], eye_centre["right"]])
    return _Joints(joints, eye_centre, eye_radius, jaw_rot, jaw_centre, chin, neck_y, root_y, body)


def _skinning(v0: np.ndarray, shapes: dict, j: _Joints, adj, rng) -> tuple[np.ndarray, np.ndarray]:
    """(LBS weights [V,5], the neck weight [V]). Neck falloff: full head above a plane that runs 1 cm under the
    chin in front and 1 cm under the neck joint at the nape, fading to the root over 5 cm below it."""
    z_front, z_back = j.chin[2] - 0.05, v0[j.body, 2].min() + 0.03
    y_front, y_back = j.chin[1] - 0.01, j.neck_y - 0.01
    t = np.clip((v0[:, 2] - z_back) / (z_front - z_back), 0.0, 1.0)
    y_top = y_back + t * (y_front - y_back)
    w_neck = smoothstep((v0[:, 1] - (y_top - 0.05)) / 0.05)
    w_jaw = _fit_jaw_weights(v0, shapes.get("jawOpen"), j.jaw_rot, j.jaw_centre, adj, rng)
    w_jaw = np.minimum(w_jaw, w_neck)
    weights = np.zeros((v0.shape[0], 5))
    weights[:, JOINT["root"]] = 1.0 - w_neck
    weights[:, JOINT["neck"]] = w_neck - w_jaw
    weights[:, JOINT["jaw"]] = w_jaw
    for side in ("left", "right"):
        eye = rng(f"eyeball_{side}")
        weights[eye] = 0.0
        weights[eye, JOINT[f"{side}_eye"]] = 1.0
    return weights, w_neck


def _correctives(v0: np.ndarray, shapes: dict, weights: np.ndarray, j: _Joints, regions: dict, rng):
    """(pose correctives [V,3,P]: the lids follow the eyes, the jaw's shape beyond its rotation; the eye fits'
    RMS, the jaw fit's)."""
    correctives = np.zeros((v0.shape[0], 3, NUM_POSE_FEATURES))
    eye_fit = {}
    for side, s in (("left", "L"), ("right", "R")):
        corr, rms = _fit_eye_corrective(side, s, shapes, v0, j.eye_centre[side], regions)
        correctives[:, :, FEATURES[f"{side}_eye"]] = corr
        eye_fit[side] = rms
    jaw_corr, jaw_fit = _fit_jaw_corrective(v0, shapes.get("jawOpen"), weights, j.joints, j.jaw_rot, rng("face"))
    correctives[:, :, FEATURES["jaw"]] = jaw_corr
    return correctives, eye_fit, jaw_fit


def _joint_regressor(v0: np.ndarray, j: _Joints, rng) -> np.ndarray:
    """[5,V]: each joint as an affine combination of anchor vertices (a slab of the body, or the eyeball)."""
    regressor = np.zeros((5, v0.shape[0]))
    slab = lambda y, half: np.nonzero(j.body & (np.abs(v0[:, 1] - y) < half))[0]  # noqa: E731
    for k, anchors in (
        (JOINT["root"], slab(j.root_y, 0.01)),
        (JOINT["neck"], slab(j.neck_y, 0.01)),
        (JOINT["jaw"], slab(j.jaw_centre[1], 0.01)),
        (JOINT["left_eye"], np.arange(*RANGES["eyeball_left"])),
        (JOINT["right_eye"], np.arange(*RANGES["eyeball_right"])),
    ):
        regressor[k, anchors] = affine_weights(v0[anchors], j.joints[k])
    return regressor


def _cross_section_centre_z(v0: np.ndarray, body: np.ndarray, y: float) -> float:
    """Middle (in z) of the head/neck surface near height y along the midline strip."""
    strip = body & (np.abs(v0[:, 1] - y) < 0.005) & (np.abs(v0[:, 0]) < 0.02)
    if strip.sum() < 2:
        raise HeadModelError("the ICT neck geometry is not where expected; the mesh is not ICT Face Model Light")
    z = v0[strip, 2]
    return float(0.5 * (z.min() + z.max()))


def _fit_jaw_rotation(v0: np.ndarray, jaw_open: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation [3,3] of the (rigid) lower teeth in jawOpen and the point it leaves fixed [3]."""
    if jaw_open is None:
        raise HeadModelError("the ICT-FaceKit folder has no jawOpen.obj; restore the complete FaceXModel folder")
    a, b = LOWER_TEETH
    rot, trans = kabsch(v0[a:b], v0[a:b] + jaw_open[a:b])
    # rotation about centre c: x' = R (x - c) + c, so t = (I - R) c; solve in least squares and keep
    # the centre on the midline (ICT is left/right symmetric, the jaw opens about +x)
    m = np.eye(3) - rot
    c_yz, *_ = np.linalg.lstsq(m[:, 1:], trans, rcond=None)
    return rot, np.array([0.0, c_yz[0], c_yz[1]])


def _fit_jaw_weights(v0, jaw_open, rot, centre, adj, rng) -> np.ndarray:
    """[V] share of the jaw rotation in jawOpen's motion, clamped to [0,1] and smoothed over the mesh."""
    r = (v0 - centre) @ (rot - np.eye(3)).T  # displacement under the full jaw rotation
    # ridge of (2 mm)^2: near the centre the rotation moves little, so tiny motions must not
    # produce large weights; motions under 0.2 mm are not the jaw's
    w = (jaw_open * r).sum(1) / ((r * r).sum(1) + 0.002**2)
    w = np.where(np.linalg.norm(jaw_open, axis=1) > 2e-4, np.clip(w, 0.0, 1.0), 0.0)
    movable = rng("face") | rng("head_neck") | rng("mouth_socket") | rng("gums_tongue")
    w[~movable] = 0.0
    lower = np.zeros(len(v0), dtype=bool)
    lower[LOWER_TEETH[0]:LOWER_TEETH[1]] = True
    w[lower] = 1.0
    for _ in range(4):  # smooth falloff; teeth stay rigid, everything else immovable stays at 0
        w = adj @ w
        w[lower] = 1.0
        w[~(movable | lower)] = 0.0
    return w


def _lbs_one_joint(v: np.ndarray, w: np.ndarray, rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """[V,3] LBS of rest vertices when only one joint rotates (others identity): w blends R about centre."""
    return v + w[:, None] * ((v - centre) @ (rot - np.eye(3)).T)


def _fit_jaw_corrective(v0, jaw_open, weights, joints, rot, face_mask):
    """Jaw corrective [V,3,9] so that LBS at the fitted angle reproduces jawOpen; errors in mm."""
    w = weights[:, JOINT["jaw"]]
    c = joints[JOINT["jaw"]]
    target = v0 + jaw_open
    skinned = _lbs_one_joint(v0, w, rot, c)
    # FLAME adds correctives before skinning; the skinning of a vertex is x -> A x + b with
    # A = I + w (R - I), so the rest-space offset is A^-1 (target - skinned)
    a = np.eye(3)[None] + w[:, None, None] * (rot - np.eye(3))[None]
    offset = np.linalg.solve(a, (target - skinned)[..., None])[..., 0]
    offset[np.linalg.norm(offset, axis=1) < 1e-7] = 0.0
    f = pose_features(rot)
    corr = offset[:, :, None] * (f / (f @ f))[None, None, :]  # minimum-norm: corr @ f = offset
    final = _lbs_one_joint(v0 + corr @ f, w, rot, c)
    err = np.linalg.norm(final - target, axis=1)[face_mask] * 1000
    skin_err = np.linalg.norm(skinned - target, axis=1)[face_mask] * 1000
    return corr, {
        "mean": float(err.mean()),
        "p95": float(np.percentile(err, 95)),
        "skinning_only_mean": float(skin_err.mean()),
        "skinning_only_p95": float(np.percentile(skin_err, 95)),
    }


def _eye_rotations(side: str) -> dict[str, np.ndarray]:
    """Gaze rotation per eyeLook direction. Pitch about +x looks down; yaw about +y looks to +x (the
    subject's left), which is "out" for the left eye and "in" for the right eye."""
    a = np.radians(EYE_LOOK_ANGLE_DEG)
    out_sign = 1.0 if side == "left" else -1.0
    ex, ey = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    return {
        "Up": rotation(ex, -a),
        "Down": rotation(ex, a),
        "Out": rotation(ey, out_sign * a),
        "In": rotation(ey, -out_sign * a),
    }


def _fit_eye_corrective(side, s, shapes, v0, centre, regions):
    """Eye corrective [V,3,9] (minimum norm) reproducing the eyeLook shapes' lid motion; rms mm."""
    rots = _eye_rotations(side)
    dirs = [d_ for d_ in ("Up", "Down", "In", "Out") if f"eyeLook{d_}_{s}" in shapes]
    nv = len(v0)
    if not dirs:
        return np.zeros((nv, 3, 9)), 0.0
    feats = np.stack([pose_features(rots[d_]) for d_ in dirs], axis=1)  # [9,K]
    deltas = np.stack([shapes[f"eyeLook{d_}_{s}"] for d_ in dirs], axis=-1)  # [V,3,K]
    # only the lids (and helper geometry around this eye) may follow the gaze
    near = np.linalg.norm(v0 - centre, axis=1) < 0.04
    allowed = near & (regions["eyelids"] | regions["helper"])
    deltas = deltas * allowed[:, None, None]
    corr = deltas @ np.linalg.pinv(feats)  # [V,3,9]
    rms = float(np.sqrt(((corr @ feats - deltas) ** 2).sum(1).mean()) * 1000)
    return corr, rms


def _regions(v0, shapes, lm68, eye_centre, w_neck, adj, rng) -> dict[str, np.ndarray]:
    nv = len(v0)
    face_all = rng("face")
    head = w_neck > 0.5
    regions = {
        "face": face_all & head,
        "neck": (face_all | rng("head_neck")) & ~head,
        "scalp": rng("head_neck") & head,
        "mouth_interior": rng("mouth_socket") | rng("gums_tongue"),
        "gums": rng("gums_tongue"),
        "teeth": rng("teeth"),
        "eyeball_left": rng("eyeball_left"),
        "eyeball_right": rng("eyeball_right"),
    }
    helper = np.zeros(nv, dtype=bool)
    helper[HELPER[0]:HELPER[1]] = True
    regions["helper"] = helper

    # lips: inside the outer lip contour (68-landmarks 48..59) seen from the front, on the face's
    # front part, grown by one ring so the vermilion border is included
    poly = v0[lm68[48:60], :2]
    zmin = v0[lm68[48:60], 2].min() - 0.015
    lips = face_all & (v0[:, 2] > zmin) & points_in_polygon(v0[:, :2], poly)
    regions["lips"] = dilate(lips, adj, 1) & face_all

    # eyelids: face skin within 2.5 cm of an eye centre that blinks or follows the gaze (> 0.5 mm),
    # plus the eye-socket geometry inside the lids
    moving = np.zeros(nv, dtype=bool)
    for n, delta in shapes.items():
        if n.startswith(("eyeBlink", "eyeLook")):
            moving |= np.linalg.norm(delta, axis=1) > 5e-4
    near_eye = np.minimum(*(np.linalg.norm(v0 - c, axis=1) for c in eye_centre.values())) < 0.025
    regions["eyelids"] = (face_all & moving & near_eye) | rng("eye_socket_left") | rng("eye_socket_right")

    # brows: face skin within 1 cm of the brow landmark polylines (17..21, 22..26), above the eyes
    eye_top = v0[lm68[36:48], 1].max()
    brow_d = np.minimum(distance_to_polyline(v0, v0[lm68[17:22]]), distance_to_polyline(v0, v0[lm68[22:27]]))
    regions["brows"] = face_all & (brow_d < 0.01) & (v0[:, 1] > eye_top + 0.003)
    return regions


def _verify_jaw_with_lbs(rig: HeadRig, rot: np.ndarray, jaw_open: np.ndarray, face_mask: np.ndarray) -> None:
    """Re-measure the jaw fit through the shared LBS (float32, the rig as it will be used)."""
    try:
        from avatar3d.head.lbs import pose_vertices
        from avatar3d.head.rig import RigParams
    except ImportError:  # LBS not available: keep the numpy figures
        return
    ang = np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    axis = axis / np.linalg.norm(axis)
    params = RigParams.zeros(rig, 2)
    params.jaw[0] = torch.from_numpy(axis * ang).float()
    params.jaw[1] = torch.from_numpy(axis * ang / 2).float()
    posed = pose_vertices(rig, params).double().numpy()  # [2,V,3]
    rest = rig.template.double().numpy()
    err = np.linalg.norm(posed[0] - (rest + jaw_open), axis=1)[face_mask] * 1000
    # how far the rotation rig departs from the linear blend shape at half opening (not an error:
    # the rotation is the more faithful motion, but it shows what removing jawOpen changes)
    half = np.linalg.norm(posed[1] - (rest + 0.5 * jaw_open), axis=1)[face_mask] * 1000
    rig.meta["jaw_fit_mm"].update(
        mean=float(err.mean()), p95=float(np.percentile(err, 95)), checked_with="lbs",
        half_open_vs_linear_mean=float(half.mean()), half_open_vs_linear_p95=float(np.percentile(half, 95)),
    )
