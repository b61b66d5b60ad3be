"""Per-frame rig parameters refined jointly with the Gaussians, with a prior towards the tracked values.

Tracking is a few pixels off here and there; letting the photometric loss nudge each training frame's
expression, jaw, pose, eyes and translation (small learning rates, pulled back to the tracked values)
keeps those errors from blurring the avatar. Stored as `AVATAR/refined.npz`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams
from avatar3d.io.atomic import atomic_write_bytes

REFINED_VERSION = 1
FREE_KEYS = ("expr", "global_rot", "neck", "jaw", "eyes", "transl")
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


def save_refined(path: Path, params: FrameParams, frames_train: list[int]) -> None:
    """Write refined.npz atomically: per-frame parameters of every frame (untrained frames as tracked) + split."""
    arrays = {k: getattr(params, k).detach().cpu().numpy().astype(np.float32) for k in FREE_KEYS}
    arrays["shape"] = params.shape.detach().cpu().numpy().astype(np.float32)
    arrays["frames_train"] = np.asarray(sorted(frames_train), dtype=np.int64)
    arrays["format_version"] = np.asarray(REFINED_VERSION)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_refined(path: Path, device=None) -> tuple[RigParams, list[int]]:
    """(refined per-frame RigParams, training frame indices) from refined.npz."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise InputError(f"{path} cannot be read ({type(err).__name__}); re-run `avatar3d train gaussians`") from err
    if int(arrays.get("format_version", -1)) != REFINED_VERSION:
        raise InputError(f"{path} has an unknown format; re-run `avatar3d train gaussians`")
    params = RigParams(**{k: torch.as_tensor(arrays[k], device=device) for k in ("shape",) + FREE_KEYS})
    return params, [int(i) for i in arrays["frames_train"]]
