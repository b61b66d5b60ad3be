"""`avatar3d export`: the avatar as a world-space 3DGS PLY or as a rigged bundle for engines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from avatar3d.pending import not_yet


@dataclass
class ExportConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to export."""
    ply: Optional[Path] = None
    """Write a standard world-space 3DGS PLY (opens in common splat viewers)."""
    frame: int = 0
    """Tracked frame whose pose the PLY is exported in."""
    rig: Optional[Path] = None
    """Write the rigged form (mesh, binding, local parameters, per-frame rig parameters) to this folder."""


def main_export(cfg: ExportConfig) -> int:
    raise not_yet("`avatar3d export`", "Drive and render")
