"""`avatar3d track`: landmarks and per-frame rig fitting of a talking video."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro


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
    framing: Literal["head", "portrait"] = "head"
    """The crop: head (the head alone) or portrait (head and shoulders, as `enroll`'s default)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device for the rig fitting."""
    overlay: bool = True
    """Also write overlay.mp4 (fitted mesh wireframe, detected/fitted landmarks, pupils) to judge the fit."""
    max_frames: Optional[int] = None
    """Track only the first N frames (a quick look at a long clip)."""
    force: bool = False
    """Let OUT replace an existing folder that avatar3d did not make (its files are deleted); without it such
    a folder is refused and left as it is. A folder avatar3d made is always replaced, atomically."""


def main(cfg: TrackConfig) -> int:
    from avatar3d.tracking.pipeline import print_summary, track_video

    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    result = track_video(cfg.video, cfg.out, head_model=cfg.head_model, resolution=cfg.resolution,
                         device=cfg.device, overlay=cfg.overlay, max_frames=cfg.max_frames,
                         force=cfg.force, framing=cfg.framing)
    print_summary(result)
    return 0
