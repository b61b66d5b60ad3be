"""The pure-PyTorch rasterizer: the oracle every backend is tested against (forward and gradients).

It never touches the native extension. `project` and `composite` have exactly the signatures of the
native ops in `avatar3d.render.native`.
"""
from avatar3d.render.reference.composite import composite, tile_intersections
from avatar3d.render.reference.project import project, quat_to_rotmat

__all__ = ["project", "composite", "tile_intersections", "quat_to_rotmat"]
