"""`avatar3d enroll` (the whole pipeline) and `avatar3d train gaussians` (the training stage alone)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.pending import not_yet

Preset = Literal["fast", "default", "quality"]


@dataclass
class EnrollConfig:
    video: tyro.conf.Positional[Path]
    """A short talking video of one person (5 s to a few minutes), face visible, looking roughly at the camera."""
    out: Path = Path("avatars/me")
    """The avatar directory to write (replaced only when the run succeeds)."""
    preset: Preset = "default"
    """Quality/speed preset: fast, default or quality (configs/<preset>.yaml)."""
    holdout: float = 0.2
    """Fraction of frames at the end of the video kept out of training for evaluation."""
    head_model: Optional[str] = None
    """Installed head model (see `avatar3d models list`); default: ICT-FaceKit when installed."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device for tracking and training."""
    resume: bool = False
    """Continue an interrupted run from its last checkpoint."""


@dataclass
class TrainGaussiansConfig:
    avatar: tyro.conf.Positional[Path]
    """An avatar directory made by `avatar3d enroll` (its stored frames and tracking are used)."""
    preset: Preset = "default"
    """Quality/speed preset: fast, default or quality."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device for training."""
    resume: bool = False
    """Continue from the avatar's last training checkpoint."""


def main(cfg: EnrollConfig) -> int:
    raise not_yet("`avatar3d enroll`", "Enrollment II: train the Gaussian avatar bound to the rig")


def main_train_gaussians(cfg: TrainGaussiansConfig) -> int:
    raise not_yet("`avatar3d train gaussians`", "Enrollment II: train the Gaussian avatar bound to the rig")
