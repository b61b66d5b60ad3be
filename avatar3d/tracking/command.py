"""`avatar3d track`: landmarks and per-frame rig fitting of a talking video."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.pending import not_yet


@dataclass
class TrackConfig:
    video: tyro.conf.Positional[Path]
    """The talking video to track (mp4/mov/mkv; phone videos with rotation metadata are fine)."""
    out: Path = Path("outputs/track")
    """Output folder: tracking.npz, frames/, track_report.json, overlay.mp4."""
    head_model: Optional[str] = None
    """Installed head model to fit (see `avatar3d models list`); default: ICT-FaceKit when installed."""
    resolution: int = 512
    """Side of the square crop the frames are resampled to, in pixels."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device for the rig fitting."""


def main(cfg: TrackConfig) -> int:
    raise not_yet("`avatar3d track`", "Enrollment I: track a talking video")
