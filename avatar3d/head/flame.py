"""FLAME `.pkl` → `HeadRig` (FLAME 2020, 2023 and 2023 Open).

The user supplies their own model file (it cannot be redistributed). It is read through the restricted
unpickler (`avatar3d.head.unpickle`): no chumpy, no code from the file is run.

Keys used (FLAME's layout; V = 5023 for the real model):
    v_template [V,3]  f [F,3]  shapedirs [V,3,K] (first 300 identity, the rest expression)
    posedirs [V,3,36] or [V*3,36]  J_regressor [5,V] (scipy.sparse or dense)  weights [V,5]
    kintree_table [2,5]  optional: vt [T,2], ft [F,3]
The version (2020 / 2023 / 2023 Open) cannot be told apart from the arrays; `meta["version_guess"]`
comes from the file name (generic_model/female_model/male_model → 2020, *2023* → 2023, *open* →
2023 Open).

Optional FLAME side files (separately licensed; accepted when the user has them):
    masks_path      FLAME_masks.pkl: vertex index lists per region; face, lips, scalp, neck, ears
                    (left_ear + right_ear), eyeball_left/right (left_eyeball/right_eyeball) are used.
    embedding_path  landmark_embedding.npy (FLAME's 68-landmark embedding, `full_lmk_*` entries)
                    → `landmarks_68` (the vertex of largest barycentric weight per landmark), or
                    mediapipe_landmark_embedding.npz (`lmk_face_idx`, `lmk_b_coords`,
                    `landmark_indices`) → a partial MediaPipe-478 embedding with `valid` set.
Without them the eyeball regions are derived from the skinning weights; the other regions and the
full MediaPipe embedding come from the shared embedding procedure.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import HeadModelError
from .rig import JOINT_PARENTS, NUM_JOINTS, NUM_POSE_FEATURES, HeadRig, LandmarkEmbedding
from .unpickle import safe_load_pickle

FLAME_NUM_IDENTITY = 300  # FLAME's shapedirs: 300 identity components, then the expression components
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
_MASK_MAP = {
    "face": ("face",), "lips": ("lips",), "scalp": ("scalp",), "neck": ("neck",),
    "ears": ("left_ear", "right_ear"), "eyeball_left": ("left_eyeball",), "eyeball_right": ("right_eyeball",),
}


def _fail(path, problem: str) -> HeadModelError:
    return HeadModelError(f"{path}: {problem}")


def _array(data: dict, key: str, path, *, ndim: Optional[int] = None, kind: str = "f") -> np.ndarray:
    value = data[key]
    if hasattr(value, "toarray"):  # scipy.sparse
        value = value.toarray()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a damaged file
        raise _fail(path, f"entry {key!r} is not an array ({exc}); the file is damaged, download it again") from exc
    if kind == "f" and not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise _fail(path, f"entry {key!r} has dtype {arr.dtype}, expected numbers; this is not a FLAME model file")
    if kind == "i" and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise _fail(path, f"entry {key!r} has dtype {arr.dtype}, expected integers; this is not a FLAME model file")
    if ndim is not None and arr.ndim != ndim:
        raise _fail(path, f"entry {key!r} has shape {arr.shape}, expected {ndim} dimensions; this is not a FLAME "
                          "model file (or it is damaged)")
    if kind == "f" and not np.all(np.isfinite(arr)):
        raise _fail(path, f"entry {key!r} contains NaN/inf values; the file is damaged, download it again")
    return arr


def _version_guess(path: Path) -> str:
    name = path.name.lower()
    if "open" in name:
        return "2023 Open"
    if "2023" in name:
        return "2023"
    if "2020" in name or name.startswith(("generic_model", "female_model", "male_model")):
        return "2020"
    return "unknown"


def load_flame_pkl(path, *, num_shape: Optional[int] = None, num_expr: Optional[int] = None,
                   masks_path=None, embedding_path=None, name: Optional[str] = None) -> HeadRig:
    """Read a FLAME model pickle into a float32 CPU `HeadRig`.

    num_shape / num_expr: keep only the first components (default: all the file has).
    masks_path / embedding_path: optional FLAME side files (see the module doc).
    Raises HeadModelError naming the problem for a missing, truncated, non-pickle or non-FLAME file.
    """
    path = Path(path)
    if not path.is_file():
        raise HeadModelError(f"{path} does not exist; pass the path of your FLAME model file (e.g. generic_model.pkl "
                             "or flame2023.pkl, downloaded from flame.is.tue.mpg.de)")
    raw = path.read_bytes()
    data = safe_load_pickle(raw)
    if not isinstance(data, dict):
        raise _fail(path, f"holds a {type(data).__name__}, not a dict of arrays; this is not a FLAME model file")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise _fail(path, f"lacks {', '.join(missing)}; this is not a FLAME model file (FLAME's .pkl has "
                          f"{', '.join(REQUIRED_KEYS)})")

    v_template, faces = _read_mesh(data, path)
    V = v_template.shape[0]
    shapedirs, S, E, s_avail, e_avail = _read_bases(data, path, V, num_shape, num_expr)
    posedirs = _read_posedirs(data, path, V)
    regressor, weights = _read_skinning(data, path, V)
    uvs, face_uvs = _read_uvs(data, path, faces)

    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    weights_t = f32(weights)
    regions = {
        "eyeball_left": weights_t[:, 3] > 0.5,
        "eyeball_right": weights_t[:, 4] > 0.5,
    }
    meta = {
        "source": "flame",
        "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "version_guess": _version_guess(path),
        "chumpy_in_file": b"chumpy" in raw,
        "num_shape": S, "num_expr": E,
        "num_shape_available": s_avail, "num_expr_available": e_avail,
        "regions_from": "skinning weights (eyeballs)",
    }
    rig = HeadRig(
        name=name or "flame",
        template=f32(v_template),
        faces=torch.from_numpy(faces),
        shape_basis=f32(shapedirs[:, :, :S]),
        expr_basis=f32(shapedirs[:, :, s_avail:s_avail + E]),
        joint_regressor=f32(regressor),
        lbs_weights=weights_t,
        pose_correctives=f32(posedirs),
        expr_names=[f"expr{i:03d}" for i in range(E)],
        regions=regions,
        uvs=None if uvs is None else f32(uvs),
        face_uvs=None if face_uvs is None else torch.from_numpy(face_uvs),
        meta=meta,
    )
    if masks_path is not None:
        _apply_masks(rig, Path(masks_path))
    if embedding_path is not None:
        _apply_embedding(rig, Path(embedding_path))
    return rig


def _read_mesh(data: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(v_template [V,3], faces [F,3] int64), checked."""
    v_template = _array(data, "v_template", path, ndim=2)
    V = v_template.shape[0]
    if v_template.shape[1] != 3 or V < 4:
        raise _fail(path, f"v_template has shape {v_template.shape}, expected [V,3]; not a FLAME model file")
    faces = _array(data, "f", path, ndim=2, kind="i").astype(np.int64)
    if faces.shape[1] != 3 or faces.shape[0] == 0:
        raise _fail(path, f"f has shape {faces.shape}, expected [F,3] triangles; not a FLAME model file")
    if faces.min() < 0 or faces.max() >= V:
        raise _fail(path, f"f references vertex {int(faces.max())} but there are {V}; the file is damaged")
    return v_template, faces


def _read_bases(data: dict, path: Path, V: int, num_shape: Optional[int], num_expr: Optional[int]):
    """(shapedirs [V,3,K], identity count S, expression count E, identity and expression counts available)."""
    shapedirs = _array(data, "shapedirs", path, ndim=3)
    if shapedirs.shape[:2] != (V, 3):
        raise _fail(path, f"shapedirs has shape {shapedirs.shape}, expected [{V},3,K]; the file is damaged")
    K = shapedirs.shape[2]
    s_avail = min(K, FLAME_NUM_IDENTITY)
    e_avail = K - s_avail
    S = s_avail if num_shape is None else int(num_shape)
    E = e_avail if num_expr is None else int(num_expr)
    if not 0 <= S <= s_avail:
        raise HeadModelError(f"num_shape={num_shape} but {path.name} has {s_avail} identity components; "
                             f"choose 0..{s_avail}")
    if not 0 <= E <= e_avail:
        raise HeadModelError(f"num_expr={num_expr} but {path.name} has {e_avail} expression components; "
                             f"choose 0..{e_avail}")
    return shapedirs, S, E, s_avail, e_avail


def _read_posedirs(data: dict, path: Path, V: int) -> np.ndarray:
    """Pose correctives as [V,3,36], from any of the layouts FLAME files use."""
    posedirs = _array(data, "posedirs", path)
    if posedirs.shape == (V, 3, NUM_POSE_FEATURES):
        return posedirs
    if posedirs.shape == (V * 3, NUM_POSE_FEATURES):
        return posedirs.reshape(V, 3, NUM_POSE_FEATURES)
    if posedirs.shape == (NUM_POSE_FEATURES, V * 3):
        return posedirs.T.reshape(V, 3, NUM_POSE_FEATURES)
    raise _fail(path, f"posedirs has shape {posedirs.shape}, expected [{V},3,36] or [{V * 3},36]; not a FLAME "
                      "model file (or damaged)")


def _read_skinning(data: dict, path: Path, V: int) -> tuple[np.ndarray, np.ndarray]:
    """(J_regressor [5,V], LBS weights [V,5]), checked, with the joint tree checked to be FLAME's."""
    regressor = _array(data, "J_regressor", path, ndim=2)
    if regressor.shape != (NUM_JOINTS, V):
        raise _fail(path, f"J_regressor has shape {regressor.shape}, expected [{NUM_JOINTS},{V}]; not a FLAME model "
                          "file (SMPL/MANO files have other joint counts)")
    weights = _array(data, "weights", path, ndim=2)
    if weights.shape != (V, NUM_JOINTS):
        raise _fail(path, f"weights has shape {weights.shape}, expected [{V},{NUM_JOINTS}]; not a FLAME model file")
    if np.abs(weights.sum(1) - 1).max() > 1e-3:
        raise _fail(path, "skinning weights do not sum to 1 per vertex; the file is damaged, download it again")
    kintree = _array(data, "kintree_table", path, ndim=2, kind="i")
    if kintree.shape != (2, NUM_JOINTS):
        raise _fail(path, f"kintree_table has shape {kintree.shape}, expected [2,{NUM_JOINTS}]; not a FLAME model file")
    parents = tuple(int(p) for p in kintree[0, 1:])
    if parents != JOINT_PARENTS[1:] or tuple(int(i) for i in kintree[1]) != tuple(range(NUM_JOINTS)):
        raise _fail(path, f"kintree_table {kintree.tolist()} is not FLAME's joint tree (root, neck, jaw, eyes); "
                          "not a FLAME model file")
    return regressor, weights


def _read_uvs(data: dict, path: Path, faces: np.ndarray):
    """(uvs [U,2], face_uvs [F,3]) when the file has them, else (None, None)."""
    if "vt" not in data or "ft" not in data:
        return None, None
    uvs = _array(data, "vt", path, ndim=2)
    face_uvs = _array(data, "ft", path, ndim=2, kind="i").astype(np.int64)
    if uvs.shape[1] != 2 or face_uvs.shape != faces.shape or face_uvs.min() < 0 or face_uvs.max() >= len(uvs):
        raise _fail(path, f"vt/ft have shapes {uvs.shape}/{face_uvs.shape} inconsistent with f {faces.shape}; "
                          "the file is damaged")
    return uvs, face_uvs


def _apply_masks(rig: HeadRig, path: Path) -> None:
    """FLAME_masks.pkl: {name: vertex indices} → rig.regions (the names FLAME and we share)."""
    masks = safe_load_pickle(path)
    if not isinstance(masks, dict):
        raise HeadModelError(f"{path} is not FLAME_masks.pkl (expected a dict of vertex index arrays)")
    V = rig.num_vertices
    used = []
    for ours, theirs in _MASK_MAP.items():
        present = [t for t in theirs if t in masks]
        if not present:
            continue
        mask = torch.zeros(V, dtype=torch.bool)
        for t in present:
            idx = np.asarray(masks[t]).astype(np.int64).ravel()
            if idx.size and (idx.min() < 0 or idx.max() >= V):
                raise HeadModelError(f"{path}: mask {t!r} references vertex {int(idx.max())} but the model has {V}; "
                                     "use the masks file that matches this FLAME model")
            mask[torch.from_numpy(idx)] = True
        rig.regions[ours] = mask
        used.append(ours)
    if not used:
        raise HeadModelError(f"{path} has none of FLAME's mask names ({', '.join(sorted(masks)[:8])}...); "
                             "pass FLAME_masks.pkl")
    rig.meta["regions_from"] = f"{path.name} ({', '.join(used)}) + skinning weights"


def _load_npy_dict(path: Path) -> dict:
    """An np.save'd dict (object array) read through the restricted unpickler, never np.load(allow_pickle)."""
    raw = path.read_bytes()
    fp = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fp)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)
        shape, _fortran, dtype = header(fp)
    except ValueError as exc:
        raise HeadModelError(f"{path} is not a .npy file ({exc}); pass FLAME's landmark_embedding.npy") from exc
    if not dtype.hasobject:
        raise HeadModelError(f"{path} holds a plain {dtype} array, not FLAME's landmark embedding dict")
    obj = safe_load_pickle(raw[fp.tell():], allow_object_arrays=True)
    value = obj.item() if isinstance(obj, np.ndarray) and obj.size == 1 else obj
    if not isinstance(value, dict):
        raise HeadModelError(f"{path} does not hold a dict; pass FLAME's landmark_embedding.npy")
    return value


def _apply_embedding(rig: HeadRig, path: Path) -> None:
    faces = rig.faces.numpy()
    F = len(faces)

    def checked(face_idx, bary, what):
        face_idx = np.asarray(face_idx).astype(np.int64).ravel()
        bary = np.asarray(bary, dtype=np.float64).reshape(-1, 3)
        if len(face_idx) != len(bary) or (face_idx.size and (face_idx.min() < 0 or face_idx.max() >= F)):
            raise HeadModelError(f"{path}: {what} does not fit this model ({F} triangles); use the embedding file "
                                 "that matches the FLAME model")
        return face_idx, bary

    suffix = path.suffix.lower()
    if not path.is_file():
        raise HeadModelError(f"{path} does not exist; pass FLAME's landmark_embedding.npy or "
                             "mediapipe_landmark_embedding.npz")
    if suffix == ".npy":
        emb = _load_npy_dict(path)
        if "full_lmk_faces_idx" not in emb or "full_lmk_bary_coords" not in emb:
            raise HeadModelError(f"{path} has no full_lmk_faces_idx/full_lmk_bary_coords (68 landmarks); pass "
                                 "FLAME's landmark_embedding.npy")
        fi, bc = checked(emb["full_lmk_faces_idx"], emb["full_lmk_bary_coords"], "the 68-landmark embedding")
        if len(fi) != 68:
            raise HeadModelError(f"{path}: the full landmark embedding has {len(fi)} points, expected 68")
        rig.landmarks_68 = torch.from_numpy(faces[fi, bc.argmax(1)].astype(np.int64))
        rig.meta["landmarks_68_from"] = path.name
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            needed = ("lmk_face_idx", "lmk_b_coords", "landmark_indices")
            if not all(k in z for k in needed):
                raise HeadModelError(f"{path} lacks {', '.join(needed)}; pass FLAME's mediapipe_landmark_embedding.npz")
            fi, bc = checked(z["lmk_face_idx"], z["lmk_b_coords"], "the MediaPipe embedding")
            lm = np.asarray(z["landmark_indices"]).astype(np.int64).ravel()
        if len(lm) != len(fi) or lm.min() < 0 or lm.max() >= 478:
            raise HeadModelError(f"{path}: landmark_indices do not index MediaPipe's 478 landmarks")
        face_idx = torch.zeros(478, dtype=torch.int64)
        bary = torch.zeros(478, 3, dtype=torch.float32)
        bary[:, 0] = 1.0
        valid = torch.zeros(478, dtype=torch.bool)
        face_idx[lm] = torch.from_numpy(fi)
        bary[lm] = torch.from_numpy(bc.astype(np.float32))
        valid[lm] = True
        rig.landmarks_mp = LandmarkEmbedding(face_idx, bary, valid)
        rig.meta["landmarks_mp_from"] = f"{path.name} ({len(lm)} of 478 landmarks)"
    else:
        raise HeadModelError(f"{path}: unsupported embedding file type {suffix!r}; pass FLAME's "
                             "landmark_embedding.npy or mediapipe_landmark_embedding.npz")


__all__ = ["load_flame_pkl", "REQUIRED_KEYS", "FLAME_NUM_IDENTITY"]
