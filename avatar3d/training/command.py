"""`avatar3d enroll` (the whole pipeline) and `avatar3d train gaussians` (the training stage alone)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro


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
    iterations: int = 0
    """Training steps; 0 keeps the preset's. Another count scales the preset's schedule (densification,
    refinement, SH degree, checkpoints) to it, e.g. 800 for a quick look."""


def main(cfg: EnrollConfig) -> int:
    from avatar3d.errors import Avatar3DError
    from avatar3d.training.enroll import enroll, staging_dir, print_summary

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


def main_train_gaussians(cfg: TrainGaussiansConfig) -> int:
    """Train (or resume training) the avatar's Gaussians with a preset; frames split as in its last run."""
    import torch

    from avatar3d.config import preset_section
    from avatar3d.errors import InputError
    from avatar3d.training.config import TrainConfig, scaled_schedule
    from avatar3d.training.trainer import train_gaussians

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    config = preset_section(cfg.preset, "train", TrainConfig)
    if cfg.iterations:
        config = scaled_schedule(config, cfg.iterations)
    result = train_gaussians(cfg.avatar, config, device=cfg.device, resume=cfg.resume)
    print(f"trained {result.num_gaussians} Gaussians in {result.seconds:.0f} s "
          f"({result.seconds_per_step:.3f} s/step, train PSNR {result.train_psnr:.2f} dB) -> {result.gaussians_path}")
    return 0
