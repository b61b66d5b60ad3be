"""`avatar3d bench portrait`: what the torso and the room cost a rendered clip, against the same avatar's head alone.

One avatar, one clip (its own tracked motion, the camera orbiting and backed off as asked), rendered end to end into
an mp4 (driving, posing, rasterizing, compositing, encoding): as the portrait (every Gaussian, over its background
plate) and as its head alone (the Gaussians bound to the head, over white); with --head-avatar also the head avatar
the same video gives with `--framing head` (what was rendered before portraits), driven alike. Each is the median
of `repeats` runs after a warm-up, in one process, the modes taking turns, so the ratios compare like with
like. Prints a table; writes JSON
with --json: {"avatar", "frames", "resolution", "threads", "modes": {name: {"median_s", "fps", "gaussians"}},
"ratio", "ratio_head_avatar"}: the portrait's fps over its head alone's, and over the head avatar's (or null).
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from avatar3d.errors import InputError
from avatar3d.benchmarks import report

WHITE = (1.0, 1.0, 1.0)


@dataclass
class BenchPortraitConfig:
    """Time a portrait's clip against the same avatar's head alone (table + optional JSON)."""

    avatar: tyro.conf.Positional[Path]
    """An avatar enrolled with the portrait framing."""
    frames: int = 50
    """Frames of the clip (its own tracked motion, from the start)."""
    resolution: int = 512
    """Side of the rendered frames."""
    orbit: float = 30.0
    """Degrees the camera orbits over the clip."""
    distance_scale: float = 1.5
    """The camera's distance relative to the enrolled one."""
    repeats: int = 3
    """Timed runs per mode (the median is reported)."""
    head_avatar: Optional[Path] = None
    """The same video enrolled with --framing head, to compare with too."""
    json: Optional[Path] = None
    """Write the results as JSON to this file (atomically)."""


def _head_only(avatar):
    """The same avatar without its torso's Gaussians (what a head avatar renders)."""
    head = copy.copy(avatar)
    on_torso = avatar.rig.region("torso")[avatar.faces].all(dim=1)  # [F'] binding triangles
    head.gaussians = avatar.gaussians.subset(~on_torso[avatar.gaussians.parent])
    return head


def _clip_seconds(avatar, params, controls, cfg: BenchPortraitConfig, background, folder: Path) -> float:
    started = time.perf_counter()
    avatar.write_clip(params, folder / "clip.mp4", controls, resolution=cfg.resolution, background=background,
                      progress=False)
    return time.perf_counter() - started


def bench_portrait(cfg: BenchPortraitConfig) -> dict:
    import torch

    from avatar3d.api import Avatar
    from avatar3d.drive import Controls

    avatar = Avatar.load(cfg.avatar, device="cpu")
    if not avatar.is_portrait or avatar.plate is None:
        raise InputError(f"{Path(cfg.avatar).name} is not a portrait with a background plate; enroll with "
                         f"--framing portrait (the default) in front of a still background")
    controls = Controls(orbit=cfg.orbit, distance_scale=cfg.distance_scale)
    modes = {"portrait (torso + plate)": (avatar, "plate"), "its head alone (white)": (_head_only(avatar), WHITE)}
    if cfg.head_avatar is not None:
        modes["head avatar (white)"] = (Avatar.load(cfg.head_avatar, device="cpu"), WHITE)
    out = {"avatar": str(cfg.avatar), "frames": min(cfg.frames, avatar.num_frames), "resolution": cfg.resolution,
           "threads": torch.get_num_threads(), "modes": {}}
    clips = {name: (who, who.tracked(refined=False).slice(0, out["frames"]), background)
             for name, (who, background) in modes.items()}
    times: dict[str, list[float]] = {name: [] for name in clips}
    with tempfile.TemporaryDirectory() as tmp:
        for who, params, background in clips.values():  # warm-up
            _clip_seconds(who, params, controls, cfg, background, Path(tmp))
        for _ in range(max(1, cfg.repeats)):  # the modes take turns, so a machine that drifts affects all alike
            for name, (who, params, background) in clips.items():
                times[name].append(_clip_seconds(who, params, controls, cfg, background, Path(tmp)))
    for name, (who, params, _) in clips.items():
        median = statistics.median(times[name])
        out["modes"][name] = {"median_s": round(median, 3), "fps": round(len(params) / median, 2),
                              "gaussians": who.gaussians.num_gaussians}
    fps = [m["fps"] for m in out["modes"].values()]
    out["ratio"] = round(fps[0] / fps[1], 3)
    out["ratio_head_avatar"] = round(fps[0] / fps[2], 3) if len(fps) > 2 else None
    return out


def format_table(result: dict) -> str:
    lines = [f"{result['frames']} frames at {result['resolution']}^2, {result['threads']} threads, end to end "
             f"into an mp4", f"{'mode':<26} {'Gaussians':>10} {'median s':>9} {'fps':>7}"]
    for name, m in result["modes"].items():
        lines.append(f"{name:<26} {m['gaussians']:>10} {m['median_s']:>9.2f} {m['fps']:>7.2f}")
    lines.append(f"portrait / its head alone, fps: {result['ratio']:.2f}")
    if result.get("ratio_head_avatar") is not None:
        lines.append(f"portrait / the head avatar, fps: {result['ratio_head_avatar']:.2f}")
    return "\n".join(lines)


def main(cfg: BenchPortraitConfig) -> int:
    result = bench_portrait(cfg)
    report(format_table(result), result, cfg.json)
    return 0
