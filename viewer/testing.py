"""A tiny synthetic avatar for the viewer's tests and quick trials (seconds to make on a CPU)."""
from __future__ import annotations

from pathlib import Path


def make_tiny_avatar(root: Path, resolution: int = 64, iterations: int = 30, gaussians: int = 800) -> Path:
    """Train a small Gaussian avatar on the synthetic subject (1 s at 10 fps, with its voice) in `root`/avatar."""
    from avatar3d.eval.synthetic_eval import build_avatar_dir, eval_subject
    from avatar3d.training.config import TrainConfig
    from avatar3d.training.trainer import train_gaussians

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    subject = eval_subject(seconds=1.0, fps=10, resolution=resolution, seed=0, texture_size=256, supersample=1)
    avatar = build_avatar_dir(subject, root / "avatar")
    cfg = TrainConfig(iterations=iterations, resolution=resolution, init_gaussians=gaussians,
                      max_gaussians=gaussians, sh_degree=0, densify_from=10**6, densify_until=10**6,
                      densify_every=10**6, opacity_reset_every=0, checkpoint_every=0, refine_params=False, seed=1)
    train_gaussians(avatar, cfg, device="cpu", progress=False, frames_train=list(range(subject.num_frames)),
                    rig=subject.rig)
    return avatar
