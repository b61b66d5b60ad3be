"""`enroll`: a talking video in, an avatar directory out.

Stages, one function each, in order: check the input → track → segment → background plate → torso (a
portrait's shoulders) → train the Gaussians → audio-to-expression (lip sync from the video's own speech) → evaluate the held-out tail; each takes
its section of the `EnrollConfig` (pipeline/config.py). Work happens in a staging folder beside the output
(`.NAME.staging`), each finished stage recorded in its manifest, so `--resume` continues an interrupted run from
the last finished stage (and training from its last checkpoint); the finished avatar replaces an existing one
only at the very end, so a failed run never damages it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.io.atomic import atomic_write_json, atomic_write_text
from avatar3d.io.ownership import check_replaceable, write_marker
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, read_manifest, write_manifest
from avatar3d.pipeline.config import CONFIG_FILE, EnrollConfig, dump_config, from_preset, stage_settings
from avatar3d.pipeline.resume import differences, refuse_mismatch, run_inputs

STAGES = ("check", "track", "segment", "background", "torso", "train", "audio2expr", "eval")


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
        raise refuse_mismatch(found, recorded, video, out, saved_config=stage_dir / CONFIG_FILE)
    done = ", ".join(s for s, v in recorded.stages.items() if v == "done") or "none"
    _say(f"continuing the interrupted enrollment of {video.name} (stages done: {done}; --restart starts over)")
    return True


@dataclass
class Run:
    """One enrollment in progress: its settings, where it works, the rig, and what each stage took."""

    cfg: EnrollConfig
    stage_dir: Path
    rig: object
    inputs: Optional[dict]  # what a later run must match to continue this one (pipeline/resume.py)
    resume: bool
    seconds: dict = field(default_factory=dict)  # stage -> seconds it took

    @property
    def paths(self) -> AvatarPaths:
        return AvatarPaths(self.stage_dir)

    def manifest(self) -> Optional[AvatarManifest]:
        return read_manifest(self.stage_dir) if self.paths.manifest.is_file() else None

    def done(self, stage: str) -> bool:
        """Whether `stage` finished (in this run or the interrupted one it continues: a staging folder that is
        not continued was removed by `start`)."""
        manifest = self.manifest()
        return manifest is not None and manifest.stages.get(stage) == "done"

    def mark(self, stage: str, state: str = "done", **metrics) -> None:
        manifest = read_manifest(self.stage_dir)
        manifest.stages[stage] = state
        manifest.metrics.update(metrics)
        write_manifest(self.stage_dir, manifest)


def enroll(video: Path, out: Path, *, preset: str = "default", **options) -> dict:
    """`run_enrollment` of the preset's settings with the top-level `options` of EnrollConfig (holdout,
    head_model, device, resume, audio2expr, force, restart)."""
    return run_enrollment(from_preset(Path(video), preset, out=Path(out), **options))


def run_enrollment(cfg: EnrollConfig) -> dict:
    """Run every stage; returns the summary (also in AVATAR/eval.json). An existing `out` is replaced only
    when it is an avatar (or empty), or with `force`; that is checked before any work. An interrupted run of the
    same inputs (video, settings, head model) is continued, with or without `resume`; one of other inputs is
    refused (see avatar3d/pipeline/resume.py) unless `restart`, which discards it."""
    run = start(cfg)
    started = time.perf_counter()
    report = timed(run, "check", lambda: check(cfg.video))
    seq = timed(run, "track", lambda: track(run))
    timed(run, "segment", lambda: segment(run, seq))
    timed(run, "background", lambda: background(run, seq))
    timed(run, "torso", lambda: torso(run, seq))
    frames_train, frames_eval = split(seq, cfg.holdout)
    timed(run, "train", lambda: train(run, frames_train, len(frames_eval)))
    timed(run, "audio2expr", lambda: audio2expr(run))
    metrics = timed(run, "eval", lambda: evaluate(run, frames_eval))
    run.seconds["total"] = time.perf_counter() - started
    summary = _summary(run, seq, metrics, report, len(frames_train), len(frames_eval))
    swap_in(run.stage_dir, cfg.out)
    return summary


def timed(run: Run, stage: str, work):
    tic = time.perf_counter()
    result = work()
    run.seconds[stage] = time.perf_counter() - tic
    return result


def start(cfg: EnrollConfig) -> Run:
    """Validate the settings, refuse an `out` that must not be replaced, decide whether an interrupted run
    continues, and save the resolved config in the staging folder."""
    from avatar3d.head.registry import load_rig

    video, out = Path(cfg.video), Path(cfg.out)
    if not 0.0 <= cfg.holdout < 0.9:
        raise InputError(f"--holdout {cfg.holdout} is outside [0, 0.9); use e.g. 0.2 (the last 20% is held out)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available; use --device cpu")
    check_replaceable(out, cfg.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = staging_dir(out)
    rig = load_rig(cfg.head_model, device="cpu")
    stages = stage_settings(cfg)
    inputs = run_inputs(video, cfg.preset, cfg.holdout, rig.checksum(), stages) if video.is_file() else None
    resume = _decide_resume(stage_dir, AvatarPaths(stage_dir), video, out, inputs, cfg.resume, cfg.restart)
    return Run(cfg=cfg, stage_dir=stage_dir, rig=rig, inputs=inputs, resume=resume)


def check(video: Path):
    """Stage 1: check the input (always: cheap, and its advice belongs in every run's output)."""
    from avatar3d.pipeline.checks import check_video, format_report

    report = check_video(video)
    for line in format_report(report).splitlines():
        _say(line)
    report.raise_for_errors()
    return report


def track(run: Run):
    """Stage 2: landmarks, crop and rig fit into the staging folder (tracking.npz, data/frames/, overlay)."""
    from avatar3d.tracking.pipeline import track_video
    from avatar3d.tracking.sequence import TrackedSequence

    cfg, paths, stage_dir = run.cfg, run.paths, run.stage_dir
    if not run.done("track"):
        _say("stage track: landmarks, crop, rig fitting")
        track_dir = stage_dir.parent / f".{Path(cfg.out).name}.track"
        result = track_video(Path(cfg.video), track_dir, head_model=cfg.head_model, device=cfg.device,
                             resolution=cfg.track.resolution, fit_config=cfg.track.fit, framing=cfg.framing)
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
        manifest = AvatarManifest(rig_name=seq.rig_name, rig_checksum=seq.rig_checksum,
                                  source_video=Path(cfg.video).name,
                                  settings={**run.inputs, "train": asdict(cfg.train)})
        manifest.stages["track"] = "done"
        write_manifest(stage_dir, manifest)
        atomic_write_text(stage_dir / CONFIG_FILE, dump_config(dataclasses.replace(cfg, resume=False, restart=False, config=None)))
    return TrackedSequence.load(paths.tracking)


def segment(run: Run, seq) -> None:
    """Stage 3: foreground masks (head, hair, neck) of every frame."""
    from avatar3d.progress import progress_bar
    from avatar3d.training.masks import compute_masks

    if run.done("segment"):
        return
    _say("stage segment: foreground masks (head, hair, neck)")
    with progress_bar(seq.num_frames, "masks", unit="frame") as bar:
        compute_masks(run.paths.frames, seq, run.rig, run.paths.masks, config=run.cfg.masks,
                      progress=lambda *_: bar.update(1))
    run.mark("segment")


def background(run: Run, seq) -> None:
    """Stage 4: the background plate (background.png + background.json), unless the background moves."""
    from avatar3d.progress import progress_bar
    from avatar3d.render.plate import PLATE_JSON, PLATE_PNG
    from avatar3d.training.background import build_plate
    from avatar3d.training.masks import SelfieSegmenter

    cfg = run.cfg.background
    if run.done("background"):
        return
    for name in (PLATE_PNG, PLATE_JSON):  # what an earlier attempt left must not outlive this decision
        (run.stage_dir / name).unlink(missing_ok=True)
    plate = None
    if cfg.enabled:
        _say("stage background: the plate of the room behind the person")
        try:
            segmenter = SelfieSegmenter(run.cfg.masks.model_selection)
            try:
                with progress_bar(min(cfg.samples, seq.num_frames), "plate", unit="frame") as bar:
                    plate = build_plate(Path(run.cfg.video), seq, cfg, segmenter, _say,
                                        progress=lambda: bar.update(1))
            finally:
                segmenter.close()
        except (InputError, BackendUnavailableError) as err:  # the plate is optional: the avatar goes on without
            _say(f"warning: no background plate ({err}); the avatar renders over a solid colour")
    if plate is not None:
        plate.save(run.stage_dir)
        _say(f"  plate: {plate.image.shape[1]}x{plate.image.shape[0]}, {plate.info['seen_share']:.0%} seen "
             f"(the rest filled in), placed {plate.depth:.2f} m from the camera")
    run.mark("background", plate=plate.info if plate is not None else None)


def torso(run: Run, seq) -> None:
    """Stage 5 (portraits): fit the torso proxy's proportions to the person masks (torso.json)."""
    from avatar3d.head.torso import TORSO_JSON, save_torso
    from avatar3d.training.torso_fit import describe, fit_torso
    from avatar3d.training.trainer import face_split

    if run.done("torso"):
        return
    (run.stage_dir / TORSO_JSON).unlink(missing_ok=True)
    if run.cfg.framing != "portrait":
        run.mark("torso", torso=None)
        return
    _say("stage torso: the shoulders' proportions from the person masks")
    frames_train, _ = face_split(seq, run.cfg.holdout)
    try:
        shape, info = fit_torso(seq, run.rig, run.paths.masks, frames_train)
    except InputError as err:  # the avatar goes on as a head
        _say(f"warning: no torso ({err}); the avatar is the head alone")
        run.mark("torso", torso=None)
        return
    save_torso(run.stage_dir, shape, info)
    _say(f"  torso: {describe(shape, info)}")
    for warning in info["warnings"]:
        _say(f"warning: {warning}")
    run.mark("torso", torso={**dataclasses.asdict(shape), **info})


def split(seq, holdout: float) -> tuple[list[int], list[int]]:
    """(training frames, held-out frames), frames without a detected face left out of both."""
    from avatar3d.tracking.sequence import describe_frames
    from avatar3d.training.trainer import face_split

    frames_train, frames_eval = face_split(seq, holdout)
    faceless = seq.faceless_frames()
    if faceless:
        _say(f"no face detected in {describe_frames(faceless, seq.num_frames, seq.fps)}: those frames are left out "
             "of training and evaluation")
    return frames_train, frames_eval


def train(run: Run, frames_train: list[int], held_out: int) -> None:
    """Stage 6: the Gaussians (resumes from their own checkpoints)."""
    from avatar3d.training.trainer import train_gaussians

    if run.done("train"):
        return
    _say(f"stage train: preset {run.cfg.preset}, {len(frames_train)} training frames, {held_out} held out")
    result = train_gaussians(run.stage_dir, run.cfg.train, device=run.cfg.device, resume=run.resume,
                             frames_train=frames_train, rig=run.rig)
    run.mark("train", train_psnr=result.train_psnr)


def audio2expr(run: Run) -> None:
    """Stage 7: speech -> expression on the training part, into STAGING/audio2expr. Input problems (e.g. a clip
    too short to learn from) are reported, never fatal: the avatar is still usable without lip sync."""
    from avatar3d.audio2expr.train import train_audio2expr

    if not run.cfg.audio2expr:
        _say("stage audio2expr: skipped (--no-audio2expr); `avatar3d train audio2expr AVATAR` adds it later")
        return
    if run.done("audio2expr"):
        return
    _say("stage audio2expr: speech -> expression, jaw, head motion (the held-out tail stays unseen)")
    config = dataclasses.replace(run.cfg.a2e, holdout=run.cfg.holdout)
    try:
        report = train_audio2expr(run.stage_dir, config=config, seed=0, say=lambda m: _say(f"  {m}"))
    except InputError as err:
        _say(f"WARNING: no audio-to-expression model: {err}")
        run.mark("audio2expr", "skipped")
        return
    manifest = read_manifest(run.stage_dir)
    manifest.stages["audio2expr"] = "done"
    manifest.settings["audio2expr"] = {"kind": report["kind"], "blend": report.get("blend")}
    manifest.metrics["av_offset_ms"] = report.get("av_offset_ms")
    write_manifest(run.stage_dir, manifest)


def evaluate(run: Run, frames_eval: list[int]) -> dict:
    """Stage 8: score the held-out tail (eval.json's image metrics, eval.mp4)."""
    from avatar3d.pipeline.holdout import evaluate_holdout

    if not frames_eval:
        return {}
    _say(f"stage eval: {len(frames_eval)} held-out frames")
    return evaluate_holdout(run.stage_dir, run.rig, frames_eval=frames_eval, config=run.cfg.eval,
                            device=run.cfg.device)


def _summary(run: Run, seq, metrics: dict, report, n_train: int, n_eval: int) -> dict:
    """eval.json, and the manifest's record of the evaluation."""
    summary = {
        "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
        "psnr_refined": metrics.get("psnr_refined"), "ssim_refined": metrics.get("ssim_refined"),
        "psnr_masked": metrics.get("psnr_masked"), "lpips": metrics.get("lpips"),
        "psnr_full": metrics.get("psnr_full"), "ssim_full": metrics.get("ssim_full"),
        "psnr_head": metrics.get("psnr_head"), "psnr_torso": metrics.get("psnr_torso"),
        "psnr_neck": metrics.get("psnr_neck"), "psnr_neck_min": metrics.get("psnr_neck_min"),
        **{k: v for k, v in metrics.items() if k.startswith("identity_")},
        "framing": run.cfg.framing, "frames_train": n_train, "frames_eval": n_eval,
        "resolution": seq.resolution, "num_gaussians": metrics.get("num_gaussians"),
        "seconds": {k: round(v, 1) for k, v in run.seconds.items()},
        "device": run.cfg.device, "preset": run.cfg.preset, "warnings": list(report.warnings),
    }
    atomic_write_json(run.paths.eval_json, summary)
    run.mark("eval", **{k: summary[k] for k in ("psnr", "ssim", "psnr_refined", "num_gaussians")})
    return summary


def swap_in(stage_dir: Path, out: Path) -> None:
    """Stage 9: the finished avatar replaces `out` (the old one goes only once the new one is complete)."""
    write_marker(stage_dir, "avatar")
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(stage_dir, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage_dir, out)


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
        *([f"  portrait        : {fmt(summary['psnr_full'])} dB / {fmt(summary['ssim_full'], 4)} over its room vs "
           f"the real frames; head {fmt(summary['psnr_head'])} dB, torso {fmt(summary['psnr_torso'])} dB, neck "
           f"{fmt(summary['psnr_neck'])} dB (worst frame {fmt(summary['psnr_neck_min'])})"]
          if summary.get("psnr_full") is not None else []),
        *([f"  identity        : {fmt(summary['identity_distance'], 3)} render vs real (face-recognition distance; "
           f"one person is usually under 0.6), no face found in {summary['identity_no_face_real']} real and "
           f"{summary['identity_no_face_render']} rendered frames"] if "identity_distance" in summary else []),
        f"  Gaussians       : {summary['num_gaussians']}",
        "  time per stage  : " + ", ".join(f"{k} {v:.0f} s" for k, v in s.items()),
        f"  look at it      : {out / 'eval.mp4'} (real | render | error), {out / 'overlay.mp4'} (tracking)",
    ]
    print("\n".join(lines))
    print(json.dumps(summary))
