"""Turn a tracking output folder (`avatar3d track ... --out DIR`) into an avatar directory to train on."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_dir
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, write_manifest
from avatar3d.tracking.sequence import TrackedSequence


def prepare_avatar_dir(track_dir: Path, avatar_dir: Path, *, masks_dir: Optional[Path] = None,
                       move: bool = False, source_video: Optional[str] = None) -> Path:
    """Build `avatar_dir` (atomically) from `track_dir`'s tracking.npz and frames/ (+ optional masks).

    The frames are copied (moved with `move=True`) to data/frames; the manifest names the tracked rig.
    """
    track_dir = Path(track_dir)
    seq = TrackedSequence.load(track_dir / "tracking.npz")
    frames = track_dir / "frames"
    if not frames.is_dir():
        raise InputError(f"{frames} is missing; re-run `avatar3d track VIDEO --out {track_dir}`")
    with atomic_dir(avatar_dir, kind="avatar") as tmp:
        paths = AvatarPaths(tmp)
        paths.frames.parent.mkdir(parents=True)
        (shutil.move if move else shutil.copytree)(str(frames), str(paths.frames))
        shutil.copy2(track_dir / "tracking.npz", paths.tracking)
        if masks_dir is not None:
            shutil.copytree(masks_dir, paths.masks)
        write_manifest(tmp, AvatarManifest(rig_name=seq.rig_name, rig_checksum=seq.rig_checksum,
                                           source_video=source_video))
    return Path(avatar_dir)
