"""Render a rig-bound Gaussian avatar for one frame: pose the rig → world Gaussians → rasterize.

Training, evaluation and every later renderer use this one function, so what is trained is exactly what
is shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor

from avatar3d.gaussians.expression import expressed
from avatar3d.gaussians.model import BoundGaussians, WorldGaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import HeadRig, RigParams
from avatar3d.render import native
from avatar3d.render.rasterize import rasterize
from avatar3d.stages import stage


@dataclass
class AvatarRender:
    image: Tensor  # [H,W,3]
    alpha: Tensor  # [H,W,1]
    meta: dict  # the rasterizer's meta (means2d with retained grad, radii, depths, visible, ...)
    vertices: Tensor  # [V,3] the posed rig mesh of this frame


def binding_faces(rig: HeadRig) -> Tensor:
    """[F',3] the rig's renderable triangles (helper geometry removed): what Gaussians bind to."""
    return rig.faces[binding_index(rig)]


def binding_index(rig: HeadRig) -> Tensor:
    """[F'] int64: where each binding triangle (a Gaussian's `parent`) sits among the rig's triangles."""
    return torch.nonzero(rig.renderable_faces()).flatten()


def pose_gaussians(gaussians: BoundGaussians, vertices: Tensor, faces: Tensor,
                   params: Optional[RigParams] = None) -> WorldGaussians:
    # vertices: [V,3] posed mesh; faces: [F,3] binding triangles; params: the frame's RigParams (batch 1)
    """`gaussians.world(vertices, faces)` with the expression offsets of the face in `params` blended in
    (gaussians/expression.py; None: the person's mean face), computing the frames of the triangles that carry
    Gaussians only.

    A head rig has tens of thousands of renderable triangles; when the budget leaves many of them empty, or
    a test uses a few Gaussians, the frames of the empty ones are wasted work (forward and backward). Where no
    gradient is wanted (a clip, the viewer, an export) on the CPU, the native op does the same maths in one pass.
    """
    view = expressed(gaussians, params) if params is not None else gaussians
    if _native_binding_applies(view, vertices):
        means, quats, scales = native.bind_world(vertices, faces, view.parent, view.local_means, view.quats,
                                                 view.log_scales)
        dtype = vertices.dtype
        return WorldGaussians(means.to(dtype), quats.to(dtype), scales.to(dtype),
                              torch.sigmoid(view.opacity_logits), view.sh)
    used, inverse = _used_triangles(gaussians)
    if used.numel() * 4 > faces.shape[0] * 3:  # nearly every triangle is used: no gain
        return BoundGaussians.world(view, vertices, faces)
    local = SimpleNamespace(parent=inverse, local_means=view.local_means, log_scales=view.log_scales,
                            quats=view.quats, opacity_logits=view.opacity_logits, sh=view.sh)
    return BoundGaussians.world(local, vertices, faces[used])  # same maths, on the used triangles


def _native_binding_applies(gaussians: BoundGaussians, vertices: Tensor) -> bool:
    """No gradient is wanted, the tensors are on the CPU and the extension is built."""
    tensors = (vertices, gaussians.local_means, gaussians.quats, gaussians.log_scales)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return vertices.device.type == "cpu" and native.is_available()


def _used_triangles(gaussians: BoundGaussians) -> tuple[Tensor, Tensor]:
    """(used [U], inverse [N]): `torch.unique(gaussians.parent, return_inverse=True)`, kept on the object while
    its `parent` is the same tensor, unmodified (a clip renders the same Gaussians every frame)."""
    parent = gaussians.parent
    cached = gaussians.__dict__.get("_used_triangles")
    if cached is not None and cached[0] is parent and cached[1] == parent._version:
        return cached[2], cached[3]
    used, inverse = torch.unique(parent, return_inverse=True)
    gaussians.__dict__["_used_triangles"] = (parent, parent._version, used, inverse)
    return used, inverse


def render_avatar(gaussians: BoundGaussians, rig: HeadRig, faces: Tensor, params_t: RigParams, K: Tensor,
                  viewmat: Tensor, width: int, height: int, background: Optional[Tensor] = None,
                  backend: str = "auto", sh_degree: Optional[int] = None) -> AvatarRender:
    # faces: [F',3] binding triangles (gaussians.parent indexes them); params_t: RigParams with batch 1;
    # K: [3,3] pixels at this width/height; viewmat: [4,4] world->camera; background: [3] or None (black)
    """One frame of the avatar. `sh_degree` limits the SH bands used (None: all the Gaussians have)."""
    with stage("pose_rig"):
        vertices = pose_vertices(rig, params_t)[0]  # [V,3]
    with stage("bind"):
        world = pose_gaussians(gaussians, vertices, faces, params_t)
    degree = gaussians.sh_degree if sh_degree is None else min(sh_degree, gaussians.sh_degree)
    if background is not None:
        background = background.to(device=world.means.device, dtype=world.means.dtype)
    image, alpha, meta = rasterize(world.means, world.quats, world.scales, world.opacities, world.sh, viewmat, K,
                                   int(width), int(height), background, sh_degree=degree, backend=backend)
    return AvatarRender(image, alpha, meta, vertices)

