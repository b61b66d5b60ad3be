"""Held-out evaluation of a trained avatar: the frames at the end of the video that training never saw.

Two figures, as the field reports them: with the tracked parameters as they are (`psnr`, `ssim`), and
after refining only those frames' parameters with the Gaussians frozen (`psnr_refined`, `ssim_refined`),
which separates the avatar's quality from the tracker's errors. Metrics use the field's convention (the
same constant background in render and ground truth, full frame); `psnr_masked` is inside the head mask.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.eval.video import write_eval_video
from avatar3d.gaussians.avatar_render import render_avatar
from avatar3d.gaussians.store import load_gaussians
from avatar3d.head.refined import load_refined
from avatar3d.head.rig import HeadRig
from avatar3d.io.avatar_dir import FRAME_PATTERN, AvatarPaths
from avatar3d.progress import progress_bar
from avatar3d.render.metrics import lpips_or_none, psnr, ssim, to_float
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training.frame_params import FrameAdam, FrameParams
from avatar3d.training.losses import photometric_loss
from avatar3d.training.trainer import load_frames


@dataclass
class HoldoutConfig:
    refine_steps: int = 12
    """Optimisation steps per held-out frame when refining its parameters (Gaussians frozen)."""
    refine_resolution: int = 256
    """Resolution of the refinement renders (the scores are always at the full resolution)."""
    lr_expr: float = 0.02
    """Learning rate of the expression coefficients during refinement."""
    lr_pose: float = 0.002
    """Learning rate of the rotations during refinement (radians)."""
    lr_transl: float = 0.0005
    """Learning rate of the translation during refinement (metres)."""
    prior_weight: float = 1e-3
    """Weight of the pull towards the tracked values during refinement."""


def evaluate_holdout(avatar_dir: Path, rig: HeadRig, *, frames_eval: Optional[Sequence[int]] = None,
                     config: Optional[HoldoutConfig] = None, device="cpu", background=(1.0, 1.0, 1.0),
                     video: bool = True) -> dict:
    """Score the held-out frames; writes eval.mp4 (real | render | error) when `video`; returns the metrics."""
    cfg = config or HoldoutConfig()
    started = time.perf_counter()
    paths = AvatarPaths(Path(avatar_dir))
    seq = TrackedSequence.load(paths.tracking)
    gaussians, faces = load_gaussians(paths, device)
    gaussians.requires_grad_(False)
    rig = rig.to(device)
    if frames_eval is None:
        _, train = load_refined(paths.refined) if paths.refined.is_file() else (None, [])
        frames_eval = sorted(set(range(seq.num_frames)) - set(train))
    frames_eval = [int(i) for i in frames_eval]
    if not frames_eval:
        raise InputError("no held-out frames to evaluate; enroll with --holdout 0.2 (the default)")

    res = seq.resolution
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    full = load_frames(paths, seq, frames_eval, res, background)
    small = load_frames(paths, seq, frames_eval, cfg.refine_resolution, background)
    masks = _load_masks(paths, frames_eval, res)
    tracked = seq.params(device=device).slice(torch.tensor(frames_eval))
    refined = FrameParams(tracked).to(device)
    opt = FrameAdam(refined, cfg.lr_expr, cfg.lr_pose, cfg.lr_transl)
    K_full, K_small, viewmat = full.K.to(device), small.K.to(device), full.viewmat.to(device)

    scores = {"psnr": [], "ssim": [], "psnr_refined": [], "ssim_refined": [], "psnr_masked": []}
    renders, reals = [], []
    lpips_values = []
    bar = progress_bar(len(frames_eval), "evaluate held-out", unit="frame")
    for n in range(len(frames_eval)):
        target = full.images[n].to(device).float() / 255.0
        with torch.no_grad():
            before = render_avatar(gaussians, rig, faces, refined.tracked_frame(n), K_full, viewmat, res, res, bg).image
        scores["psnr"].append(psnr(before.clamp(0, 1), target))
        scores["ssim"].append(ssim(before.clamp(0, 1), target))
        target_small = small.images[n].to(device).float() / 255.0
        for _ in range(cfg.refine_steps):
            out = render_avatar(gaussians, rig, faces, refined.frame(n), K_small, viewmat,
                                cfg.refine_resolution, cfg.refine_resolution, bg).image
            loss = photometric_loss(out, target_small) + cfg.prior_weight * refined.prior(n)
            loss.backward()
            opt.step(n)
        with torch.no_grad():
            after = render_avatar(gaussians, rig, faces, refined.frame(n), K_full, viewmat, res, res, bg).image.clamp(0, 1)
        scores["psnr_refined"].append(psnr(after, target))
        scores["ssim_refined"].append(ssim(after, target))
        if masks is not None:
            scores["psnr_masked"].append(psnr(after, target, masks[n].to(device)))
        value = lpips_or_none(after, target)
        if value is not None:
            lpips_values.append(value)
        reals.append((target.cpu().numpy() * 255).round().astype(np.uint8))
        renders.append((after.cpu().numpy() * 255).round().astype(np.uint8))
        bar.update(1)
    bar.close()

    if video:
        write_eval_video(paths.eval_video, zip(reals, renders), fps=seq.fps)

    def mean(values):
        return to_float(torch.stack(values).mean()) if values else None

    return {
        "psnr": mean(scores["psnr"]), "ssim": mean(scores["ssim"]),
        "psnr_refined": mean(scores["psnr_refined"]), "ssim_refined": mean(scores["ssim_refined"]),
        "psnr_masked": mean(scores["psnr_masked"]),
        "lpips": mean(lpips_values),
        "frames_eval": len(frames_eval), "resolution": res, "num_gaussians": gaussians.num_gaussians,
        "seconds_eval": time.perf_counter() - started,
    }


def _load_masks(paths: AvatarPaths, indices: Sequence[int], resolution: int) -> Optional[torch.Tensor]:
    """[T,R,R] float masks in [0,1], or None when the avatar has no masks."""
    from PIL import Image

    files = [paths.masks / FRAME_PATTERN.format(i) for i in indices]
    if not all(f.is_file() for f in files):
        return None
    out = []
    for f in files:
        image = Image.open(f).convert("L")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.BILINEAR)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
    return torch.stack(out)
