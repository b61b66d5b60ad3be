"""The differentiable Gaussian rasterizer: `rasterize(...)` with cuda / cpu (native) and torch backends."""
from avatar3d.render.rasterize import available_backends, rasterize

__all__ = ["rasterize", "available_backends"]
