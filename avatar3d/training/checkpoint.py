"""Resumable training checkpoints in `AVATAR/checkpoints/`.

One checkpoint is three files, each written atomically, the JSON last (it is the commit record):
`step_NNNNNN.safetensors` (tensors: Gaussians, refined frame parameters, densification statistics, RNG),
`step_NNNNNN.optim.pt` (optimizer state dicts, `torch.save`, read back with `weights_only=True`) and
`step_NNNNNN.json` (step, settings, size and SHA-256 of the other two). A checkpoint whose files do not
match their record is refused with a clear message, and the previous one is used when there is one.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json

KEEP = 2  # checkpoints kept on disk (the newest and one fallback)


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Tensor]
    optim: dict[str, Any]
    info: dict[str, Any]
    path: Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: Path, step: int, tensors: dict[str, Tensor], optim: dict[str, Any],
                    info: dict[str, Any]) -> Path:
    """Write checkpoint `step` and drop all but the newest KEEP; returns its JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step_{step:06d}"
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    buffer = io.BytesIO()
    torch.save(optim, buffer)
    optim_blob = buffer.getvalue()
    atomic_write_bytes(folder / f"{stem}.safetensors", blob)
    atomic_write_bytes(folder / f"{stem}.optim.pt", optim_blob)
    record = dict(info, step=step, files={
        f"{stem}.safetensors": {"bytes": len(blob), "sha256": _sha(blob)},
        f"{stem}.optim.pt": {"bytes": len(optim_blob), "sha256": _sha(optim_blob)}})
    path = atomic_write_json(folder / f"{stem}.json", record)
    if info.get("run") is not None:  # another run's checkpoints go once this run has one of its own
        clear_checkpoints(folder, keep_run=info["run"])
    for old in list_checkpoints(folder)[:-KEEP]:
        for name in (old.name, old.with_suffix(".safetensors").name, old.with_suffix(".optim.pt").name):
            (folder / name).unlink(missing_ok=True)
    return path


def _run_of(record: Path) -> str | None:
    try:
        return json.loads(record.read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        return None


def clear_checkpoints(folder: Path, keep_run: str | None = None) -> int:
    """Delete the checkpoints in `folder`, except those of the run `keep_run` (an earlier run's higher steps
    would otherwise outrank the new ones, so the new ones would be pruned and `--resume` would pick the stale
    run); returns how many were removed."""
    records = [r for r in list_checkpoints(folder) if keep_run is None or _run_of(r) != keep_run]
    for old in records:
        for name in (old.with_suffix(".safetensors").name, old.with_suffix(".optim.pt").name, old.name):
            (Path(folder) / name).unlink(missing_ok=True)
    return len(records)


def list_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint records (JSON) in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*.json") if not p.name.startswith("."))


def read_checkpoint(record: Path) -> Checkpoint:
    """Load one checkpoint; raises InputError naming the damaged file when it is truncated or altered."""
    record = Path(record)
    fix = (f"delete {record.parent} to train from scratch (without --resume), or remove the damaged "
           f"{record.stem}.* files to resume from an older checkpoint")
    try:
        info = json.loads(record.read_text())
        files = info["files"]
        step = int(info["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"checkpoint {record} is damaged (its record cannot be read: {err}); {fix}") from err
    blobs = {}
    for name, meta in files.items():
        path = record.parent / name
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"checkpoint file {path} is missing ({err.strerror}); {fix}") from err
        if len(data) != meta.get("bytes") or _sha(data) != meta.get("sha256"):
            raise InputError(f"checkpoint file {path} is truncated or altered ({len(data)} bytes, "
                             f"{meta.get('bytes')} expected); {fix}")
        blobs[name] = data
    stem = record.stem
    try:
        tensors = st_load(blobs[f"{stem}.safetensors"])
        optim = torch.load(io.BytesIO(blobs[f"{stem}.optim.pt"]), weights_only=True, map_location="cpu")
    except Exception as err:  # checksums matched but content is not ours
        raise InputError(f"checkpoint {record} cannot be decoded ({type(err).__name__}: {err}); {fix}") from err
    return Checkpoint(step, tensors, optim, info, record)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest readable checkpoint; a damaged newer one is reported (warning) and skipped.

    None when there is none at all; InputError when every checkpoint there is damaged.
    """
    records = list_checkpoints(folder)
    errors = []
    for record in reversed(records):
        try:
            ckpt = read_checkpoint(record)
        except InputError as err:
            errors.append(str(err))
            continue
        if errors:
            warnings.warn(f"{errors[0]} — resuming from the older {record.name} instead", RuntimeWarning,
                          stacklevel=2)
        return ckpt
    if errors:
        raise InputError(f"no usable training checkpoint: {errors[0]}")
    return None
