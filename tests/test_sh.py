"""Real spherical harmonics (3DGS constants and signs) and the SH -> RGB colour rule."""
from __future__ import annotations

import math

import pytest
import torch

from avatar3d.camera import camera_centre, orbit_viewmat
from avatar3d.errors import InputError
from avatar3d.render import native, rasterize
from avatar3d.render.scenes import head_scene
from avatar3d.render.sh import SH_C0, eval_sh, sh_basis, sh_to_rgb


def _fibonacci_sphere(n: int) -> torch.Tensor:  # [n,3] near-uniform unit vectors
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5 ** 0.5) * i
    return torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1)


def test_basis_is_orthonormal_on_the_sphere():
    dirs = _fibonacci_sphere(200_000)
    basis = sh_basis(3, dirs)  # [n,16]
    gram = basis.T @ basis * (4 * math.pi / dirs.shape[0])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-4, rtol=0)


def test_basis_signs_match_3dgs(seed):
    # Degree-1 and a few higher terms as written in the 3DGS reference implementation.
    d = torch.nn.functional.normalize(torch.randn(7, 3, dtype=torch.float64), dim=-1)
    x, y, z = d.unbind(-1)
    b = sh_basis(3, d)
    c1 = 0.4886025119029199
    torch.testing.assert_close(b[:, 1:4], torch.stack([-c1 * y, c1 * z, -c1 * x], -1))
    torch.testing.assert_close(b[:, 4], 1.0925484305920792 * x * y)
    torch.testing.assert_close(b[:, 6], 0.31539156525252005 * (2 * z * z - x * x - y * y))
    torch.testing.assert_close(b[:, 15], -0.5900435899266435 * x * (x * x - 3 * y * y))
    assert sh_basis(0, d).shape == (7, 1) and sh_basis(2, d).shape == (7, 9)
    with pytest.raises(InputError):
        sh_basis(4, d)


def test_degree0_is_dc_plus_half_and_clamped(seed):
    n = 50
    coeffs = torch.randn(n, 1, 3, dtype=torch.float64) * 3
    means = torch.randn(n, 3, dtype=torch.float64)
    rgb = sh_to_rgb(0, coeffs, means, orbit_viewmat(2.0, dtype=torch.float64))
    torch.testing.assert_close(rgb, torch.clamp_min(SH_C0 * coeffs[:, 0] + 0.5, 0.0))
    assert (rgb == 0).any() and (rgb > 1).any()  # unclamped above, clamped at 0 below


def test_view_direction_comes_from_the_camera_centre(seed):
    n = 10
    coeffs = torch.zeros(n, 4, 3, dtype=torch.float64)
    coeffs[:, 3] = -1.0 / 0.4886025119029199  # rgb = 0.5 + x-component of the view direction
    means = torch.randn(n, 3, dtype=torch.float64) * 0.05
    yaw = float(torch.rand(1)) * 140 - 70
    view = orbit_viewmat(1.0, yaw, 0.0, dtype=torch.float64)
    centre = -view[:3, :3].T @ view[:3, 3]
    dirs = torch.nn.functional.normalize(means - centre, dim=-1)
    rgb = sh_to_rgb(1, coeffs, means, view)
    torch.testing.assert_close(rgb, (0.5 + dirs[:, :1]).clamp_min(0).expand(n, 3))
    # Extra coefficients beyond (deg+1)^2 are ignored.
    more = torch.cat([coeffs, torch.randn(n, 12, 3, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(sh_to_rgb(1, more, means, view), rgb)


def test_sh_gradients_reach_coefficients_and_means(seed):
    coeffs = (torch.randn(8, 16, 3, dtype=torch.float64) * 0.2).requires_grad_()
    means = torch.randn(8, 3, dtype=torch.float64).requires_grad_()
    view = orbit_viewmat(3.0, 20.0, 10.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c, m: sh_to_rgb(3, c, m, view), (coeffs, means))


def test_too_few_coefficients_raise():
    with pytest.raises(InputError):
        eval_sh(2, torch.zeros(3, 4, 3), torch.zeros(3, 3))


needs_native = pytest.mark.skipif(not native.is_available(),
                                  reason="the native extension avatar3d._C is not built (make build)")


@needs_native
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_native_colours_match_sh_to_rgb(seed, degree):
    # The native pass (clips, viewer) is held to sh_to_rgb; more coefficients stored than the degree uses, some
    # Gaussians a millimetre from the camera, colours that clamp at 0.
    g = torch.Generator().manual_seed(seed)
    n = 3000
    coeffs = torch.randn(n, 16, 3, generator=g) * 0.4
    coeffs[:50, 0] = -3.0  # dark enough to clamp at every degree
    viewmat = orbit_viewmat(0.5, 20.0, -10.0)
    centre = camera_centre(viewmat.double()).float()
    means = torch.randn(n, 3, generator=g) * 0.1
    means[:10] = centre + torch.randn(10, 3, generator=g) * 1e-3
    want = sh_to_rgb(degree, coeffs, means, viewmat)
    got = native.sh_colours(degree, coeffs, means, viewmat)
    assert (want == 0).any()  # the clamp is exercised
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@needs_native
def test_rendering_without_gradient_takes_the_native_colours(seed, monkeypatch):
    scene = head_scene(2000, 64, 64, seed=seed, sh_degree=2)
    calls = []
    real = native.sh_colours
    monkeypatch.setattr(native, "sh_colours", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        quiet = rasterize(**scene.rasterize_kwargs(), backend="cpu")[0]
    assert calls
    calls.clear()
    trained = rasterize(**scene.clone().requires_grad_().rasterize_kwargs(), backend="cpu")[0]
    assert not calls and trained.requires_grad
    torch.testing.assert_close(quiet, trained.detach(), rtol=0, atol=1e-5)
