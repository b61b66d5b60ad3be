"""`avatar3d eval lipsync` and `avatar3d eval synthetic`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.pending import not_yet


@dataclass
class EvalLipsyncConfig:
    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar with a trained audio-to-expression model."""
    json: Optional[Path] = None
    """Also write the metrics to this JSON file."""


@dataclass
class EvalSyntheticConfig:
    json: Optional[Path] = None
    """Also write the metrics to this JSON file."""
    preset: Literal["fast", "default", "quality"] = "fast"
    """Training preset."""
    out: Path = Path("outputs/eval_synthetic")
    """Where the synthetic videos, the trained avatar and the report go."""


def main(cfg: EvalLipsyncConfig) -> int:
    raise not_yet("`avatar3d eval lipsync`", "Audio-to-expression")


def main_synthetic(cfg: EvalSyntheticConfig) -> int:
    raise not_yet("`avatar3d eval synthetic`", "Enrollment II: train the Gaussian avatar bound to the rig")
