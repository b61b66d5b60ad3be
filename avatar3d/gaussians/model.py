"""`BoundGaussians`: 3D Gaussians whose parameters live in their parent triangle's local frame.

Stored raw, as in 3DGS: local position (in units of the triangle scale), log-scale (same units),
local rotation quaternion (w,x,y,z, unnormalised), logit-opacity, SH coefficients. `world()` poses them
with a deformed mesh; see `binding.py` for the frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from avatar3d.errors import InputError
from avatar3d.gaussians.binding import local_to_world, triangle_frames
from avatar3d.gaussians.expression import OFFSET_NAMES, ExpressionBasis, zero_offsets
from avatar3d.render.sh import SH_C0


@dataclass
class WorldGaussians:
    """Gaussians posed in world space, ready for `avatar3d.render.rasterize`."""

    means: Tensor  # [N,3]
    quats: Tensor  # [N,4] w,x,y,z
    scales: Tensor  # [N,3] linear
    opacities: Tensor  # [N]
    sh: Tensor  # [N,K,3]


BASE_NAMES = ("local_means", "log_scales", "quats", "opacity_logits", "sh")
"""The parameters every bound Gaussian has, in the constructor's order."""


def rgb_to_sh0(rgb: Tensor) -> Tensor:  # rgb: [...,3] -> [...,3] DC coefficient giving that colour
    return (rgb - 0.5) / SH_C0


class BoundGaussians(nn.Module):
    """Gaussians bound to the triangles of a rig (parameters are `nn.Parameter`s, `parent` a buffer).

    With an `expression` basis each Gaussian also carries offsets per code component (`expr_means` [N,K,3],
    `expr_colours` [N,K,3], `expr_opacity` [N,K]; gaussians/expression.py); without one K is 0."""

    def __init__(self, parent: Tensor, local_means: Tensor, log_scales: Tensor, quats: Tensor,
                 opacity_logits: Tensor, sh: Tensor, expression: Optional[ExpressionBasis] = None,
                 offsets: Optional[dict[str, Tensor]] = None):
        # parent: [N] int64; local_means: [N,3]; log_scales: [N,3]; quats: [N,4]; opacity_logits: [N]; sh: [N,K,3]
        # offsets: OFFSET_NAMES -> [N,K,3] / [N,K,3] / [N,K] (zeros when None)
        super().__init__()
        n = parent.shape[0]
        for name, t, shape in (("local_means", local_means, (n, 3)), ("log_scales", log_scales, (n, 3)),
                               ("quats", quats, (n, 4)), ("opacity_logits", opacity_logits, (n,))):
            if tuple(t.shape) != shape:
                raise InputError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
        if sh.dim() != 3 or sh.shape[0] != n or sh.shape[2] != 3:
            raise InputError(f"sh has shape {tuple(sh.shape)}, expected [{n},K,3]")
        self.register_buffer("parent", parent.long())
        self.local_means = nn.Parameter(local_means)
        self.log_scales = nn.Parameter(log_scales)
        self.quats = nn.Parameter(quats)
        self.opacity_logits = nn.Parameter(opacity_logits)
        self.sh = nn.Parameter(sh)
        self.expression = expression
        self._set_offsets(n, offsets, local_means)

    def _set_offsets(self, n: int, offsets: Optional[dict[str, Tensor]], like: Tensor) -> None:
        k = self.expression.size if self.expression is not None else 0
        expected = zero_offsets(n, k, like.device, like.dtype)
        for name in OFFSET_NAMES:
            value = expected[name] if offsets is None else offsets[name]
            if tuple(value.shape) != tuple(expected[name].shape):
                raise InputError(f"{name} has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")
            setattr(self, name, nn.Parameter(value))

    def with_expression(self, basis: Optional[ExpressionBasis]) -> "BoundGaussians":
        """The same Gaussians with `basis` and zero offsets (no correction until trained)."""
        return BoundGaussians(self.parent, *(getattr(self, n).detach() for n in BASE_NAMES), basis)

    @property
    def num_gaussians(self) -> int:
        return int(self.parent.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    # ------------------------------------------------------------------ construction
    @classmethod
    def on_surface(cls, vertices: Tensor, faces: Tensor, count: int, *, sh_degree: int = 0,
                   colours: Optional[Tensor] = None, opacity: float = 0.9,
                   generator: Optional[torch.Generator] = None, density: Optional[Tensor] = None) -> "BoundGaussians":
        """`count` Gaussians spread over the surface in proportion to triangle area (times `density`).

        vertices: [V,3] the rest-pose mesh; faces: [F,3] the triangles that may carry Gaussians (helper
        geometry already removed); colours: [F,3] optional initial RGB per triangle; density: [F] optional relative
        number of Gaussians per unit area (e.g. fewer on clothes than on the face), their size following so each
        part is covered alike.
        Each Gaussian sits at a random point of its parent triangle, flat along it, sized so the set
        covers the surface (a budget below the triangle count thins the binding instead of decimating).
        """
        if faces.numel() == 0 or count <= 0:
            raise InputError("cannot place Gaussians: no renderable triangles or a budget of 0")
        device, dtype = vertices.device, vertices.dtype
        v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
        area = 0.5 * torch.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1)
        # systematic sampling over the cumulative area: every triangle gets its share (low variance,
        # so no bald patches), unlike independent draws
        weight = area if density is None else area * density.to(device=device, dtype=dtype)
        cdf = torch.cumsum(weight, 0) / weight.sum()
        offset = torch.rand((), generator=generator, dtype=dtype).to(device)
        positions = (torch.arange(count, device=device, dtype=dtype) + offset) / count
        parent = torch.searchsorted(cdf, positions).clamp_max(faces.shape[0] - 1)
        r = torch.rand(count, 2, device=device, dtype=dtype, generator=generator)
        flip = r.sum(-1) > 1
        r[flip] = 1 - r[flip]
        bary = torch.stack([1 - r[:, 0] - r[:, 1], r[:, 0], r[:, 1]], dim=-1)  # [N,3]
        points = (vertices[faces[parent]] * bary[..., None]).sum(1)
        origin, rotation, tri_scale = triangle_frames(vertices, faces)
        R = rotation[parent]
        local = (R.transpose(-1, -2) @ (points - origin[parent])[..., None])[..., 0] / tri_scale[parent, None]
        # disc radius so that `count` discs cover the total area about twice: pi r^2 * count ~ 2 * area
        radius = torch.sqrt(2.0 * weight.sum() / (math.pi * count))
        if density is not None:  # sparser parts get larger discs: pi r_f^2 n_f ~ 2 area_f
            radius = radius / torch.sqrt(density.to(device=device, dtype=dtype)[parent])
        in_plane = torch.log(radius / tri_scale[parent])
        log_scales = torch.stack([in_plane, in_plane, in_plane + math.log(0.1)], dim=-1)
        quats = torch.zeros(count, 4, device=device, dtype=dtype)
        quats[:, 0] = 1
        opacity_logits = torch.full((count,), math.log(opacity / (1 - opacity)), device=device, dtype=dtype)
        k = (sh_degree + 1) ** 2
        sh = torch.zeros(count, k, 3, device=device, dtype=dtype)
        rgb = colours[parent] if colours is not None else torch.full((count, 3), 0.5, device=device, dtype=dtype)
        sh[:, 0] = rgb_to_sh0(rgb)
        return cls(parent, local, log_scales, quats, opacity_logits, sh)

    # ------------------------------------------------------------------ posing
    def world(self, vertices: Tensor, faces: Tensor) -> WorldGaussians:
        """Pose with a deformed mesh. vertices: [V,3] (one frame); faces: [F,3] the binding's triangles.
        The expression offsets are not applied (the person's mean face): `avatar_render.pose_gaussians` does."""
        means, quats, scales = local_to_world(self.local_means, self.quats, torch.exp(self.log_scales), self.parent,
                                              *triangle_frames(vertices, faces))
        return WorldGaussians(means, quats, scales, torch.sigmoid(self.opacity_logits), self.sh)

    # ------------------------------------------------------------------ selection (densify / prune keep the binding)
    def subset(self, index: Tensor) -> "BoundGaussians":
        """A new set made of Gaussians `index` ([M] int64 or [N] bool); children keep their parent triangle."""
        return BoundGaussians(self.parent[index], *(getattr(self, n).detach()[index] for n in BASE_NAMES),
                              self.expression, {n: getattr(self, n).detach()[index] for n in OFFSET_NAMES})

    def tensors(self) -> dict[str, Tensor]:
        """Flat tensors for safetensors (the offsets only with an expression basis)."""
        skip = set(OFFSET_NAMES) if self.expression is None else set()
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k not in skip}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> "BoundGaussians":
        """The inverse of `tensors()`; files written before expression offsets existed load without them."""
        missing = {"parent", *BASE_NAMES} - set(tensors)
        if missing:
            raise InputError(f"the Gaussian file lacks {', '.join(sorted(missing))}; it is damaged or not an "
                             "avatar3d gaussians.safetensors — re-run `avatar3d train gaussians`")
        basis, offsets = None, None
        if "expression.components" in tensors:
            basis = ExpressionBasis(*(tensors[f"expression.{k}"] for k in ("mean", "components", "spread", "limit")))
            offsets = {n: tensors[n] for n in OFFSET_NAMES}
        return cls(tensors["parent"], *(tensors[n] for n in BASE_NAMES), basis, offsets)
