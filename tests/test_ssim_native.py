"""The training loss's native SSIM (cuda_ext/ssim_cpu.cpp) against its PyTorch reference, on random images of
the fixed seeds: the map within 1e-5, the gradient by the render within 1e-4 (relative); sizes below the window,
odd shapes and other channel counts; and the dispatch that keeps every other case on the reference."""
from __future__ import annotations

import pytest
import torch

from avatar3d.errors import BackendUnavailableError
from avatar3d.render import native
from avatar3d.training.losses import padded_ssim_map, padded_ssim_map_reference, photometric_loss

pytestmark = pytest.mark.skipif(not native.is_available(),
                                reason="the native extension avatar3d._C is not built (make build)")

SHAPES = [(64, 48, 3), (37, 23, 1), (5, 9, 3), (3, 3, 4), (1, 17, 3), (40, 40, 2)]


def _images(seed: int, shape, similar: bool):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    # a render near its target (as in training) or an unrelated one: both ends of SSIM's range
    b = (a + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1) if similar else torch.rand(shape, generator=g)
    return a.requires_grad_(), b, torch.randn(shape[:2], generator=g)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("similar", [True, False])
def test_native_ssim_matches_the_reference(seed, shape, similar):
    a, b, v = _images(seed, shape, similar)
    native_map = native.ssim_map(a, b)
    (native_map * v).sum().backward()
    native_grad, a.grad = a.grad, None
    reference_map = padded_ssim_map_reference(a, b)
    (reference_map * v).sum().backward()
    assert native_map.shape == shape[:2]
    torch.testing.assert_close(native_map, reference_map, atol=1e-5, rtol=0)
    assert ((native_grad - a.grad).norm() / a.grad.norm()).item() < 1e-4


def test_loss_uses_the_native_op_only_where_it_applies(seed):
    a, b, _ = _images(seed, (24, 20, 3), True)
    assert padded_ssim_map(a, b).grad_fn.name().endswith("_SSIMMapBackward")
    # a target that needs its gradient, or float64, takes the reference (which differentiates both)
    b2 = b.clone().requires_grad_()
    photometric_loss(a, b2).backward()
    assert b2.grad is not None and b2.grad.abs().sum() > 0
    a64, b64 = a.detach().double().requires_grad_(), b.double()
    torch.testing.assert_close(padded_ssim_map(a64, b64), padded_ssim_map_reference(a64, b64))


def test_native_ssim_rejects_bad_input(seed):
    a, b, _ = _images(seed, (8, 8, 3), True)
    with pytest.raises(RuntimeError, match="same shape"):
        native.ssim_map(a, b[:, :4])
    with pytest.raises(RuntimeError, match=r"\[H,W,C\]"):
        native.ssim_map(a[..., 0], b[..., 0])
    if torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CPU"):
            native.ssim_map(a.cuda(), b.cuda())
