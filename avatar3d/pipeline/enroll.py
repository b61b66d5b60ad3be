"""`enroll`: a talking video in, an avatar directory out.

Stages: check the input → track → segment → train the Gaussians → audio-to-expression (lip sync from
the video's own speech) → evaluate the held-out tail. Work
happens in a staging folder beside the output (`.NAME.staging`), each finished stage recorded in its
manifest, so `--resume` continues an interrupted run from the last finished stage (and training from its
last checkpoint); the finished avatar replaces an existing one only at the very end, so a failed run
never damages it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from avatar3d.config import preset_section
from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_json
from avatar3d.io.ownership import check_replaceable, write_marker
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, read_manifest, write_manifest
from avatar3d.training.config import TrainConfig
from avatar3d.pipeline.resume import differences, refuse_mismatch, run_inputs

STAGES = ("check", "track", "segment", "train", "audio2expr", "eval")


def staging_dir(out: Path) -> Path:
    """Where an enrollment of `out` works until it has finished (`.NAME.staging` beside it)."""
    return out.parent / f".{out.name}.staging"


def _say(text: str) -> None:
    print(f"[enroll] {text}", file=sys.stderr, flush=True)


def _decide_resume(stage_dir: Path, paths: AvatarPaths, video: Path, out: Path, inputs: Optional[dict],
                   resume: bool, restart: bool) -> bool:
    """Continue the interrupted run in `stage_dir` when its inputs are these, refuse when they differ
    (unless `restart`), start afresh when there is none. Returns whether the run resumes."""
    if not stage_dir.exists():
        if resume:
            _say("--resume: no interrupted enrollment to continue; starting from the beginning")
        return False
    if inputs is None:  # no readable video: the video check says so, and the staging folder stays
        return False
    if restart or not paths.manifest.is_file():
        # no manifest: killed before tracking finished, nothing resumable
        if restart:
            _say(f"--restart: discarding the interrupted enrollment of {out}")
        shutil.rmtree(stage_dir)
        return False
    recorded = read_manifest(stage_dir)
    found = differences(recorded, inputs)
    if found:
        raise refuse_mismatch(found, recorded, video, out)
    done = ", ".join(s for s, v in recorded.stages.items() if v == "done") or "none"
    _say(f"continuing the interrupted enrollment of {video.name} (stages done: {done}; --restart starts over)")
    return True


def enroll(video: Path, out: Path, *, preset: str = "default", holdout: float = 0.2,
           head_model: Optional[str] = None, device: str = "cpu", resume: bool = False,
           audio2expr: bool = True, force: bool = False, restart: bool = False) -> dict:
    """Run every stage; returns the summary (also in AVATAR/eval.json). An existing `out` is replaced only
    when it is an avatar (or empty), or with `force`; that is checked before any work. An interrupted run of the
    same inputs (video, preset, holdout, head model) is continued, with or without `resume`; one of other inputs
    is refused (see avatar3d/pipeline/resume.py) unless `restart`, which discards it."""
    from avatar3d.pipeline.holdout import evaluate_holdout
    from avatar3d.head.registry import load_rig
    from avatar3d.pipeline.checks import check_video, format_report
    from avatar3d.training.masks import compute_masks
    from avatar3d.training.trainer import face_split, train_gaussians
    from avatar3d.tracking.pipeline import track_video
    from avatar3d.tracking.sequence import TrackedSequence, describe_frames

    video, out = Path(video), Path(out)
    if not 0.0 <= holdout < 0.9:
        raise InputError(f"--holdout {holdout} is outside [0, 0.9); use e.g. 0.2 (the last 20% is held out)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available; use --device cpu")
    train_cfg = preset_section(preset, "train", TrainConfig)
    check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = staging_dir(out)
    paths = AvatarPaths(stage_dir)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    rig = load_rig(head_model, device="cpu")
    inputs = run_inputs(video, preset, holdout, rig.checksum()) if video.is_file() else None
    resume = _decide_resume(stage_dir, paths, video, out, inputs, resume, restart)

    # 1. check the input (always: cheap, and its advice belongs in every run's output)
    tic = time.perf_counter()
    report = check_video(video)
    for line in format_report(report).splitlines():
        _say(line)
    report.raise_for_errors()
    seconds["check"] = time.perf_counter() - tic

    manifest = read_manifest(stage_dir) if (resume and paths.manifest.is_file()) else None
    done = dict(manifest.stages) if manifest else {}

    # 2. track (writes tracking.npz and frames/ into the staging folder's data/)
    tic = time.perf_counter()
    if done.get("track") != "done":
        _say("stage track: landmarks, crop, rig fitting")
        track_dir = stage_dir.parent / f".{out.name}.track"
        result = track_video(video, track_dir, head_model=head_model, device=device)
        stage_dir.mkdir(exist_ok=True)
        paths.frames.parent.mkdir(parents=True, exist_ok=True)
        if paths.frames.exists():
            shutil.rmtree(paths.frames)
        shutil.move(str(track_dir / "frames"), str(paths.frames))
        for name in ("tracking.npz", "track_report.json", "overlay.mp4", "confidence.npy"):
            if (track_dir / name).exists():
                os.replace(track_dir / name, stage_dir / name)
        shutil.rmtree(track_dir, ignore_errors=True)
        seq = result.sequence
        manifest = AvatarManifest(rig_name=seq.rig_name, rig_checksum=seq.rig_checksum, source_video=video.name,
                                  settings={**inputs, "train": asdict(train_cfg)})
        manifest.stages["track"] = "done"
        write_manifest(stage_dir, manifest)
    seq = TrackedSequence.load(paths.tracking)
    seconds["track"] = time.perf_counter() - tic

    # 3. segment
    tic = time.perf_counter()
    if manifest.stages.get("segment") != "done":
        _say("stage segment: foreground masks (head, hair, neck)")
        from avatar3d.progress import progress_bar

        with progress_bar(seq.num_frames, "masks", unit="frame") as bar:
            compute_masks(paths.frames, seq, rig, paths.masks, progress=lambda *_: bar.update(1))
        manifest.stages["segment"] = "done"
        write_manifest(stage_dir, manifest)
    seconds["segment"] = time.perf_counter() - tic

    # 4. train (resumes from its own checkpoints)
    tic = time.perf_counter()
    frames_train, frames_eval = face_split(seq, holdout)
    faceless = seq.faceless_frames()
    if faceless:
        _say(f"no face detected in {describe_frames(faceless, seq.num_frames, seq.fps)}: those frames are left out "
             "of training and evaluation")
    if manifest.stages.get("train") != "done":
        _say(f"stage train: preset {preset}, {len(frames_train)} training frames, {len(frames_eval)} held out")
        train_result = train_gaussians(stage_dir, train_cfg, device=device, resume=resume,
                                       frames_train=frames_train, rig=rig)
        manifest = read_manifest(stage_dir)
        manifest.stages["train"] = "done"
        manifest.metrics["train_psnr"] = train_result.train_psnr
        write_manifest(stage_dir, manifest)
    seconds["train"] = time.perf_counter() - tic
    # 5. audio-to-expression on the training part (a clip with too little speech gets the energy fallback)
    tic = time.perf_counter()
    if not audio2expr:
        _say("stage audio2expr: skipped (--no-audio2expr); `avatar3d train audio2expr AVATAR` adds it later")
    elif manifest.stages.get("audio2expr") != "done":
        _run_audio2expr(stage_dir, preset, holdout)
    seconds["audio2expr"] = time.perf_counter() - tic

    # 6. evaluate the held-out tail
    tic = time.perf_counter()
    metrics = {}
    if frames_eval:
        _say(f"stage eval: {len(frames_eval)} held-out frames")
        metrics = evaluate_holdout(stage_dir, rig, frames_eval=frames_eval, device=device)
    seconds["eval"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - started

    summary = {
        "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
        "psnr_refined": metrics.get("psnr_refined"), "ssim_refined": metrics.get("ssim_refined"),
        "psnr_masked": metrics.get("psnr_masked"), "lpips": metrics.get("lpips"),
        "frames_train": len(frames_train), "frames_eval": len(frames_eval),
        "resolution": seq.resolution, "num_gaussians": metrics.get("num_gaussians"),
        "seconds": {k: round(v, 1) for k, v in seconds.items()}, "device": device, "preset": preset,
        "warnings": list(report.warnings),
    }
    atomic_write_json(paths.eval_json, summary)
    manifest = read_manifest(stage_dir)
    manifest.stages["eval"] = "done"
    manifest.metrics.update({k: summary[k] for k in ("psnr", "ssim", "psnr_refined", "num_gaussians")})
    write_manifest(stage_dir, manifest)

    # 7. swap the finished avatar in (the old one goes only once the new one is complete)
    write_marker(stage_dir, "avatar")
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(stage_dir, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage_dir, out)
    return summary


def _run_audio2expr(stage_dir: Path, preset: str, holdout: float) -> None:
    """Train the speech model into STAGING/audio2expr and record the stage; input problems (e.g. a clip
    too short to learn from) are reported, never fatal: the avatar is still usable without lip sync."""
    from avatar3d.audio2expr.train import train_audio2expr
    from avatar3d.audio2expr.train_config import A2ETrainConfig

    _say("stage audio2expr: speech -> expression, jaw, head motion (the held-out tail stays unseen)")
    config = preset_section(preset, "audio2expr", A2ETrainConfig)
    config.holdout = holdout
    manifest = read_manifest(stage_dir)
    try:
        report = train_audio2expr(stage_dir, config=config, seed=0, say=lambda m: _say(f"  {m}"))
    except InputError as err:
        _say(f"WARNING: no audio-to-expression model: {err}")
        manifest.stages["audio2expr"] = "skipped"
    else:
        manifest.stages["audio2expr"] = "done"
        manifest.settings["audio2expr"] = {"kind": report["kind"], "blend": report.get("blend")}
        manifest.metrics["av_offset_ms"] = report.get("av_offset_ms")
    write_manifest(stage_dir, manifest)


def print_summary(summary: dict, out: Path) -> None:
    s = summary["seconds"]
    fmt = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        "",
        f"avatar written to {out}",
        f"  held-out frames : {summary['frames_eval']} (trained on {summary['frames_train']})",
        f"  PSNR / SSIM     : {fmt(summary['psnr'])} dB / {fmt(summary['ssim'], 4)} (tracked parameters)",
        f"  refined         : {fmt(summary['psnr_refined'])} dB / {fmt(summary['ssim_refined'], 4)}"
        f"   inside the head mask: {fmt(summary['psnr_masked'])} dB",
        f"  Gaussians       : {summary['num_gaussians']}",
        "  time per stage  : " + ", ".join(f"{k} {v:.0f} s" for k, v in s.items()),
        f"  look at it      : {out / 'eval.mp4'} (real | render | error), {out / 'overlay.mp4'} (tracking)",
    ]
    print("\n".join(lines))
    print(json.dumps(summary))
