"""`avatar3d demo`: the main job on the built-in synthetic subject, end to end, in a few minutes on a CPU.

1. makes the synthetic subject (a textured mesh of the synthetic rig, talking and turning its head, with
   known parameters and a synthetic voice; by default a portrait, with shoulders in a shirt in front of a painted
   wall) and renders its training video;
2. builds an avatar directory from it (tracking is skipped: the parameters are known; a portrait's torso is fitted
   to its person masks and its background plate estimated, by enrollment's own code) and trains a small Gaussian
   avatar on every frame (the fast preset's schedule, shortened);
3. scores the trained avatar on novel views (camera yaw +-30 degrees, distance x0.7 / x1.5) against the
   mesh renders;
4. renders an orbiting clip of the TRAINED avatar through the Python API (`Avatar.render`), driven by the
   subject's parameters, eyes on the camera, with the voice.

Outputs (in --out): demo.mp4, preview.png, novel_views.png, summary.json, train.mp4, avatar/.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

README_IMAGE_LIMIT = 300_000  # bytes


@dataclass
class DemoConfig:
    out: Path = Path("outputs/demo")
    """Output folder (demo.mp4, preview.png, novel_views.png, summary.json, train.mp4, avatar/)."""
    seconds: float = 3.0
    """Length of the synthetic subject's talking video (all of it is trained on) and of the clip."""
    fps: int = 25
    """Frame rate of the training video and of the clip."""
    resolution: int = 256
    """Height and width of the training frames, the scored views and the clip, pixels."""
    iterations: int = 1000
    """Training steps (the fast preset's settings, its schedule scaled to this many steps)."""
    orbit: float = 30.0
    """Camera yaw swept over the clip (turntable), degrees."""
    zoom: float = 1.25
    """Clip camera closer than the training camera by this factor (1: the training framing, whole head and neck)."""
    backend: Literal["auto", "cpu", "torch"] = "auto"
    """Rasterizer backend for the scores and the clip (auto: the C++ extension when built, else the PyTorch oracle)."""
    seed: int = 0
    """Seed of the synthetic subject (texture, identity, motion, voice)."""
    framing: Literal["portrait", "head"] = "portrait"
    """portrait: the subject with shoulders in a shirt in front of its room, enrolled as a video is (torso fitted to
    the person masks, plate estimated from the frames); head: the head alone over white."""
    readme_image: Optional[Path] = None
    """Also save the preview of the trained avatar here (the README's docs/images/demo.png; kept under 300 KB)."""


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _save_png(path: Path, image: np.ndarray, limit: Optional[int] = None) -> Path:
    # image: [H,W,3] uint8; with `limit`, halve the size until the PNG fits in `limit` bytes
    import io

    from PIL import Image

    from avatar3d.io.atomic import atomic_write_bytes

    picture = Image.fromarray(image)
    while True:
        buf = io.BytesIO()
        picture.save(buf, format="PNG", optimize=True)
        if limit is None or buf.tell() <= limit or min(picture.size) < 64:
            break
        picture = picture.resize((picture.width // 2, picture.height // 2), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())


def orbit_clip(avatar_dir: Path, out: Path, subject, *, orbit: float, zoom: float, backend: str = "auto"):
    """The trained avatar replaying the subject's parameters through the Python API, the camera sweeping
    `orbit` degrees of yaw with the eyes on it -> (ClipResult, uint8 [R,R*4,3] contact sheet of four frames)."""
    from avatar3d.api import Avatar
    from avatar3d.drive import Controls
    from avatar3d.errors import InputError

    if not zoom > 0:
        raise InputError(f"--zoom {zoom} must be positive (1 keeps the training framing, 1.25 comes closer)")
    avatar = Avatar.load(avatar_dir, device="cpu", backend=backend)
    params = avatar.tracked(refined=False)
    if params.audio is None:
        from avatar3d.drive.params import DriveParams

        params = DriveParams(**{**params.__dict__, "audio": subject.audio})
    controls = Controls(yaw=-orbit / 2, orbit=orbit, distance_scale=1.0 / zoom, gaze="camera")
    background = "auto" if subject.body is not None else tuple(float(v) for v in subject.background)  # auto: its room
    result = avatar.write_clip(params, out, controls, fps=subject.fps, resolution=subject.resolution,
                               background=background, progress=False)
    picks = np.linspace(0, len(params) - 1, 4).round().astype(int)
    sheet = np.concatenate([avatar.render_frame(params, int(t), controls, subject.resolution, background,
                                                progress=t / max(1, len(params) - 1)).image for t in picks], axis=1)
    return result, sheet


def main(cfg: DemoConfig) -> int:
    from avatar3d.config import preset_section
    from avatar3d.errors import InputError
    from avatar3d.io.atomic import atomic_write_text
    from avatar3d.pipeline.synthetic_eval import eval_subject, format_table, run_synthetic_eval, scaled_schedule
    from avatar3d.training.config import TrainConfig

    if not cfg.seconds > 0 or cfg.fps <= 0:
        raise InputError(f"--seconds {cfg.seconds} and --fps {cfg.fps} must be positive (e.g. 2 s at 25 fps)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train = scaled_schedule(preset_section("fast", "train", TrainConfig), cfg.iterations)
    train.resolution = int(cfg.resolution)
    train.checkpoint_every = 0  # a demo is not resumed

    _say(f"1/4 synthetic subject: {cfg.seconds:.1f} s of talking and head turning at {cfg.fps} fps, "
         f"{cfg.resolution}x{cfg.resolution}, known parameters (a textured mesh, not Gaussians)")
    subject = eval_subject(cfg.seconds, cfg.fps, cfg.resolution, cfg.seed, background=train.background,
                           portrait=cfg.framing == "portrait")
    rig = subject.rig
    _say(f"    rig: {rig.num_vertices} vertices, {rig.num_faces} triangles, {rig.num_shape} identity and "
         f"{rig.num_expr} expression shapes; {subject.num_frames} frames")
    _say(f"2/4 training a Gaussian avatar on all frames: {train.iterations} steps, "
         f"{train.init_gaussians} initial Gaussians bound to the rig's visible triangles")
    report = run_synthetic_eval(out, train, subject=subject, backend=cfg.backend,
                                say=lambda msg: _say("    " + msg))
    _say("3/4 novel views of the trained avatar against the ground truth:")
    for line in format_table(report).splitlines():
        _say("    " + line)

    _say(f"4/4 orbit clip of the trained avatar ({cfg.orbit:.0f} degrees of yaw, eyes on the camera) with the synthetic voice")
    result, sheet = orbit_clip(out / "avatar", out / "demo.mp4", subject, orbit=cfg.orbit, zoom=cfg.zoom,
                               backend=cfg.backend)
    clip, render_fps = result.path, result.frames_per_second
    preview = _save_png(out / "preview.png", sheet)
    if cfg.readme_image is not None:
        _save_png(Path(cfg.readme_image), sheet, limit=README_IMAGE_LIMIT)

    summary = {
        "frames": subject.num_frames,
        "fps": cfg.fps,
        "resolution": cfg.resolution,
        "gaussians": report["num_gaussians"],
        "iterations": train.iterations,
        "train_psnr": report["train_psnr"],
        "novel_views": {"psnr": report["psnr"], "ssim": report["ssim"], "views": report["views"]},
        "render_fps": render_fps,
        "seconds": {**report["seconds"], "total": round(time.perf_counter() - started, 1)},
        "outputs": {"clip": str(clip), "preview": str(preview), "novel_views": report["outputs"]["sheet"],
                    "training_video": report["outputs"]["train_video"], "avatar": report["outputs"]["avatar"]},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    s = summary["seconds"]
    _say(f"done in {s['total']:.0f} s (subject {s['subject']:.0f}, train {s['train']:.0f}, "
         f"scores {s['eval']:.0f}); {report['num_gaussians']} Gaussians; novel views {report['psnr']:.2f} dB "
         f"PSNR, {report['ssim']:.3f} SSIM; clip rendered at {render_fps:.1f} fps ({cfg.backend})")
    _say(f"clip: {clip} (H.264 + AAC, {subject.num_frames / cfg.fps:.1f} s)")
    _say(f"preview: {preview}; ground truth | render | error per view: {report['outputs']['sheet']}")
    _say(f"training video: {report['outputs']['train_video']}; avatar: {report['outputs']['avatar']}; "
         f"summary: {out / 'summary.json'}")
    if cfg.readme_image is not None:
        _say(f"README image: {cfg.readme_image}")
    _say(f"look at it from every side: avatar3d view {report['outputs']['avatar']}")
    return 0
