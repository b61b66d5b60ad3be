"""Motion-compensated temporal smoothing of the person probability (training.mask_smoothing)."""
from __future__ import annotations

import numpy as np
import pytest

from avatar3d.training.mask_smoothing import TemporalSmoother, fit_similarity, warp_probability


def _random_similarity(rng):
    angle = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.8, 1.25)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, rng.uniform(-20, 20)], [scale * s, scale * c, rng.uniform(-20, 20)]])


def test_fit_similarity_recovers_a_known_transform(seed):
    rng = np.random.default_rng(seed)
    A = _random_similarity(rng)
    src = rng.uniform(0, 200, size=(30, 2))
    dst = src @ A[:, :2].T + A[:, 2]
    np.testing.assert_allclose(fit_similarity(src, dst), A, atol=1e-8)
    # a reflection is not a similarity: the fit stays a rotation (positive determinant)
    mirrored = dst * np.array([-1.0, 1.0])
    assert np.linalg.det(fit_similarity(src, mirrored)[:, :2]) > 0


def _disk(H, W, cx, cy, r, soft=1.5):
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return np.clip((r - d) / soft + 0.5, 0, 1).astype(np.float32)


def test_warp_moves_content_by_the_transform(seed):
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-6, 6, size=2)
    # a soft edge (4 px ramp): bilinear resampling is exact on the ramp, off only near its kinks
    frame_b = _disk(80, 90, 45 + dx, 40 + dy, 18, soft=4.0)
    a_to_b = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    warped = warp_probability(frame_b, a_to_b)  # frame b seen from frame a: the disc back at (45, 40)
    expected = _disk(80, 90, 45, 40, 18, soft=4.0)
    assert np.abs(warped - expected).mean() < 2e-3 and np.abs(warped - expected).max() < 0.1



def _points(cx, cy):
    return np.array([[cx - 10, cy - 10], [cx + 10, cy - 10], [cx, cy + 12], [cx - 5, cy + 3]], float)


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_every_frame_comes_out_once_in_order(radius, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    smoother = TemporalSmoother(radius)
    out = []
    for i in range(n):
        out += smoother.push(i, rng.random((12, 12)).astype(np.float32), _points(6, 6))
    out += smoother.flush()
    assert [i for i, _ in out] == list(range(n))
    assert all(p.shape == (12, 12) for _, p in out)


def test_radius_zero_is_the_identity(seed):
    rng = np.random.default_rng(seed)
    frames = [rng.random((10, 11)).astype(np.float32) for _ in range(4)]
    smoother = TemporalSmoother(0)
    out = [p for i, f in enumerate(frames) for _, p in smoother.push(i, f, _points(5, 5))] + \
        [p for _, p in smoother.flush()]
    for a, b in zip(frames, out):
        np.testing.assert_array_equal(a, b)


def test_moving_head_with_flickering_edge_is_steadied_not_blurred(seed):
    """A disc moving 3 px per frame whose radius flickers by up to 1.5 px: after smoothing its radius varies
    less from frame to frame, and its edge stays far narrower than that of an average ignoring the motion."""
    rng = np.random.default_rng(seed)
    H, W, n = 96, 96, 12
    centres = [(24 + 3 * i + rng.uniform(-0.3, 0.3), 48 + rng.uniform(-0.3, 0.3)) for i in range(n)]
    noisy = [_disk(H, W, cx, cy, 20 + rng.uniform(-1.5, 1.5)) for cx, cy in centres]
    smoother = TemporalSmoother(2)
    out = {}
    for i, (prob, (cx, cy)) in enumerate(zip(noisy, centres)):
        out.update(dict(smoother.push(i, prob, _points(cx, cy))))
    out.update(dict(smoother.flush()))
    middle = range(2, n - 2)
    radius = lambda p: np.sqrt(p.sum() / np.pi)  # noqa: E731  (area of a disc)
    edge_width = lambda p: ((p > 0.05) & (p < 0.95)).sum()  # noqa: E731
    raw_jitter = np.std([radius(noisy[i]) for i in middle])
    smooth_jitter = np.std([radius(out[i]) for i in middle])
    assert smooth_jitter < 0.7 * raw_jitter
    naive = [np.mean(noisy[i - 2:i + 3], axis=0) for i in middle]  # no motion compensation
    assert np.mean([edge_width(out[i]) for i in middle]) < 0.6 * np.mean([edge_width(p) for p in naive])


def test_negative_radius_is_refused():
    with pytest.raises(ValueError, match="radius"):
        TemporalSmoother(-1)
