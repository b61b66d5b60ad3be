"""`AVATAR/refined.npz`: the per-frame rig parameters after training refined them, and the training split.

Every frame's free parameters (untrained frames as tracked), the identity shape, the training frame indices
and a format version. Training writes it; evaluation, export, the API and audio-to-expression read it.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams
from avatar3d.io.atomic import atomic_write_bytes

REFINED_VERSION = 1
FREE_KEYS = ("expr", "global_rot", "neck", "jaw", "eyes", "transl")  # the per-frame parameters training refines


def save_refined(path: Path, params, frames_train: list[int]) -> None:
    """Write refined.npz atomically: every frame's parameters from `params` (RigParams, or anything with
    its fields) and the training split."""
    arrays = {k: getattr(params, k).detach().cpu().numpy().astype(np.float32) for k in FREE_KEYS}
    arrays["shape"] = params.shape.detach().cpu().numpy().astype(np.float32)
    arrays["frames_train"] = np.asarray(sorted(frames_train), dtype=np.int64)
    arrays["format_version"] = np.asarray(REFINED_VERSION)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_refined(path: Path, device=None) -> tuple[RigParams, list[int]]:
    """(refined per-frame RigParams, training frame indices) from refined.npz."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise InputError(f"{path} cannot be read ({type(err).__name__}); re-run `avatar3d train gaussians`") from err
    if int(arrays.get("format_version", -1)) != REFINED_VERSION:
        raise InputError(f"{path} has an unknown format; re-run `avatar3d train gaussians`")
    params = RigParams(**{k: torch.as_tensor(arrays[k], device=device) for k in ("shape",) + FREE_KEYS})
    return params, [int(i) for i in arrays["frames_train"]]


def read_split(path: Path) -> Optional[list[int]]:
    """The training frame indices recorded in refined.npz; None when it is absent or cannot be read (a
    caller then falls back to the default split)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return [int(i) for i in data["frames_train"]]
    except Exception:
        return None
