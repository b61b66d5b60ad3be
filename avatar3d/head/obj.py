"""Fast Wavefront OBJ reading for head models (vertices, triangulated faces, UVs, material groups).

Blend-shape folders hold dozens of OBJs with the same topology, so vertex lines are parsed in one
numpy call per file instead of line by line; faces are parsed once (from the neutral mesh).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from avatar3d.errors import HeadModelError


@dataclass
class ObjMesh:
    vertices: np.ndarray  # [V,3] float64, file units
    faces: np.ndarray  # [F,3] int64 triangles (polygons fan-triangulated)
    uvs: Optional[np.ndarray] = None  # [T,2] float64
    face_uvs: Optional[np.ndarray] = None  # [F,3] int64 into uvs (None when the file has no vt indices)
    polygon_of_face: Optional[np.ndarray] = None  # [F] int64: the source polygon of each triangle
    materials: dict[str, np.ndarray] = field(default_factory=dict)  # usemtl name -> [P] polygon indices


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise HeadModelError(f"OBJ file {path} does not exist; check the model folder path") from None
    except OSError as exc:
        raise HeadModelError(f"cannot read OBJ file {path} ({exc}); check its permissions") from None


def _lines_with_prefix(text: str, prefix: str) -> list[str]:
    """Lines that start with `prefix` (e.g. 'v '), prefix stripped."""
    n = len(prefix)
    return [ln[n:] for ln in text.splitlines() if ln.startswith(prefix)]


def _float_block(lines: list[str], width: int, path: Path, what: str) -> np.ndarray:
    if not lines:
        return np.zeros((0, width))
    # one split over the joined block is ~50x faster than per-line float parsing
    flat = np.array(" ".join(lines).split(), dtype=np.float64)
    if flat.size == len(lines) * width:
        return flat.reshape(-1, width)
    # some writers append extra columns (vertex colours, w): fall back to per-line for this file
    rows = [ln.split()[:width] for ln in lines]
    if any(len(r) < width for r in rows):
        raise HeadModelError(f"{path}: a '{what}' line has fewer than {width} numbers; the OBJ is damaged")
    return np.array(rows, dtype=np.float64)


def read_obj_vertices(path: Path) -> np.ndarray:
    """[V,3] float64 vertex positions of an OBJ (faces are not parsed)."""
    text = _read_text(path)
    verts = _float_block(_lines_with_prefix(text, "v "), 3, path, "v")
    if verts.shape[0] == 0:
        raise HeadModelError(f"{path} has no vertices; it is not a mesh OBJ")
    return verts


def read_obj(path: Path) -> ObjMesh:
    """Vertices, fan-triangulated faces, UVs and per-material polygon lists of an OBJ."""
    path = Path(path)
    text = _read_text(path)
    verts = _float_block(_lines_with_prefix(text, "v "), 3, path, "v")
    if verts.shape[0] == 0:
        raise HeadModelError(f"{path} has no vertices; it is not a mesh OBJ")
    uv_lines = _lines_with_prefix(text, "vt ")
    uvs = _float_block([" ".join(ln.split()[:2]) for ln in uv_lines], 2, path, "vt") if uv_lines else None

    tri_v: list[tuple[int, int, int]] = []
    tri_t: list[tuple[int, int, int]] = []
    tri_poly: list[int] = []
    materials: dict[str, list[int]] = {}
    current: Optional[str] = None
    has_vt = True
    poly = 0
    nv, nt = verts.shape[0], (0 if uvs is None else uvs.shape[0])
    for ln in text.splitlines():
        if ln.startswith("usemtl "):
            current = ln[7:].strip()
            materials.setdefault(current, [])
            continue
        if not ln.startswith("f "):
            continue
        corners = ln[2:].split()
        if len(corners) < 3:
            raise HeadModelError(f"{path}: face line {ln!r} has fewer than 3 corners; the OBJ is damaged")
        vi, ti = [], []
        for c in corners:
            parts = c.split("/")
            v = int(parts[0])
            vi.append(v - 1 if v > 0 else nv + v)  # OBJ is 1-based; negatives count from the end
            if len(parts) > 1 and parts[1]:
                t = int(parts[1])
                ti.append(t - 1 if t > 0 else nt + t)
            else:
                has_vt = False
        for k in range(1, len(corners) - 1):  # fan: quads (0,1,2),(0,2,3) keep the winding
            tri_v.append((vi[0], vi[k], vi[k + 1]))
            if has_vt:
                tri_t.append((ti[0], ti[k], ti[k + 1]))
            tri_poly.append(poly)
        if current is not None:
            materials[current].append(poly)
        poly += 1
    faces = np.asarray(tri_v, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise HeadModelError(f"{path}: a face refers to a vertex that does not exist; the OBJ is damaged")
    face_uvs = np.asarray(tri_t, dtype=np.int64).reshape(-1, 3) if (has_vt and uvs is not None and tri_t) else None
    return ObjMesh(
        vertices=verts,
        faces=faces,
        uvs=uvs,
        face_uvs=face_uvs,
        polygon_of_face=np.asarray(tri_poly, dtype=np.int64),
        materials={k: np.asarray(v, dtype=np.int64) for k, v in materials.items()},
    )
