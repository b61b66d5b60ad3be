"""Temporal smoothness of per-frame parameters: penalties on first and second differences over time.

The first difference damps drift and flicker of slow parameters; the second difference (acceleration)
is what removes jitter while leaving steady motion (a head turning at constant speed) unpenalised.
Both are means over the frames, so their weights do not depend on the sequence length.
"""
from __future__ import annotations

from torch import Tensor


def first_difference(x: Tensor) -> Tensor:  # x: [T,...] -> [T-1,...]
    return x[1:] - x[:-1]


def second_difference(x: Tensor) -> Tensor:  # x: [T,...] -> [T-2,...]
    return x[2:] - 2.0 * x[1:-1] + x[:-2]


def smoothness(x: Tensor,  # [T,...] one per-frame parameter
               w1: float, w2: float) -> Tensor:
    """w1 * mean_t |x_t+1 - x_t|^2 + w2 * mean_t |x_t+1 - 2 x_t + x_t-1|^2 (summed over the parameter's
    components); zero for sequences too short to have the differences."""
    total = x.new_zeros(())
    flat = x.reshape(x.shape[0], -1)
    if w1 > 0 and flat.shape[0] > 1:
        total = total + w1 * first_difference(flat).pow(2).sum(-1).mean()
    if w2 > 0 and flat.shape[0] > 2:
        total = total + w2 * second_difference(flat).pow(2).sum(-1).mean()
    return total

