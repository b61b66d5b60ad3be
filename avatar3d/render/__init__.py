"""Rendering: the differentiable Gaussian rasterizer `rasterize(...)` (cuda / cpu native / torch backends), the mesh
z-buffer renderer (mesh_raster.py) and the image metrics (metrics.py)."""
from avatar3d.render.rasterize import available_backends, rasterize

__all__ = ["rasterize", "available_backends"]
