"""Expression-dependent Gaussians: a linear correction of each Gaussian as a function of the face.

A Gaussian bound to a triangle follows the mesh, but keeps one appearance whatever the face does: the creases of a
smile, the shade inside an opening mouth and the lid over a closing eye are not in the mesh. As in Gaussian
Blendshapes, each Gaussian here adds a blend of offsets to its position (triangle-local units), its DC colour (SH
units) and its opacity logit, weighted by the frame's *expression code*.

The code is the frame's expression, jaw and eye parameters in a basis of the person's own face (the principal
components of the training frames' parameters, each scaled to unit spread over them), so:

- the person's mean face has code 0 and takes no correction;
- a few components (`TrainConfig.expression_components`) carry most of what the face does, keeping the offsets
  few (K per Gaussian and attribute) and a frame's correction one small matrix-vector product;
- an expression beyond what the training frames showed is clamped to `limit` spreads per component, so an unseen
  face gets at most the corrections of the most extreme faces trained on, never an extrapolation.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Union

import torch
from torch import Tensor, nn

from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams

CODE_LIMIT = 2.5
"""Default clamp of each code component, in spreads of the training frames (a face beyond it is treated as at it)."""


def face_vector(params: RigParams) -> Tensor:  # -> [B, E + 3 + 6]
    """What the code reads of each frame: expression coefficients, jaw rotation, both eyes' rotations."""
    return torch.cat([params.expr, params.jaw, params.eyes.flatten(1)], dim=1)


class ExpressionBasis(nn.Module):
    """The person's expression code: `code(params)` = clamp(components (x - mean) / spread, ±limit)."""

    def __init__(self, mean: Tensor, components: Tensor, spread: Tensor, limit: Union[float, Tensor] = CODE_LIMIT):
        # mean: [D] the training frames' mean face vector; components: [K,D] orthonormal rows; spread: [K] > 0
        super().__init__()
        k, d = components.shape
        if mean.shape != (d,) or spread.shape != (k,):
            raise InputError(f"expression basis of inconsistent shapes: mean {tuple(mean.shape)}, components "
                             f"{tuple(components.shape)}, spread {tuple(spread.shape)}")
        self.register_buffer("mean", mean.float())
        self.register_buffer("components", components.float())
        self.register_buffer("spread", spread.float())
        self.register_buffer("limit", torch.as_tensor(limit, dtype=torch.float32).reshape(()))

    @property
    def size(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, params: RigParams, size: int, limit: float = CODE_LIMIT) -> "ExpressionBasis":
        """The basis of the `size` principal components of the frames in `params` (the training frames); fewer
        when the frames span fewer directions (a component needs a spread above 1e-4 to count)."""
        x = face_vector(params).detach().double().cpu()  # [T,D]
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        spread = s / max(1, x.shape[0] - 1) ** 0.5  # the standard deviation along each component
        keep = int(min(size, int((spread > 1e-4).sum())))
        return cls(mean, vh[:keep], spread[:keep], limit)

    def code(self, params: RigParams) -> Tensor:  # -> [B,K]
        x = face_vector(params).to(self.mean.dtype)
        code = (x - self.mean) @ self.components.T / self.spread
        return torch.maximum(torch.minimum(code, self.limit), -self.limit)


OFFSET_NAMES = ("expr_means", "expr_colours", "expr_opacity")
"""The per-Gaussian offsets, [N,K,3], [N,K,3] and [N,K]: position (triangle-local), DC colour, opacity logit."""


def zero_offsets(n: int, k: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
    return {"expr_means": torch.zeros(n, k, 3, device=device, dtype=dtype),
            "expr_colours": torch.zeros(n, k, 3, device=device, dtype=dtype),
            "expr_opacity": torch.zeros(n, k, device=device, dtype=dtype)}


def expressed(gaussians, params: RigParams):
    # gaussians: BoundGaussians; params: RigParams with batch 1
    """The Gaussians as the face of `params` shows them: a view with the same fields as `gaussians` (parent,
    local_means, log_scales, quats, opacity_logits, sh), the offsets blended in (differentiable). Gaussians without
    an expression basis come back as they are."""
    basis = getattr(gaussians, "expression", None)
    if basis is None or basis.size == 0:
        return gaussians
    code = basis.code(params)[0].to(gaussians.local_means.dtype)  # [K]
    # [K] @ [N,K,3] -> [N,3]: a batched vector-matrix product, several times faster here than einsum's route
    means = gaussians.local_means + torch.matmul(code, gaussians.expr_means)
    colours = gaussians.sh[:, 0] + torch.matmul(code, gaussians.expr_colours)
    sh = torch.cat([colours[:, None], gaussians.sh[:, 1:]], dim=1)
    opacity = gaussians.opacity_logits + gaussians.expr_opacity @ code
    return SimpleNamespace(parent=gaussians.parent, local_means=means, log_scales=gaussians.log_scales,
                           quats=gaussians.quats, opacity_logits=opacity, sh=sh,
                           num_gaussians=gaussians.num_gaussians, sh_degree=gaussians.sh_degree)
