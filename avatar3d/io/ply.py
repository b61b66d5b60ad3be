"""The standard world-space 3D Gaussian Splatting PLY (the format of the original 3DGS code and its viewers).

Binary little endian, one `vertex` element with float32 properties in this order:
x,y,z, nx,ny,nz (zeros), f_dc_0..2, f_rest_0..M-1, opacity (logit), scale_0..2 (log), rot_0..3 (w,x,y,z).
`f_rest` is stored channel-major as 3DGS does: f_rest_{c*(K-1)+k} is SH coefficient k+1 of colour c,
K = (degree+1)^2. This is an export format; the avatar itself is stored bound to the rig.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_path

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_MAX_HEADER = 1 << 16


def _np(x: Any, name: str, shape: tuple) -> np.ndarray:
    """Array as float32 with the expected shape (None = any size); accepts numpy or torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "[" + ",".join("N" if s is None else str(s) for s in shape) + "]"
        raise InputError(f"PLY field {name} must have shape {want}, got {tuple(arr.shape)}")
    return arr


@dataclass
class GaussianPly:
    """World-space Gaussians in 3DGS's raw parameterisation."""

    means: np.ndarray  # [N,3] world positions (metres)
    quats: np.ndarray  # [N,4] rotation quaternion w,x,y,z (not necessarily normalised)
    log_scales: np.ndarray  # [N,3] log of the per-axis standard deviations
    opacity_logit: np.ndarray  # [N] logit of the opacity
    sh_dc: np.ndarray  # [N,3] degree-0 SH coefficient per colour
    sh_rest: np.ndarray = None  # [N,K-1,3] higher SH coefficients (K = (degree+1)^2); [N,0,3] for degree 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other per-vertex properties found on read

    def __post_init__(self) -> None:
        self.means = _np(self.means, "means", (None, 3))
        n = self.means.shape[0]
        self.quats = _np(self.quats, "quats", (n, 4))
        self.log_scales = _np(self.log_scales, "log_scales", (n, 3))
        self.opacity_logit = _np(self.opacity_logit, "opacity_logit", (n,))
        self.sh_dc = _np(self.sh_dc, "sh_dc", (n, 3))
        rest = np.zeros((n, 0, 3), np.float32) if self.sh_rest is None else self.sh_rest
        self.sh_rest = _np(rest, "sh_rest", (n, None, 3))
        degree = math.isqrt(self.sh_rest.shape[1] + 1) - 1
        if (degree + 1) ** 2 != self.sh_rest.shape[1] + 1:
            raise InputError(f"sh_rest has {self.sh_rest.shape[1]} coefficients per colour; it must be "
                             f"(degree+1)^2-1 (0, 3, 8 or 15)")

    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh_rest.shape[1] + 1) - 1


def _property_names(num_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str | os.PathLike, gaussians: GaussianPly) -> Path:
    """Write `gaussians` as a standard 3DGS PLY, atomically; returns the path."""
    g = gaussians
    n, k1 = g.num, g.sh_rest.shape[1]
    rest = g.sh_rest.transpose(0, 2, 1).reshape(n, 3 * k1)  # channel-major, as 3DGS stores it
    columns = [g.means, np.zeros((n, 3), np.float32), g.sh_dc, rest, g.opacity_logit[:, None],
               g.log_scales, g.quats]
    data = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    names = _property_names(3 * k1)
    header = ["ply", "format binary_little_endian 1.0", "comment made by avatar3d",
              f"element vertex {n}"] + [f"property float {name}" for name in names] + ["end_header"]
    final = Path(path)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(data.tobytes())
    return final


def _parse_header(fh, path: Path) -> tuple[str, int, list[tuple[str, str]]]:
    """-> (byte order '<' or '>', vertex count, [(property name, numpy type)]) for the vertex element."""
    if fh.readline().strip() != b"ply":
        raise InputError(f"{path} is not a PLY file (no 'ply' magic line); pass a .ply exported by 3DGS tools")
    order, count, props, element = None, None, [], None
    while True:
        line = fh.readline()
        if not line or fh.tell() > _MAX_HEADER:
            raise InputError(f"{path}: the PLY header has no end_header line; the file is truncated or damaged")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1])
            if order is None:
                raise InputError(f"{path}: PLY format {words[1]!r} is not supported; save it as "
                                 f"binary_little_endian (any 3DGS tool's default)")
        elif words[0] == "element":
            if element is None and words[1] != "vertex":
                raise InputError(f"{path}: the first PLY element is {words[1]!r}; a Gaussian PLY starts "
                                 f"with 'element vertex'")
            element = words[1]
            if element == "vertex":
                count = int(words[2])
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise InputError(f"{path}: vertex property {' '.join(words[1:])!r} is not a scalar PLY type")
            props.append((words[2], _PLY_TYPES[words[1]]))
    if order is None or count is None:
        raise InputError(f"{path}: the PLY header lacks a format line or a vertex element; the file is damaged")
    return order, count, props


def read_ply(path: str | os.PathLike) -> GaussianPly:
    """Read a 3DGS PLY (any scalar property types, extra properties kept in `extra`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"PLY file not found: {p}; check the path")
    with open(p, "rb") as fh:
        order, count, props = _parse_header(fh, p)
        dtype = np.dtype([(name, order + t) for name, t in props])
        body = fh.read()
        data = np.frombuffer(body, dtype=dtype, count=min(count, len(body) // dtype.itemsize))
    if len(data) != count:
        raise InputError(f"{p}: the header promises {count} Gaussians but the file holds {len(data)}; "
                         f"it is truncated, export it again")
    names = set(dtype.names)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [r for r in required if r not in names]
    if missing:
        raise InputError(f"{p} is not a 3D Gaussian PLY: it lacks {', '.join(missing)} (a point cloud "
                         f"or mesh PLY?); pass a file exported by 3DGS tools")

    def cols(keys: list[str]) -> np.ndarray:
        return np.stack([data[k].astype(np.float32) for k in keys], axis=1) if keys \
            else np.zeros((count, 0), np.float32)

    rest_keys = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k[7:]))
    if len(rest_keys) % 3:
        raise InputError(f"{p} has {len(rest_keys)} f_rest properties; 3DGS files have a multiple of 3 "
                         f"(3 colours x ((degree+1)^2-1))")
    k1 = len(rest_keys) // 3
    sh_rest = cols(rest_keys).reshape(count, 3, k1).transpose(0, 2, 1)
    known = set(required) | set(rest_keys) | {"nx", "ny", "nz"}
    return GaussianPly(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=cols(["scale_0", "scale_1", "scale_2"]),
        opacity_logit=data["opacity"].astype(np.float32),
        sh_dc=cols(["f_dc_0", "f_dc_1", "f_dc_2"]),
        sh_rest=np.ascontiguousarray(sh_rest),
        extra={k: np.array(data[k]) for k in dtype.names if k not in known},
    )
