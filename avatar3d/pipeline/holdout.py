"""Held-out evaluation of a trained avatar: the frames at the end of the video that training never saw.

Two figures, as the field reports them: with the tracked parameters as they are (`psnr`, `ssim`), and
after refining only those frames' parameters with the Gaussians frozen (`psnr_refined`, `ssim_refined`),
which separates the avatar's quality from the tracker's errors. Metrics use the field's convention (the
same constant background in render and ground truth, full frame); `psnr_masked` is inside the head mask.

A portrait (an avatar with a torso) is also scored as a user sees it: the render over its background plate
against the real frame, nothing masked (`psnr_full`, `ssim_full`), and inside the head's and the torso's masks
(`psnr_head`, `psnr_torso`), and where they meet (`psnr_neck`, its mean, and `psnr_neck_min`, the worst frame: a
gap or a seam at the neck shows there); its field-convention figures take the whole person over the colour.

Identity: each held-out render, as eval.mp4 shows it, against its real frame by dlib's face-recognition embedding
(`identity_distance`, with the frames where no face was found counted: eval/identity.py).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.eval.video import write_eval_video
from avatar3d.gaussians.avatar_render import render_avatar
from avatar3d.gaussians.store import load_bound
from avatar3d.head.refined import load_refined
from avatar3d.head.rig import HeadRig
from avatar3d.io.avatar_dir import FRAME_PATTERN, AvatarPaths
from avatar3d.progress import progress_bar
from avatar3d.render.metrics import lpips_or_none, psnr, ssim, to_float
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training.frame_params import FrameAdam, FrameParams
from avatar3d.training.losses import photometric_loss
from avatar3d.training.trainer import load_frames


MIN_REGION = 0.005  # share of the picture a region needs to be scored on its own
NECK_BAND = (0.15, 0.1)  # the neck band: this share of the head mask's height above its lowest row, and below


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
    gaussians, faces, rig = load_bound(paths, rig, device)
    portrait = "torso" in rig.meta
    frames_eval = _held_out_frames(paths, seq, frames_eval)

    res = seq.resolution
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    full = load_frames(paths, seq, frames_eval, res, background, portrait=portrait)
    small = load_frames(paths, seq, frames_eval, cfg.refine_resolution, background, portrait=portrait)
    masks = _load_masks(paths, frames_eval, res)
    plate_full = full.backdrop.to(device) if full.backdrop is not None else None
    plate_small = small.backdrop.to(device) if small.backdrop is not None else None
    render_bg = None if plate_full is not None else bg  # over a plate: rendered over black, then composited
    tracked = seq.params(device=device).slice(torch.tensor(frames_eval))
    refined = FrameParams(tracked).to(device)
    opt = FrameAdam(refined, cfg.lr_expr, cfg.lr_pose, cfg.lr_transl)
    K_full, K_small, viewmat = full.K.to(device), small.K.to(device), full.viewmat.to(device)

    scores = {"psnr": [], "ssim": [], "psnr_refined": [], "ssim_refined": [], "psnr_masked": [],
              "psnr_full": [], "ssim_full": [], "psnr_head": [], "psnr_torso": [], "psnr_neck": []}
    renders, reals = [], []
    lpips_values = []
    bar = progress_bar(len(frames_eval), "evaluate held-out", unit="frame")
    for n in range(len(frames_eval)):
        real = full.images[n].to(device).float() / 255.0
        person = full.persons[n].to(device).float()[..., None] / 255.0 if plate_full is not None else None
        target = real if person is None else real * person + (1 - person) * bg  # the field's convention
        with torch.no_grad():
            out = render_avatar(gaussians, rig, faces, refined.tracked_frame(n), K_full, viewmat, res, res, render_bg)
        before = _over(out, bg if plate_full is not None else None).clamp(0, 1)
        scores["psnr"].append(psnr(before, target))
        scores["ssim"].append(ssim(before, target))
        target_small = small.images[n].to(device).float() / 255.0
        for _ in range(cfg.refine_steps):  # this frame's parameters only, the Gaussians frozen
            out = render_avatar(gaussians, rig, faces, refined.frame(n), K_small, viewmat,
                                cfg.refine_resolution, cfg.refine_resolution, render_bg)
            (photometric_loss(_over(out, plate_small), target_small) + cfg.prior_weight * refined.prior(n)).backward()
            opt.step(n)
        with torch.no_grad():
            out = render_avatar(gaussians, rig, faces, refined.frame(n), K_full, viewmat, res, res, render_bg)
        after = _over(out, bg if plate_full is not None else None).clamp(0, 1)
        scores["psnr_refined"].append(psnr(after, target))
        scores["ssim_refined"].append(ssim(after, target))
        if masks is not None:
            scores["psnr_masked"].append(psnr(after, target, masks[n].to(device)))
        if plate_full is not None:  # the portrait as a user sees it, against the real frame
            head = masks[n].to(device) if masks is not None else None
            after, target = _score_portrait(scores, _over(out, plate_full).clamp(0, 1), real, person, head), real
        value = lpips_or_none(after, target)
        if value is not None:
            lpips_values.append(value)
        reals.append((target.cpu().numpy() * 255).round().astype(np.uint8))
        renders.append((after.cpu().numpy() * 255).round().astype(np.uint8))
        bar.update(1)
    bar.close()

    if video:
        write_eval_video(paths.eval_video, zip(reals, renders), fps=seq.fps)
    identity = _identity(reals, renders)

    def mean(values):
        return to_float(torch.stack(values).mean()) if values else None

    return {
        **{key: mean(values) for key, values in scores.items()}, "lpips": mean(lpips_values),
        "psnr_neck_min": to_float(torch.stack(scores["psnr_neck"]).min()) if scores["psnr_neck"] else None,
        "frames_eval": len(frames_eval), "resolution": res, "num_gaussians": gaussians.num_gaussians,
        **identity, "seconds_eval": time.perf_counter() - started,
    }


def _identity(reals: list, renders: list) -> dict:
    """Each held-out render (as eval.mp4 shows it) against its real frame, by face-recognition embedding; no keys
    where dlib is not installed."""
    from avatar3d.eval.identity import embedder_or_none, paired_distance

    embed = embedder_or_none()
    if embed is None:
        return {}
    try:
        return paired_distance(embed, reals, renders).as_dict()
    except Exception as err:  # noqa: BLE001  an optional score must never fail a finished enrollment
        warnings.warn(f"the identity score was left out: dlib failed ({type(err).__name__}: {err})")
        return {}


def held_out_frames(paths: AvatarPaths, num_frames: int) -> list[int]:
    """The frames of the enrollment video that training did not see (every frame when it records no split)."""
    _, train = load_refined(paths.refined) if paths.refined.is_file() else (None, [])
    return sorted(set(range(num_frames)) - set(train))


def _held_out_frames(paths: AvatarPaths, seq: TrackedSequence, frames_eval: Optional[Sequence[int]]) -> list[int]:
    """`frames_eval`, or every frame training did not see."""
    if frames_eval is None:
        frames_eval = held_out_frames(paths, seq.num_frames)
    frames_eval = [int(i) for i in frames_eval]
    if not frames_eval:
        raise InputError("no held-out frames to evaluate; enroll with --holdout 0.2 (the default)")
    return frames_eval


def _score_portrait(scores: dict, seen: torch.Tensor, real: torch.Tensor, person: torch.Tensor,
                    head: Optional[torch.Tensor]) -> torch.Tensor:
    # seen, real: [H,W,3]; person: [H,W,1] whole-person mask; head: [H,W] head mask or None
    """Add the portrait's figures for one frame to `scores`: over its plate vs the real frame, whole and per region."""
    scores["psnr_full"].append(psnr(seen, real))
    scores["ssim_full"].append(ssim(seen, real))
    if head is not None:
        scores["psnr_head"].append(psnr(seen, real, head))
        torso = (person[..., 0] - head).clamp(0, 1)
        if float(torso.mean()) > MIN_REGION:  # a frame that shows no torso has nothing to score there
            scores["psnr_torso"].append(psnr(seen, real, torso))
        band = neck_band(head, person[..., 0])
        if band is not None:
            scores["psnr_neck"].append(psnr(seen, real, band))
    return seen


def neck_band(head: torch.Tensor, person: torch.Tensor) -> Optional[torch.Tensor]:  # [H,W] masks -> [H,W] or None
    """Where head and torso meet: the person's pixels from NECK_BAND[0] of the head mask's height above its lowest
    row to NECK_BAND[1] below it (a gap or a seam there shows as a drop of this frame's figure)."""
    rows = torch.nonzero((head > 0.5).any(1)).flatten()
    if len(rows) < 2:
        return None
    top, bottom = int(rows[0]), int(rows[-1])
    height = bottom - top
    lo, hi = int(bottom - NECK_BAND[0] * height), int(bottom + NECK_BAND[1] * height) + 1
    band = torch.zeros_like(person)
    band[max(lo, 0):hi] = (person[max(lo, 0):hi] > 0.5).float()
    return band if float(band.mean()) > MIN_REGION else None


def _over(out, backdrop: Optional[torch.Tensor]) -> torch.Tensor:  # -> [H,W,3]
    """The render over `backdrop` ([H,W,3] or [3]) when it was rendered over black, else as it is."""
    return out.image if backdrop is None else out.image + (1.0 - out.alpha) * backdrop


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
