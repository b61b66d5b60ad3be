"""`avatar3d bench render`: where a rendered clip's time goes, stage by stage, for a real avatar.

One avatar, one clip (its own tracked motion, the camera as asked), rendered end to end into an mp4 as `render`
does, once to warm up and `repeats` times with the frame path's stage marks recording (`avatar3d/stages.py`):
drive (camera and rig parameters), pose_rig (the rig's vertices), bind (triangle frames → world Gaussians), sh
(colours for the view), project, intersect, sort, blend (the native kernels' own timers), plate (the room seen by
this camera), finish (compositing, uint8) and encode (H.264, on its own thread: it overlaps the rendering). Each
stage's figure is the median over the recorded frames of its milliseconds per frame. Prints a table; writes JSON
with --json: {"avatar", "frames", "resolution", "threads", "gaussians", "background", "stages_ms": {stage: ms},
"frame_ms" (rendering, the encoder's thread aside), "fps" (end to end, the median run)}.
"""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from avatar3d.benchmarks import report

STAGES = ("drive", "pose_rig", "bind", "sh", "project", "intersect", "sort", "blend", "plate", "finish", "encode")
RENDER_STAGES = STAGES[:-1]  # on the rendering thread


@dataclass
class BenchRenderConfig:
    """Time a clip of an avatar stage by stage (table + optional JSON)."""

    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar."""
    frames: int = 50
    """Frames of the clip (its own tracked motion, from the start)."""
    resolution: int = 512
    """Side of the rendered frames."""
    orbit: float = 0.0
    """Degrees the camera orbits over the clip."""
    distance_scale: float = 1.0
    """The camera's distance relative to the enrolled one."""
    background: str = "auto"
    """auto (a portrait over its room, a head on white), plate, white, #rrggbb or a picture (as `render`)."""
    repeats: int = 3
    """Timed runs (after a warm-up); the stages are pooled over their frames, the fps is the median run's."""
    json: Optional[Path] = None
    """Write the results as JSON to this file (atomically)."""


def _clip(avatar, params, controls, cfg: BenchRenderConfig, background, folder: Path):
    return avatar.write_clip(params, folder / "clip.mp4", controls, resolution=cfg.resolution, background=background,
                             progress=False)


def bench_render(cfg: BenchRenderConfig) -> dict:
    import torch

    from avatar3d import stages
    from avatar3d.api import Avatar
    from avatar3d.drive import Controls
    from avatar3d.export.clip import parse_background

    avatar = Avatar.load(cfg.avatar, device="cpu")
    background = parse_background(cfg.background)
    params = avatar.tracked(refined=False).slice(0, min(cfg.frames, avatar.num_frames))
    controls = Controls(orbit=cfg.orbit, distance_scale=cfg.distance_scale)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        _clip(avatar, params, controls, cfg, background, Path(tmp))  # warm-up
        with stages.recording() as recorder:
            for _ in range(max(1, cfg.repeats)):
                runs.append(_clip(avatar, params, controls, cfg, background, Path(tmp)).frames_per_second)
    per_frame = {name: statistics.median(recorder.seconds[name]) * 1e3 for name in STAGES if recorder.seconds[name]}
    return {"avatar": str(cfg.avatar), "frames": len(params), "resolution": cfg.resolution,
            "threads": torch.get_num_threads(), "gaussians": avatar.gaussians.num_gaussians,
            "background": cfg.background, "stages_ms": {k: round(v, 3) for k, v in per_frame.items()},
            "frame_ms": round(sum(v for k, v in per_frame.items() if k in RENDER_STAGES), 3),
            "fps": round(statistics.median(runs), 2)}


def format_table(result: dict) -> str:
    frame = result["frame_ms"]
    lines = [f"{result['frames']} frames at {result['resolution']}^2, {result['threads']} threads, "
             f"{result['gaussians']} Gaussians, background {result['background']}",
             f"{'stage':<10} {'ms/frame':>9} {'share':>6}"]
    for name, ms in result["stages_ms"].items():
        share = f"{100 * ms / frame:>5.1f}%" if name in RENDER_STAGES and frame > 0 else "  (own thread)"
        lines.append(f"{name:<10} {ms:>9.2f} {share}")
    lines.append(f"{'rendering':<10} {frame:>9.2f}   (sum of the rendering thread's stages)")
    lines.append(f"end to end: {result['fps']:.2f} fps")
    return "\n".join(lines)


def main(cfg: BenchRenderConfig) -> int:
    result = bench_render(cfg)
    report(format_table(result), result, cfg.json)
    return 0
