"""`avatar3d enroll`: the whole pipeline, from a talking video to an avatar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.config import Preset


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
    """Continue an interrupted run from its last finished stage and checkpoint. A run of the same video and
    settings continues it anyway; one of another video or settings is refused, naming both commands."""
    restart: bool = False
    """Discard an interrupted run of OUT (its finished stages and checkpoints) and start from the beginning."""
    audio2expr: bool = True
    """Train the speech-to-expression model (lip sync) from the video's own audio; --no-audio2expr skips it."""
    force: bool = False
    """Let OUT replace an existing folder that is not an avatar (its files are deleted once the new avatar is
    complete); without it such a folder is refused before any work. An existing avatar is always replaced,
    only when the new one is complete."""


def main(cfg: EnrollConfig) -> int:
    from avatar3d.errors import Avatar3DError
    from avatar3d.pipeline.enroll import enroll, print_summary, staging_dir

    had_staging = staging_dir(cfg.out).exists()
    try:
        summary = enroll(cfg.video, cfg.out, preset=cfg.preset, holdout=cfg.holdout, head_model=cfg.head_model,
                         device=cfg.device, resume=cfg.resume, audio2expr=cfg.audio2expr,
                         force=cfg.force, restart=cfg.restart)
    except Avatar3DError as err:
        if staging_dir(cfg.out).exists() and not had_staging:  # never leave a hidden folder unmentioned
            raise type(err)(f"{err}\nThe stages that finished are kept in {staging_dir(cfg.out).name} beside "
                            f"{cfg.out}: once fixed, the same command continues them; --restart discards "
                            "them") from err
        raise
    print_summary(summary, cfg.out)
    return 0
