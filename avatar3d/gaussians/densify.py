"""Binding-aware adaptive density control (3DGS clone / split / prune) with optimizer-state surgery.

Every operation is expressed as one gather: the new set is made of rows `index` of the old one
(children of a clone or split repeat their parent's row, so they inherit its triangle), some rows get new
values (split children), and the Adam moments follow the same gather, zeroed for newborn rows. Split
children are sampled in the parent triangle's local frame, where the Gaussian's own parameters live.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from avatar3d.gaussians.expression import OFFSET_NAMES
from avatar3d.gaussians.model import BASE_NAMES, BoundGaussians

PARAM_NAMES = BASE_NAMES + OFFSET_NAMES


class DensifyStats:
    """Running screen-space gradient norm of each Gaussian's 2D mean while it is visible."""

    def __init__(self, n: int, device: torch.device):
        self.grad_accum = torch.zeros(n, device=device)  # [N]
        self.count = torch.zeros(n, device=device)  # [N]

    def update(self, means2d: Tensor, visible: Tensor, width: int, height: int) -> None:
        # means2d: [N,2] with .grad after backward; visible: [N] bool
        """Accumulate after a backward pass. The pixel gradient is scaled to NDC units (x W/2, x H/2) so the
        3DGS threshold (2e-4) means the same thing at every resolution."""
        if means2d.grad is None:
            return
        g = means2d.grad.detach().to(self.grad_accum.dtype)
        g = torch.stack([g[:, 0] * width * 0.5, g[:, 1] * height * 0.5], dim=-1).norm(dim=-1)
        vis = visible.to(self.grad_accum.device)
        self.grad_accum[vis] += g[vis]
        self.count[vis] += 1

    def mean_grad(self) -> Tensor:  # -> [N]
        return self.grad_accum / self.count.clamp_min(1)

    def reset(self, n: int) -> None:
        self.grad_accum = self.grad_accum.new_zeros(n)
        self.count = self.count.new_zeros(n)


def _quat_to_rotmat(q: Tensor) -> Tensor:  # q: [N,4] (w,x,y,z), any norm -> [N,3,3]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def _param_groups(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups if g.get("name") in PARAM_NAMES}


def rebuild(gaussians: BoundGaussians, optimizer: Optional[torch.optim.Optimizer], index: Tensor,
            fresh: Optional[Tensor] = None, values: Optional[dict[str, Tensor]] = None) -> BoundGaussians:
    # index: [M] int64 rows of the old set; fresh: [M] bool rows whose Adam moments start at zero;
    # values: name -> [M,...] replacement values for some parameters
    """The Gaussian set made of rows `index` (binding kept: `parent[index]`), and the optimizer switched to its
    parameters with moments gathered the same way. The optimizer's groups must be named after PARAM_NAMES."""
    values = values or {}
    rows = {n: values.get(n, getattr(gaussians, n).detach()[index]).contiguous() for n in PARAM_NAMES}
    new = BoundGaussians(gaussians.parent[index], *(rows[n] for n in BASE_NAMES), gaussians.expression,
                         {n: rows[n] for n in OFFSET_NAMES})
    if optimizer is None:
        return new
    groups = _param_groups(optimizer)
    for name in PARAM_NAMES:
        group = groups.get(name)
        if group is None:
            continue
        old_param = group["params"][0]
        new_param = getattr(new, name)
        state = optimizer.state.pop(old_param, None)
        if state:
            moved = {}
            for key, value in state.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == old_param.shape[0]:
                    value = value[index].clone()
                    if fresh is not None:
                        value[fresh] = 0
                moved[key] = value
            optimizer.state[new_param] = moved
        group["params"][0] = new_param
    return new


@dataclass
class DensifyReport:
    cloned: int
    split: int
    pruned: int
    total: int


def densify_and_prune(gaussians: BoundGaussians, optimizer: Optional[torch.optim.Optimizer], stats: DensifyStats,
                      tri_scale: Tensor, *, extent: float, grad_threshold: float = 2e-4,
                      percent_dense: float = 0.01, min_opacity: float = 0.005, max_world_scale: float = 0.1,
                      max_gaussians: int = 100_000, densify: bool = True,
                      generator: Optional[torch.Generator] = None) -> tuple[BoundGaussians, DensifyReport]:
    # tri_scale: [F] size of each binding triangle in the rest pose (metres)
    """One round of adaptive density control.

    Clone small Gaussians (world size <= percent_dense * extent) whose mean screen-space gradient exceeds the
    threshold, split large ones in two (children sampled from the parent, 1/1.6 the size), prune the nearly
    transparent and those larger than max_world_scale * extent. Growth stops at `max_gaussians` (the
    highest-gradient candidates go first). Children keep their parent's triangle.
    """
    n = gaussians.num_gaussians
    device = gaussians.parent.device
    with torch.no_grad():
        world_size = tri_scale[gaussians.parent] * torch.exp(gaussians.log_scales).amax(-1)  # [N]
        opacity = torch.sigmoid(gaussians.opacity_logits)
        prune = (opacity < min_opacity) | (world_size > max_world_scale * extent)
        grads = stats.mean_grad().to(device)
        candidate = (grads >= grad_threshold) & ~prune if densify else torch.zeros_like(prune)
        budget = max(0, max_gaussians - int((~prune).sum()))
        if int(candidate.sum()) > budget:
            order = torch.argsort(torch.where(candidate, grads, torch.full_like(grads, -1.0)), descending=True)
            keep_cand = torch.zeros_like(candidate)
            keep_cand[order[:budget]] = True
            candidate &= keep_cand
        small = world_size <= percent_dense * extent
        clone = candidate & small
        split = candidate & ~small
        rows = torch.arange(n, device=device)
        kept = rows[~prune & ~split]
        cloned = rows[clone]
        split_rows = rows[split].repeat(2)
        index = torch.cat([kept, cloned, split_rows])
        fresh = torch.cat([torch.zeros_like(kept, dtype=torch.bool), torch.ones(len(cloned) + len(split_rows),
                                                                                dtype=torch.bool, device=device)])
        values = None
        if len(split_rows):
            scales = torch.exp(gaussians.log_scales.detach()[split_rows])  # [2S,3] local units
            R = _quat_to_rotmat(gaussians.quats.detach()[split_rows])
            gen = generator if generator is not None and generator.device.type == device.type else None
            noise = torch.randn(scales.shape, generator=gen, device=device, dtype=scales.dtype)
            offset = (R @ (noise * scales)[..., None])[..., 0]
            means = gaussians.local_means.detach()[index].clone()
            log_scales = gaussians.log_scales.detach()[index].clone()
            start = len(kept) + len(cloned)
            means[start:] = means[start:] + offset
            log_scales[start:] = log_scales[start:] - math.log(1.6)
            values = {"local_means": means, "log_scales": log_scales}
        new = rebuild(gaussians, optimizer, index, fresh, values)
    stats.reset(new.num_gaussians)
    return new, DensifyReport(int(clone.sum()), int(split.sum()), int(prune.sum()), new.num_gaussians)


def reset_opacity(gaussians: BoundGaussians, optimizer: Optional[torch.optim.Optimizer], value: float = 0.01) -> None:
    """Cap every opacity at `value` (3DGS's periodic reset, lets floaters be pruned) and clear its Adam moments."""
    cap = math.log(value / (1 - value))
    with torch.no_grad():
        gaussians.opacity_logits.clamp_(max=cap)
    if optimizer is not None:
        group = _param_groups(optimizer).get("opacity_logits")
        if group is not None:
            state = optimizer.state.get(group["params"][0], {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].zero_()
