"""Per-frame rig parameters refined jointly with the Gaussians, with a prior towards the tracked values.

Tracking is a few pixels off here and there; letting the photometric loss nudge each training frame's
expression, jaw, pose, eyes and translation (small learning rates, pulled back to the tracked values)
keeps those errors from blurring the avatar. Stored as `AVATAR/refined.npz` (`head/refined.py`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from avatar3d.head.refined import FREE_KEYS
from avatar3d.head.rig import RigParams

# How far a parameter may plausibly be off after tracking: the prior is measured in these units.
PRIOR_UNITS = {"expr": 1.0, "global_rot": 0.05, "neck": 0.05, "jaw": 0.05, "eyes": 0.1, "transl": 0.005}


class FrameParams(nn.Module):
    """Refinable copies of a sequence's per-frame parameters (identity `shape` stays fixed)."""

    def __init__(self, tracked: RigParams):
        super().__init__()
        self.register_buffer("shape", tracked.shape.detach().clone())
        for key in FREE_KEYS:
            value = getattr(tracked, key).detach().clone()
            self.register_buffer(f"tracked_{key}", value)
            setattr(self, key, nn.Parameter(value.clone()))

    @property
    def num_frames(self) -> int:
        return int(self.expr.shape[0])

    def frame(self, t: int) -> RigParams:
        """RigParams of frame t with batch 1 (differentiable in the refined values)."""
        return RigParams(self.shape, *(getattr(self, k)[t:t + 1] for k in FREE_KEYS))

    def tracked_frame(self, t: int) -> RigParams:
        return RigParams(self.shape, *(getattr(self, f"tracked_{k}")[t:t + 1] for k in FREE_KEYS))

    def all(self) -> RigParams:
        return RigParams(self.shape, *(getattr(self, k).detach() for k in FREE_KEYS))

    def prior(self, t: int) -> Tensor:
        """Squared distance of frame t from its tracked values, each group in its plausible-error unit."""
        total = self.expr.new_zeros(())
        for key in FREE_KEYS:
            diff = (getattr(self, key)[t] - getattr(self, f"tracked_{key}")[t]) / PRIOR_UNITS[key]
            total = total + diff.pow(2).mean()
        return total



class FrameAdam:
    """Adam that updates only the rows (frames) that were rendered, each with its own step count.

    torch's Adam would keep moving every other frame with its stale momentum after each step; here a frame
    moves only on the steps that saw it, so its refinement depends on its own images alone.
    """

    def __init__(self, params: FrameParams, lr_expr: float, lr_pose: float, lr_transl: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.lr = {k: {"expr": lr_expr, "transl": lr_transl}.get(k, lr_pose) for k in FREE_KEYS}
        self.betas, self.eps = betas, eps
        self.state = {}
        for k in FREE_KEYS:
            p = getattr(params, k)
            self.state[f"{k}.m"] = torch.zeros_like(p.detach())
            self.state[f"{k}.v"] = torch.zeros_like(p.detach())
        self.state["count"] = torch.zeros(params.num_frames, dtype=torch.float64, device=params.expr.device)

    @torch.no_grad()
    def step(self, t: int) -> None:
        """Update frame t from the current gradients, then clear them."""
        b1, b2 = self.betas
        self.state["count"][t] += 1
        n = float(self.state["count"][t])
        for k in FREE_KEYS:
            p = getattr(self.params, k)
            if p.grad is None:
                continue
            g = p.grad[t]
            m, v = self.state[f"{k}.m"], self.state[f"{k}.v"]
            m[t] = b1 * m[t] + (1 - b1) * g
            v[t] = b2 * v[t] + (1 - b2) * g * g
            p[t] -= self.lr[k] * (m[t] / (1 - b1 ** n)) / ((v[t] / (1 - b2 ** n)).sqrt() + self.eps)
            p.grad = None

    def tensors(self) -> dict[str, Tensor]:
        return {f"fo.{k}": v.detach().cpu() for k, v in self.state.items()}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for k, v in self.state.items():
            if f"fo.{k}" in tensors:
                v.copy_(tensors[f"fo.{k}"])
