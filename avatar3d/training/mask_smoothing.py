"""Temporal steadying of the per-frame person probability, compensated for the head's motion.

The selfie segmentation sees each frame on its own, so the hair outline and the soft edges move by a pixel
or two from frame to frame while the head itself barely moves. Those flickering edges are targets no
avatar can reproduce (on German_20s about 60% of the squared error of a trained avatar sits within 3 px
of the mask's edge). Each frame's probability is therefore averaged with its neighbours', after warping
each neighbour onto the frame by the 2D similarity that maps the head's rigidly posed points between the
two frames: edges that the head carries stay sharp, jitter averages out.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def fit_similarity(src: np.ndarray,  # [P,2] points in frame a
                   dst: np.ndarray,  # [P,2] the same points in frame b
                   ) -> np.ndarray:
    """[2,3] least-squares similarity (scale, rotation, translation) with dst ≈ A @ [src; 1] (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum() / len(src)
    if not var > 1e-12:  # all points coincide: only the translation is known
        return np.array([[1.0, 0.0, mu_d[0] - mu_s[0]], [0.0, 1.0, mu_d[1] - mu_s[1]]])
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ fix @ Vt
    scale = np.trace(np.diag(S) @ fix) / var
    t = mu_d - scale * R @ mu_s
    return np.concatenate([scale * R, t[:, None]], axis=1)


def warp_probability(prob: np.ndarray,  # [H,W] float32 probability in frame b
                     a_to_b: np.ndarray,  # [2,3] maps pixel coordinates of frame a to frame b
                     ) -> np.ndarray:
    """[H,W] the probability of frame b resampled onto frame a's pixels (bilinear; outside = 0)."""
    H, W = prob.shape
    ys = torch.arange(H, dtype=torch.float32) + 0.5
    xs = torch.arange(W, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    A = torch.as_tensor(a_to_b, dtype=torch.float32)
    bx = A[0, 0] * gx + A[0, 1] * gy + A[0, 2]
    by = A[1, 0] * gx + A[1, 1] * gy + A[1, 2]
    grid = torch.stack([bx / W * 2 - 1, by / H * 2 - 1], dim=-1)[None]  # align_corners=False convention
    src: Tensor = torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None, None]
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()


class TemporalSmoother:
    """Streaming, motion-compensated average of per-frame probabilities over `radius` frames each side.

    Frames go in with `push(index, prob, points)` in order; smoothed frames come out `radius` frames later
    (and the rest from `flush()`). Weights fall off linearly with distance (radius + 1 - |k|); at the ends
    of the clip the window is cut and the weights renormalised. `points` [P,2] are the pixel positions of
    the same head points in every frame (the head posed rigidly, expression left out).
    """

    def __init__(self, radius: int):
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.radius = int(radius)
        self._window: deque = deque()  # (index, prob, points), at most 2 * radius + 1

    def push(self, index: int, prob: np.ndarray, points: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self._window.append((int(index), np.asarray(prob, np.float32), np.asarray(points, np.float64)))
        if len(self._window) > 2 * self.radius + 1:
            self._window.popleft()
        centre = len(self._window) - 1 - self.radius  # the frame that now has `radius` successors
        return [self._emit(centre)] if centre >= 0 else []

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The last frames, not yet emitted (their windows cut at the end of the clip)."""
        n = len(self._window)
        out = [self._emit(position) for position in range(max(0, n - self.radius), n)]
        self._window.clear()
        return out

    def _emit(self, position: int) -> tuple[int, np.ndarray]:
        index, prob, points = self._window[position]
        if self.radius == 0:
            return index, prob
        total = np.zeros_like(prob)
        weight_sum = 0.0
        for o_index, o_prob, o_points in self._window:
            k = abs(o_index - index)
            if k > self.radius:
                continue
            w = float(self.radius + 1 - k)
            warped = o_prob if k == 0 else warp_probability(o_prob, fit_similarity(points, o_points))
            total += w * warped
            weight_sum += w
        return index, total / weight_sum


def head_point_indices(rig, faces_keep: Optional[Tensor] = None, count: int = 200) -> Tensor:
    """[P] `count` rig vertices spread over the triangles in `faces_keep` [F] bool (all when None): the points
    whose motion between two frames gives the warp."""
    faces = rig.faces if faces_keep is None else rig.faces[faces_keep.to(rig.faces.device)]
    used = torch.unique(faces.reshape(-1))
    return used[torch.linspace(0, len(used) - 1, min(count, len(used)), device=used.device).long()]


def head_points(rig, params, indices: Tensor) -> Tensor:
    # indices: [P] from head_point_indices
    """[B,P,3] world positions of the rig vertices `indices` posed by only the rigid head motion (root, neck,
    translation; expression, jaw and eyes at rest), so they follow the skull and not the mouth."""
    from avatar3d.head.lbs import pose_vertices
    from avatar3d.head.rig import RigParams

    rigid = RigParams(params.shape, torch.zeros_like(params.expr), params.global_rot, params.neck,
                      torch.zeros_like(params.jaw), torch.zeros_like(params.eyes), params.transl)
    return pose_vertices(rig, rigid)[:, indices.to(params.expr.device)]
