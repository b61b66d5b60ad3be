"""`avatar3d render`: clips of an avatar with audio."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.pending import not_yet


@dataclass
class RenderConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to render."""
    out: Path = Path("outputs/clip.mp4")
    """Output mp4 (H.264 + AAC)."""
    audio: Optional[Path] = None
    """Driver: a speech file (wav/mp3/m4a/mp4) fed to the audio-to-expression model."""
    tracking: bool = False
    """Driver: replay the enrolled video's own tracked parameters (self-reenactment)."""
    drive_video: Optional[Path] = None
    """Driver: another person's video whose expression, jaw, gaze and head motion are transferred."""
    distance: Optional[str] = None
    """Camera distance in metres, or `x1.5` relative to the enrolled camera."""
    yaw: float = 0.0
    """Camera yaw around the head, degrees (positive: towards the subject's left)."""
    pitch: float = 0.0
    """Camera pitch around the head, degrees (positive: from above)."""
    orbit: float = 0.0
    """Turntable: total camera yaw swept over the clip, degrees."""
    camera_path: Optional[Path] = None
    """Keyframed camera JSON (see README)."""
    fov: Optional[float] = None
    """Vertical field of view, degrees (default: the enrolled camera's)."""
    resolution: int = 512
    """Output height and width, pixels."""
    fps: float = 25.0
    """Output frame rate."""
    head_pose: Optional[str] = None
    """`yaw,pitch,roll` degrees (absolute) or `+yaw,pitch,roll` (offset added to the driven motion)."""
    still_head: bool = False
    """Switch driven head motion off."""
    gaze: Optional[str] = None
    """`yaw,pitch` degrees, or `camera` to look at the camera."""
    expression: list[str] = field(default_factory=list)
    """Expression edits `NAME=VALUE` added on top of the driven expression (repeatable)."""
    expressiveness: float = 1.0
    """Scale of the driven expression."""
    blink: Literal["auto", "off"] = "auto"
    """Blinks: natural automatic blinks, or none."""
    background: str = "white"
    """Background colour (name or #rrggbb) or an image file."""
    alpha: bool = False
    """Also write the alpha channel (PNG sequence)."""
    side_by_side: bool = False
    """With --tracking: the real enrollment frames next to the render."""


def main(cfg: RenderConfig) -> int:
    raise not_yet("`avatar3d render`", "Drive and render")

