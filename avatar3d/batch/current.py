"""Whether a job's output is already current, so a re-run skips it.

An avatar is current when its own manifest records the inputs this job would enroll from: the video's checksum,
the preset, the held-out fraction, the head model's checksum and every stage's settings (the same record an
interrupted enrollment is continued by, pipeline/resume.py), and lip sync as asked. So an avatar made earlier by
the single command counts too, and a changed setting enrolls again (the old avatar stays until the new one is
complete).

A clip is current when the record the batch wrote beside it (OUT/.batch/NAME.json) holds this job's key (the
avatar's manifest, the driver files' checksums and every render setting) and the clip is the very file recorded
(its size and modification time).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Optional

from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_json

BATCH_DIR = ".batch"  # inside a batch's output folder: each job's log and each clip's record
UNKEYED_RENDER_FIELDS = ("out", "alpha_out", "progress", "backend", "force")  # where and how, not what it shows
# the parts of an avatar a clip is made from: a change to any (a retrained lip-sync model, new Gaussians) redoes it
AVATAR_PARTS = ("avatar.json", "gaussians.safetensors", "tracking.npz", "refined.npz", "torso.json",
                "background.png", "background.json", "audio2expr/config.json", "audio2expr/model.safetensors")


# ---------------------------------------------------------------------------------------------- avatars
@functools.lru_cache(maxsize=None)
def _rig_checksum(head_model: Optional[str]) -> str:
    from avatar3d.head.registry import load_rig

    return load_rig(head_model, device="cpu").checksum()


def avatar_is_current(cfg) -> bool:
    """Whether `cfg.out` (an EnrollConfig's) is a finished avatar of exactly this enrollment."""
    from avatar3d.io.avatar_dir import read_manifest
    from avatar3d.io.ownership import is_ours
    from avatar3d.pipeline.config import stage_settings
    from avatar3d.pipeline.resume import differences, run_inputs

    out = Path(cfg.out)
    if not (out / "avatar.json").is_file() or not is_ours(out):
        return False
    try:
        manifest = read_manifest(out)
    except InputError:
        return False
    if "stages" not in manifest.settings or manifest.stages.get("train") != "done":
        return False
    wanted = run_inputs(Path(cfg.video), cfg.preset, cfg.holdout, _rig_checksum(cfg.head_model), stage_settings(cfg))
    lips = manifest.stages.get("audio2expr") in ("done", "skipped")
    return not differences(manifest, wanted) and _same_keys(manifest.settings["stages"], wanted["stages"]) \
        and lips == bool(cfg.audio2expr)


def _same_keys(recorded: dict, wanted: dict) -> bool:
    """Every setting recorded and wanted alike: `differences` forgives a setting added since a run started (right
    for continuing it), but an avatar made before a setting existed is not known to match it, so it is redone."""
    from avatar3d.pipeline.resume import flat_settings

    was, now = flat_settings(recorded), flat_settings(wanted)
    was.setdefault("framing", "head")
    return set(was) == set(now)


# ---------------------------------------------------------------------------------------------- clips
def _file_digest(path: Path) -> str:
    from avatar3d.pipeline.resume import video_checksum

    return video_checksum(path)


def _avatar_stamp(folder: Path) -> dict:
    """An avatar by the size and modification time of each part a clip is made from."""
    return {part: _stamp(folder / part) for part in AVATAR_PARTS if (folder / part).is_file()}


def _keyed(value):
    """A render setting as key material: a file by its content, a folder (the avatar) by its parts' stamps."""
    if isinstance(value, str) and value and Path(value).is_file():  # e.g. a background picture
        value = Path(value)
    if isinstance(value, Path):
        if value.is_file():
            return {"sha256": _file_digest(value)}
        if (value / "avatar.json").is_file():
            return {"avatar": _avatar_stamp(value)}
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_keyed(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _keyed(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _keyed(v) for k, v in value.items()}
    return value


def render_key(cfg) -> str:
    """The key of a clip: what it shows (avatar, driver, every control), not where it goes."""
    material = {f.name: _keyed(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.name not in UNKEYED_RENDER_FIELDS}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def record_path(clip: Path) -> Path:
    return clip.parent / BATCH_DIR / f"{clip.name}.json"


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def clip_is_current(clip: Path, key: str) -> bool:
    """Whether `clip` is the file a finished job of this key wrote."""
    path = record_path(clip)
    if not clip.is_file() or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return record.get("key") == key and record.get("stamp") == _stamp(clip)


def record_clip(clip: Path, key: str, **facts) -> None:
    """Note that `clip` is finished for `key` (written after the clip itself, atomically)."""
    atomic_write_json(record_path(clip), {"key": key, "stamp": _stamp(clip), "finished": time.time(), **facts})
