"""`avatar3d bench raster|contention|lipsync|portrait|render`: the benchmarks (median of repeats, a table and JSON).

Each benchmark, its settings and its report live in `avatar3d/benchmarks/`; this module only names them.
"""
from __future__ import annotations

from avatar3d.benchmarks.contention import BenchContentionConfig
from avatar3d.benchmarks.lipsync import BenchLipsyncConfig
from avatar3d.benchmarks.portrait import BenchPortraitConfig
from avatar3d.benchmarks.raster import BenchRasterConfig
from avatar3d.benchmarks.render import BenchRenderConfig

__all__ = ["BenchContentionConfig", "BenchLipsyncConfig", "BenchPortraitConfig", "BenchRasterConfig",
           "BenchRenderConfig", "main_contention", "main_lipsync", "main_portrait", "main_raster", "main_render"]


def main_raster(cfg: BenchRasterConfig) -> int:
    from avatar3d.benchmarks import raster

    raster.main(cfg)
    return 0


def main_contention(cfg: BenchContentionConfig) -> int:
    from avatar3d.benchmarks import contention

    return contention.main(cfg)


def main_lipsync(cfg: BenchLipsyncConfig) -> int:
    from avatar3d.benchmarks import lipsync

    return lipsync.main(cfg)


def main_portrait(cfg: BenchPortraitConfig) -> int:
    from avatar3d.benchmarks import portrait

    return portrait.main(cfg)


def main_render(cfg: BenchRenderConfig) -> int:
    from avatar3d.benchmarks import render

    return render.main(cfg)
