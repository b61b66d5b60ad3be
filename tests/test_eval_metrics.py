"""PSNR / SSIM / LPIPS: identities, a known noise level, gradients, and SSIM against a plain numpy reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.render.metrics import _AlexLPIPS, lpips_or_none, psnr, psnr_masked, ssim


def _image(h=48, w=40):
    return torch.rand(h, w, 3, dtype=torch.float64)


def test_identical_images_give_inf_psnr_and_unit_ssim(seed):
    img = _image()
    assert math.isinf(float(psnr(img, img.clone())))
    assert float(ssim(img, img.clone())) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_known_noise_level(seed):
    ref = torch.full((256, 256, 3), 0.5, dtype=torch.float64)
    sigma = 0.02 + 0.05 * torch.rand(()).item()
    noisy = ref + sigma * torch.randn_like(ref)  # stays inside [0,1]: 0.5 +- 10 sigma at most
    expected = -10 * math.log10(sigma ** 2)
    assert float(psnr(noisy, ref)) == pytest.approx(expected, abs=0.1)


def test_psnr_masked_measures_only_inside_the_mask(seed):
    ref = _image(32, 32)
    img = ref.clone()
    img[:, 16:] = 1.0 - img[:, 16:]  # right half wrong
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:, :16] = True
    assert math.isinf(float(psnr_masked(img, ref, mask)))
    assert math.isfinite(float(psnr(img, ref)))
    img[0, 0, 0] += 0.1  # one error inside: finite, and only the 16x32 masked pixels count
    assert float(psnr_masked(img, ref, mask)) == pytest.approx(-10 * math.log10(0.01 / (16 * 32 * 3)), abs=1e-6)
    with pytest.raises(InputError):
        psnr_masked(img, ref, torch.zeros(32, 32, dtype=torch.bool))


def _ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Straight from the definition: an explicit 11x11 Gaussian window slid over every valid position."""
    x = np.arange(11) - 5.0
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    H, W, C = a.shape
    values = []
    for c in range(C):
        for i in range(H - 10):
            for j in range(W - 10):
                pa, pb = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
                cov = (w * pa * pb).sum() - ma * mb
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_numpy_reference(seed):
    ref = _image(24, 30)
    img = (ref + 0.1 * torch.randn_like(ref)).clamp(0, 1)
    ours = float(ssim(img, ref))
    assert ours < 0.99
    assert ours == pytest.approx(_ssim_numpy(img.numpy(), ref.numpy()), abs=1e-9)


def test_ssim_gradient_exists_and_points_uphill(seed):
    ref = _image(32, 32).float()
    img = (ref + 0.2 * torch.randn_like(ref)).clamp(0, 1).requires_grad_(True)
    value = ssim(img, ref)
    value.backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    with torch.no_grad():  # a small step along the gradient raises SSIM
        better = ssim(img + 1e-2 * img.grad / img.grad.abs().max(), ref)
    assert float(better) > float(value.detach())


def test_batched_and_bad_shapes(seed):
    a, b = torch.rand(2, 20, 20, 3), torch.rand(2, 20, 20, 3)
    assert float(ssim(a, b)) == pytest.approx((float(ssim(a[0], b[0])) + float(ssim(a[1], b[1]))) / 2, abs=1e-6)
    with pytest.raises(InputError):
        psnr(a[0], b[0, :10])
    with pytest.raises(InputError):
        ssim(torch.rand(8, 8, 3), torch.rand(8, 8, 3))


def test_lpips_is_none_without_local_weights(tmp_path, monkeypatch, seed):
    monkeypatch.delenv("AVATAR3D_LPIPS_DIR", raising=False)
    monkeypatch.setenv("AVATAR3D_HOME", str(tmp_path / "home"))
    img = torch.rand(64, 64, 3)
    assert lpips_or_none(img, img) is None
    assert lpips_or_none(img, img, weights_dir=tmp_path / "nothing") is None


def test_lpips_runs_from_weights_on_disk(tmp_path, seed):
    net = _AlexLPIPS()  # random weights saved in the layouts of torchvision / the lpips package
    alexnet = {}
    for conv, (*_, index) in zip(net.convs, _AlexLPIPS.CONVS):
        alexnet[f"features.{index}.weight"] = conv.weight.detach().clone()
        alexnet[f"features.{index}.bias"] = conv.bias.detach().clone()
    lins = {f"lin{k}.model.1.weight": lin.weight.detach().abs().clone() for k, lin in enumerate(net.lins)}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    img = torch.rand(64, 64, 3)
    same = lpips_or_none(img, img, weights_dir=tmp_path)
    other = lpips_or_none(img, torch.rand(64, 64, 3), weights_dir=tmp_path)
    assert same is not None and float(same) == pytest.approx(0.0, abs=1e-7)
    assert float(other) > 0


def test_eval_video_frame_and_file(tmp_path, seed):
    from avatar3d.eval.video import colormap, compose_eval_frame, write_eval_video
    from avatar3d.io.media import VideoReader

    real = np.random.rand(64, 80, 3).astype(np.float32)
    render = real.copy()
    render[:32] = 0.0  # top half wrong
    frame = compose_eval_frame(real, render, max_error=0.25, labels=False)
    assert frame.shape == (64, 240, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[:, :80], (real * 255 + 0.5).astype(np.uint8))
    heat = frame[:, 160:].astype(np.float32)
    assert heat[:32].mean() > heat[32:].mean() + 50  # the wrong half is bright
    np.testing.assert_allclose(heat[40, 10] / 255, colormap(0.0), atol=1 / 255)  # no error: the map's start
    labelled = compose_eval_frame(real, render)
    assert (labelled[:, 160:] != frame[:, 160:]).any()  # the label and colour bar are drawn
    lum = colormap(np.linspace(0, 1, 32)) @ np.array([0.3, 0.59, 0.11])
    assert (np.diff(lum) > 0).all()  # monotone lightness
    out = write_eval_video(tmp_path / "eval.mp4", [(real, render)] * 3, fps=25)
    assert out == 3
    with VideoReader(tmp_path / "eval.mp4") as video:
        assert (video.width, video.height, video.num_frames) == (240, 64, 3)
