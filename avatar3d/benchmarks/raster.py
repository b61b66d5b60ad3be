"""`avatar3d bench raster`: time the rasterizer backends on a fixed, seeded head-like scene.

For each backend available on the chosen device (torch oracle, native cpu or cuda, and gsplat's CUDA
rasterization when it imports and CUDA is present) and each N x image size, the median forward and
forward+backward time over `repeats` runs after a warm-up. Prints a table and optionally writes JSON:
{"device", "threads", "cases": [{"backend", "n", "width", "height", "fwd_ms", "fwdbwd_ms", "stages_ms"}],
 "speedup_cpu_vs_torch_fwd", "speedup_cpu_vs_torch_fwdbwd" (at N=30k, 512x512),
 "ratio_cuda_vs_gsplat_fwdbwd" (at N=100k, 512x512, ours over gsplat's; null when not measured)}.
`stages_ms` (native cpu only, else null) splits a forward+backward into its stages, each the median over the
repeats: project, intersect (tiles per Gaussian, scatter), sort (per tile, by depth), blend, blend_backward,
project_backward. Python and autograd make up the rest of `fwdbwd_ms`.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import torch

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.io.atomic import atomic_write_json
from avatar3d.render import native
from avatar3d.render.rasterize import available_backends, rasterize
from avatar3d.render.scenes import Scene, head_scene

DEFAULT_NS = (10_000, 30_000, 100_000)
DEFAULT_SIZES = (256, 512)
SPEEDUP_CASE = (30_000, 512)
GSPLAT_CASE = (100_000, 512)


@dataclass
class BenchRasterConfig:
    """Benchmark the rasterizer backends on a seeded head-like scene (table + optional JSON)."""

    json: Optional[Path] = None
    """Write the results as JSON to this file (atomically)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device of the scene tensors: cpu (torch oracle, native cpu) or cuda (torch, native cuda, gsplat)."""
    repeats: int = 10
    """Timed runs per case (after warm-up); the median is reported."""
    torch_repeats: int = 3
    """Timed runs per case for the slow pure-PyTorch oracle."""
    torch_max_n: int = 30_000
    """Largest N timed with the pure-PyTorch oracle (bigger cases are skipped for it: minutes per run)."""
    ns: tuple[int, ...] = DEFAULT_NS
    """Numbers of Gaussians."""
    sizes: tuple[int, ...] = DEFAULT_SIZES
    """Square image sizes in pixels."""
    backends: Optional[tuple[str, ...]] = None
    """Backends to time (torch, cpu, cuda, gsplat); default: every one available on the device."""


def _gsplat_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def _backends_for(device: str) -> list[str]:
    names = [b for b in available_backends() if b in ("torch", device)]
    if device == "cuda" and _gsplat_available():
        names.append("gsplat")
    return names


def _render_fn(backend: str, scene: Scene) -> Callable[[Scene], tuple[torch.Tensor, torch.Tensor]]:
    if backend != "gsplat":
        def ours(s: Scene):
            image, alpha, _ = rasterize(**s.rasterize_kwargs(), backend=backend)
            return image, alpha
        return ours
    from gsplat import rasterization

    def theirs(s: Scene):
        colors, alphas, _ = rasterization(s.means, s.quats, s.scales, s.opacities, s.colors, s.viewmat[None],
                                          s.K[None], s.width, s.height, near_plane=0.01, far_plane=100.0,
                                          eps2d=0.3, backgrounds=s.background[None])
        return colors[0], alphas[0]
    return theirs


def _time_ms(fn: Callable[[], None], repeats: int, warmup: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_case(backend: str, scene: Scene, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median forward ms, median forward+backward ms) of one backend on one scene."""
    fwd, fwdbwd, _ = time_case_with_stages(backend, scene, repeats, warmup)
    return fwd, fwdbwd


def time_case_with_stages(backend: str, scene: Scene, repeats: int,
                          warmup: int = 2) -> tuple[float, float, Optional[dict[str, float]]]:
    """(median forward ms, median forward+backward ms, median ms per stage or None) of one backend on one
    scene; the stages are timed inside the native CPU kernels, during the forward+backward repeats."""
    sync = torch.cuda.synchronize if scene.means.is_cuda else (lambda: None)
    render = _render_fn(backend, scene)
    frozen = scene.clone()
    leaves = scene.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            render(frozen)

    staged = backend == "cpu" and not scene.means.is_cuda
    stages: list[dict[str, float]] = []

    def forward_backward():
        for t in leaves.params().values():
            t.grad = None
        image, alpha = render(leaves)
        (image.sum() + alpha.sum()).backward()
        if staged:
            stages.append(native.stage_times())

    fwd = _time_ms(forward, repeats, warmup, sync)
    fwdbwd = _time_ms(forward_backward, repeats, warmup, sync)
    if not staged:
        return fwd, fwdbwd, None
    timed = stages[warmup:]
    return fwd, fwdbwd, {k: statistics.median(s[k] for s in timed) for k in native.STAGES}


def _device_name(device: str) -> str:
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _find(cases: list[dict], backend: str, n: int, size: int) -> dict | None:
    for case in cases:
        if (case["backend"], case["n"], case["width"], case["height"]) == (backend, n, size, size):
            return case
    return None


def _ratio(num: dict | None, den: dict | None, key: str) -> float | None:
    if num is None or den is None or not den[key] > 0:
        return None
    return num[key] / den[key]


def format_table(result: dict, notes: list[str]) -> str:
    """The benchmark results as a fixed-width text table."""
    lines = [f"device: {result['device']}   threads: {result['threads']}",
             f"{'backend':<8} {'N':>8} {'size':>9} {'fwd ms':>10} {'fwd+bwd ms':>11}"]
    for c in result["cases"]:
        lines.append(f"{c['backend']:<8} {c['n']:>8} {c['width']:>4}x{c['height']:<4} {c['fwd_ms']:>10.2f} "
                     f"{c['fwdbwd_ms']:>11.2f}")
    staged = [c for c in result["cases"] if c["stages_ms"]]
    if staged:
        lines.append("stages of fwd+bwd, ms (median)")
        lines.append(f"{'backend':<8} {'N':>8} {'size':>9} " + " ".join(f"{k:>16}" for k in native.STAGES))
        for c in staged:
            lines.append(f"{c['backend']:<8} {c['n']:>8} {c['width']:>4}x{c['height']:<4} "
                         + " ".join(f"{c['stages_ms'][k]:>16.2f}" for k in native.STAGES))
    for key in ("speedup_cpu_vs_torch_fwd", "speedup_cpu_vs_torch_fwdbwd", "ratio_cuda_vs_gsplat_fwdbwd"):
        value = result[key]
        lines.append(f"{key}: {'n/a' if value is None else f'{value:.2f}'}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def run_raster_bench(device: str = "cpu", json_path: Path | str | None = None, sizes=DEFAULT_SIZES, ns=DEFAULT_NS,
                     repeats: int = 10, backends=None, torch_repeats: int = 3, torch_max_n: int = 30_000,
                     print_fn: Callable[[str], None] | None = print) -> dict:
    """Run the benchmark; returns the JSON-ready dict (and writes it to `json_path` when given)."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r} is not supported; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda was requested but torch sees no CUDA device; use --device cpu")
    if repeats < 1 or torch_repeats < 1:
        raise InputError("repeats must be at least 1; pass --repeats 10 (the default) or more")
    usable = _backends_for(device)
    chosen = list(backends) if backends else usable
    missing = [b for b in chosen if b not in usable]
    if missing:
        raise BackendUnavailableError(f"backend(s) {', '.join(missing)} are not available on {device} here "
                                      f"(available: {', '.join(usable)}); build the extension or drop them")
    notes = []
    if "torch" in chosen:
        notes.append(f"torch (the pure-PyTorch oracle) is timed over {torch_repeats} runs and skipped above "
                     f"N={torch_max_n}; the others over {repeats} runs")
    cases = []
    for size in sizes:
        for n in ns:
            scene = head_scene(int(n), int(size), int(size), seed=0, device=device)
            for backend in chosen:
                if backend == "torch" and n > torch_max_n:
                    continue
                reps = torch_repeats if backend == "torch" else repeats
                fwd, fwdbwd, stages = time_case_with_stages(backend, scene, reps, warmup=1 if backend == "torch" else 3)
                case = {"backend": backend, "n": int(n), "width": int(size), "height": int(size),
                        "fwd_ms": round(fwd, 4), "fwdbwd_ms": round(fwdbwd, 4),
                        "stages_ms": {k: round(v, 4) for k, v in stages.items()} if stages else None}
                cases.append(case)
                if print_fn is not None:
                    print_fn(f"  {backend:<7} N={n:<7} {size}x{size}: fwd {fwd:.2f} ms, fwd+bwd {fwdbwd:.2f} ms")
    cpu_case = _find(cases, "cpu", *SPEEDUP_CASE)
    torch_case = _find(cases, "torch", *SPEEDUP_CASE)
    result = {
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
        "cases": cases,
        "speedup_cpu_vs_torch_fwd": _ratio(torch_case, cpu_case, "fwd_ms"),
        "speedup_cpu_vs_torch_fwdbwd": _ratio(torch_case, cpu_case, "fwdbwd_ms"),
        "ratio_cuda_vs_gsplat_fwdbwd": _ratio(_find(cases, "cuda", *GSPLAT_CASE), _find(cases, "gsplat", *GSPLAT_CASE),
                                              "fwdbwd_ms"),
    }
    if print_fn is not None:
        print_fn(format_table(result, notes))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_path, result)
    return result


def main(cfg: BenchRasterConfig) -> dict:
    """Entry point of `avatar3d bench raster`."""
    return run_raster_bench(device=cfg.device, json_path=cfg.json, sizes=cfg.sizes, ns=cfg.ns, repeats=cfg.repeats,
                            backends=cfg.backends, torch_repeats=cfg.torch_repeats, torch_max_n=cfg.torch_max_n)
