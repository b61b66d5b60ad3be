"""The pure-PyTorch oracle against a float64 brute-force per-pixel formula written from cuda_ext/README.md,
gradchecks in float64, and the `rasterize` entry point's contract (meta, N=0, validation, dispatch)."""
from __future__ import annotations

import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.render import rasterize
from avatar3d.render import reference
from avatar3d.render.scenes import Scene, random_scene
from avatar3d.render.sh import sh_to_rgb

raster_module = sys.modules["avatar3d.render.rasterize"]
composite_module = sys.modules["avatar3d.render.reference.composite"]
# Seeds that once failed: a gradcheck step across the 1/255 cut-off (299797719; see _smooth_scene).
REGRESSION_SEEDS = (299797719,)


# ---------------------------------------------------------------------------------------------------------------
# Brute force, straight from the spec: scalar loops per Gaussian and per pixel, numpy float64.

def _quat_rot(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def brute_project(p, q, s, o, view, K, W, H, near, far, aa):
    rot, tr = view[:3, :3], view[:3, 3]
    t = rot @ p + tr
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not near < t[2] < far:
        return None
    m = _quat_rot(q) @ np.diag(s)
    cov_c = rot @ (m @ m.T) @ rot.T
    lxp, lxn = (W - cx) / fx + 0.3 * W / fx, cx / fx + 0.3 * W / fx
    lyp, lyn = (H - cy) / fy + 0.3 * H / fy, cy / fy + 0.3 * H / fy
    z = t[2]
    tx = z * min(max(t[0] / z, -lxn), lxp)
    ty = z * min(max(t[1] / z, -lyn), lyp)
    J = np.array([[fx / z, 0, -fx * tx / z ** 2], [0, fy / z, -fy * ty / z ** 2]])
    cov2 = J @ cov_c @ J.T
    cov2d = cov2 + 0.3 * np.eye(2)
    det = np.linalg.det(cov2d)
    if det <= 0:
        return None
    if aa:
        o = o * math.sqrt(max(np.linalg.det(cov2) / det, 0.0))
    inv = np.linalg.inv(cov2d)
    mean2d = np.array([fx * t[0] / z + cx, fy * t[1] / z + cy])
    mid = 0.5 * (cov2d[0, 0] + cov2d[1, 1])
    lam = mid + math.sqrt(max(0.1, mid * mid - det))
    r = math.ceil(3 * math.sqrt(lam))
    if r <= 0 or mean2d[0] + r <= 0 or mean2d[0] - r >= W or mean2d[1] + r <= 0 or mean2d[1] - r >= H:
        return None
    return dict(m=mean2d, conic=(inv[0, 0], inv[0, 1], inv[1, 1]), depth=z, r=r, o=o)


def brute_render(scene: Scene, colors, antialiased=False, near=0.01, far=100.0):
    W, H = scene.width, scene.height
    a = lambda t: t.detach().double().numpy()  # noqa: E731
    view, K = a(scene.viewmat), a(scene.K)
    P = [brute_project(a(scene.means)[i], a(scene.quats)[i], a(scene.scales)[i], float(scene.opacities[i].detach()),
                       view, K, W, H, near, far, antialiased) for i in range(scene.n)]
    col, bg = a(colors), a(scene.background)
    image = np.zeros((H, W, col.shape[1] if col.ndim == 2 else bg.shape[0]))
    alpha = np.zeros((H, W, 1))
    for py in range(H):
        for px in range(W):
            tile_x, tile_y = px // 16, py // 16
            members = []
            for i, g in enumerate(P):
                if g is None:
                    continue
                mx, my, r = g["m"][0], g["m"][1], g["r"]
                if math.floor((mx - r) / 16) <= tile_x < math.ceil((mx + r) / 16) and \
                        math.floor((my - r) / 16) <= tile_y < math.ceil((my + r) / 16):
                    members.append((g["depth"], i))
            T, C = 1.0, np.zeros(image.shape[-1])
            for _, i in sorted(members):
                g = P[i]
                dx, dy = g["m"][0] - (px + 0.5), g["m"][1] - (py + 0.5)
                ca, cb, cc = g["conic"]
                sig = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                if sig < 0:
                    continue
                al = min(0.99, g["o"] * math.exp(-sig))
                if al < 1 / 255:
                    continue
                Tn = T * (1 - al)
                if Tn <= 1e-4:
                    break
                C += al * T * col[i]
                T = Tn
            image[py, px] = C + T * bg
            alpha[py, px] = 1 - T
    return image, alpha, P


def _run(scene: Scene, backend="torch", **kw):
    return rasterize(**scene.rasterize_kwargs(), backend=backend, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Forward against the brute force

@pytest.mark.parametrize("channels,antialiased,size", [(3, False, (37, 29)), (5, True, (33, 18)),
                                                       (1, False, (16, 16))])
def test_oracle_matches_brute_force(seed, channels, antialiased, size):
    scene = random_scene(48, *size, seed=seed, channels=channels, dtype=torch.float64)
    image, alpha, meta = _run(scene, antialiased=antialiased)
    ref_img, ref_alpha, proj = brute_render(scene, scene.colors, antialiased=antialiased)
    assert image.shape == (size[1], size[0], channels) and alpha.shape == (size[1], size[0], 1)
    np.testing.assert_allclose(image.numpy(), ref_img, atol=1e-9)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=1e-9)
    radii = meta["radii"].numpy()
    assert meta["radii"].dtype == torch.int32
    for i, g in enumerate(proj):
        if g is None:
            assert radii[i] == 0
            assert meta["means2d"][i].abs().sum() == 0 and meta["conics"][i].abs().sum() == 0
        else:
            assert radii[i] == g["r"]
            np.testing.assert_allclose(meta["means2d"][i].numpy(), g["m"], rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(meta["conics"][i].numpy(), g["conic"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(float(meta["depths"][i]), g["depth"], rtol=1e-12)
            np.testing.assert_allclose(float(meta["opacities"][i]), g["o"], rtol=1e-10)
    assert torch.equal(meta["visible"], meta["radii"] > 0)


def test_scene_exercises_the_cut_offs(seed):
    """The random scenes must actually reach the hard cases the comparisons rely on."""
    scene = random_scene(400, 64, 48, seed=seed, dtype=torch.float64)
    _, alpha, meta = _run(scene)
    visible = meta["visible"]
    assert 0 < int(visible.sum()) < scene.n  # some culled (behind / off screen), some drawn
    assert float(alpha.max()) > 0.99  # opaque stacks reach the early stop


def test_early_stop_and_alpha_clamp(seed):
    """A stack of nearly opaque Gaussians on the axis: the 0.99 clamp and the T <= 1e-4 stop decide the pixel."""
    n = 5
    gen = torch.Generator().manual_seed(seed)
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 2] = 2.0 + 0.1 * torch.randperm(n, generator=gen).double()  # depth order != index order
    scene = Scene(means, torch.randn(n, 4, generator=gen, dtype=torch.float64),
                  torch.full((n, 3), 0.05, dtype=torch.float64), torch.full((n,), 0.999, dtype=torch.float64),
                  torch.rand(n, 3, generator=gen, dtype=torch.float64),
                  torch.rand(3, generator=gen, dtype=torch.float64), torch.eye(4, dtype=torch.float64),
                  torch.tensor([[40.0, 0, 10.5], [0, 40.0, 10.5], [0, 0, 1]], dtype=torch.float64), 20, 20)
    image, alpha, _ = _run(scene)
    ref_img, ref_alpha, _ = brute_render(scene, scene.colors)
    np.testing.assert_allclose(image.numpy(), ref_img, atol=1e-12)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=1e-12)
    # Pixel (10,10) is centred on every mean (sigma = 0), so each alpha is clamped to 0.99. In float64
    # T after two is (1-0.99)^2 = 1.0000000000000018e-4 > 1e-4, so two are added and the third stops.
    order = torch.argsort(means[:, 2])
    t1 = 1.0 - 0.99
    t2 = t1 * (1.0 - 0.99)
    assert t2 > 1e-4 and t2 * (1.0 - 0.99) <= 1e-4
    expected = 0.99 * scene.colors[order[0]] + 0.99 * t1 * scene.colors[order[1]] + t2 * scene.background
    np.testing.assert_allclose(image[10, 10].numpy(), expected.numpy(), atol=1e-14)
    np.testing.assert_allclose(float(alpha[10, 10, 0]), 1.0 - t2, atol=1e-14)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_brute_force(seed, degree):
    scene = random_scene(24, 24, 20, seed=seed, sh_degree=degree, dtype=torch.float64)
    # Extra coefficients beyond (deg+1)^2 must be ignored.
    extra = torch.randn(scene.n, 2, 3, dtype=torch.float64) * 100.0
    scene.colors = torch.cat([scene.colors, extra], dim=1)
    image, _, _ = _run(scene)
    rgb = sh_to_rgb(degree, scene.colors, scene.means, scene.viewmat)
    ref_img, _, _ = brute_render(scene, rgb)
    np.testing.assert_allclose(image.numpy(), ref_img, atol=1e-9)


def test_blocking_does_not_change_results(seed, monkeypatch):
    """Depth blocks and tile chunks are an implementation detail: same image and gradients for any sizes."""
    scene = random_scene(150, 40, 36, seed=seed, dtype=torch.float64)

    def render():
        sc = scene.clone().requires_grad_()
        image, alpha, _ = _run(sc)
        (image.sum() + 2.0 * alpha.sum()).backward()
        return image.detach(), alpha.detach(), {k: v.grad for k, v in sc.params().items()}

    img_a, alpha_a, grads_a = render()
    monkeypatch.setattr(composite_module, "DEPTH_BLOCK", 5)
    monkeypatch.setattr(composite_module, "CHUNK_TILES", 3)
    img_b, alpha_b, grads_b = render()
    torch.testing.assert_close(img_a, img_b, atol=1e-12, rtol=0)
    torch.testing.assert_close(alpha_a, alpha_b, atol=1e-12, rtol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-9, rtol=1e-9)


def test_float32_close_to_float64(seed):
    scene64 = random_scene(64, 40, 30, seed=seed, hard=False, dtype=torch.float64)
    img64, alpha64, _ = _run(scene64)
    img32, alpha32, _ = _run(scene64.to(torch.float32))
    assert img32.dtype == torch.float32
    diff = (img32.double() - img64).abs()
    assert float((diff > 1e-4).double().mean()) < 1e-2  # only threshold flips may differ
    assert float(diff.median()) < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Gradients

# The oracle is smooth only between its cut-off decisions (skip at alpha < 1/255, stop at T <= T_MIN, the integer
# radius, a tile edge). A scene with one of them within the gradcheck's step of its threshold has a jump there,
# which a finite difference reads as a huge derivative (seed 299797719: one alpha 4.5e-7 above 1/255 at one
# pixel). The gradchecks draw scenes from the seed's stream until one is clear of every cut-off by CLEARANCE.
GRADCHECK_EPS = 1e-6
CLEARANCE = 1e-4  # relative, far above the step's effect on any threshold


def _near_integer(x: torch.Tensor) -> bool:
    return bool(((x - x.round()).abs() <= CLEARANCE * x.abs().clamp_min(1.0)).any())


def _clear_of_cutoffs(m2, con, opac, colors, background, radii, depths, width, height) -> bool:
    # m2: [N,2], con: [N,3], opac: [N], colors: [N,C], background: [C], radii: [N], depths: [N] (projected, float64)
    """True when no cut-off decision of the compositing sits within CLEARANCE (relative) of its threshold."""
    with torch.no_grad():
        def render(factor):
            img, t = composite_module.composite_with_cutoffs(m2, con, opac, colors, background, radii, depths,
                                                             width, height, composite_module.ALPHA_MIN * factor,
                                                             composite_module.T_MIN * factor)
            return torch.cat([img, t], dim=-1)
        base = render(1.0)
        if any(not torch.equal(render(f), base) for f in (1.0 - CLEARANCE, 1.0 + CLEARANCE)):
            return False
        vis = radii > 0
        a, b, c = con[vis].unbind(-1)  # the conic is the inverse 2D covariance: its eigenvalues set the radius
        det = a * c - b * b
        mid = 0.5 * (a + c) / det
        lam = mid + torch.sqrt(torch.clamp_min(mid * mid - 1.0 / det, 0.1))
        r = radii[vis].to(m2.dtype)
        edges = torch.cat([m2[vis] - r.unsqueeze(-1), m2[vis] + r.unsqueeze(-1)]) / composite_module.TILE
        return not (_near_integer(3.0 * torch.sqrt(lam)) or _near_integer(edges))


def _scene_clear_of_cutoffs(scene: Scene, antialiased: bool) -> bool:
    s = scene
    m2, con, depth, radii, opac = reference.project(s.means, s.quats, s.scales, s.opacities, s.viewmat, s.K,
                                                    s.width, s.height, 0.01, 100.0, antialiased)
    colors = sh_to_rgb(s.sh_degree, s.colors, s.means, s.viewmat) if s.sh_degree is not None else s.colors
    background = s.background if s.background is not None else torch.zeros(colors.shape[-1], dtype=colors.dtype)
    return _clear_of_cutoffs(m2, con, opac, colors, background, radii, depth, s.width, s.height)


def _smooth_scene(seed: int, draw, is_clear, attempts: int = 50):
    """The first scene `draw(generator)` makes from the seed's stream that `is_clear` accepts."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(attempts):
        scene = draw(g)
        if is_clear(scene):
            return scene
    raise AssertionError(f"seed {seed}: no scene clear of the cut-offs in {attempts} draws")


def test_gradcheck_scenes_are_drawn_clear_of_cutoffs():
    # seed 299797719's first scene has one alpha 4.5e-7 (relative) above 1/255: the draw must pass it by
    first = random_scene(6, 24, 20, seed=299797719, hard=False, dtype=torch.float64)
    first.opacities = first.opacities.clamp(max=0.9)
    assert not _scene_clear_of_cutoffs(first, False)
    chosen = _gradcheck_scene(299797719, 6, 24, 20)
    assert _scene_clear_of_cutoffs(chosen, False) and not torch.equal(chosen.means, first.means)


def _gradcheck(scene: Scene, names, antialiased=False):
    params = scene.params()

    def fn(*xs):
        kw = scene.rasterize_kwargs()
        kw.update(dict(zip(names, xs)))
        image, alpha, _ = rasterize(**kw, backend="torch", antialiased=antialiased)
        return image, alpha

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=GRADCHECK_EPS, atol=1e-5, rtol=1e-3, fast_mode=True)


def _gradcheck_scene(seed, n, width, height, antialiased=False, **kw) -> Scene:
    def draw(g):
        scene = random_scene(n, width, height, generator=g, hard=False, dtype=torch.float64, **kw)
        scene.opacities = scene.opacities.clamp(max=0.9)  # keep clear of the 0.99 clamp's kink
        return scene
    return _smooth_scene(seed, draw, lambda s: _scene_clear_of_cutoffs(s, antialiased))


@pytest.mark.parametrize("antialiased,depth_block,chunk_tiles", [(False, 32, 64), (True, 32, 64), (False, 2, 3)])
def test_gradcheck_all_inputs(seed, antialiased, depth_block, chunk_tiles, monkeypatch):
    # Small depth blocks and one tile per chunk exercise the carried transmittance and the dropping of tiles.
    monkeypatch.setattr(composite_module, "DEPTH_BLOCK", depth_block)
    monkeypatch.setattr(composite_module, "CHUNK_TILES", chunk_tiles)
    scene = _gradcheck_scene(seed, 6, 24, 20, antialiased)
    _gradcheck(scene, ("means", "quats", "scales", "opacities", "colors", "background"), antialiased)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_gradcheck_sh(seed, degree):
    scene = _gradcheck_scene(seed, 4, 20, 18, sh_degree=degree)
    _gradcheck(scene, ("means", "colors"))


def _projected(scene: Scene):
    m2, con, depth, radii, opac = reference.project(scene.means, scene.quats, scene.scales, scene.opacities,
                                                    scene.viewmat, scene.K, 20, 18, 0.01, 100.0, False)
    return m2, con, opac.clamp(max=0.9), depth, radii


def test_gradcheck_composite_op(seed):
    """The compositing op alone, in its own inputs (what the native op's backward must reproduce)."""
    def is_clear(scene):
        m2, con, opac, depth, radii = _projected(scene)
        return _clear_of_cutoffs(m2, con, opac, scene.colors, scene.background, radii, depth, 20, 18)

    scene = _smooth_scene(seed, lambda g: random_scene(6, 20, 18, generator=g, hard=False, channels=4,
                                                       dtype=torch.float64), is_clear)
    m2, con, opac, depth, radii = _projected(scene)

    def fn(m2, con, opac, col, bg):
        return reference.composite(m2, con, opac, col, bg, radii, depth, 20, 18)

    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (m2, con, opac, scene.colors, scene.background))
    assert torch.autograd.gradcheck(fn, inputs, eps=GRADCHECK_EPS, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_means2d_gradient_is_populated(seed):
    scene = random_scene(40, 40, 30, seed=seed, dtype=torch.float64).requires_grad_()
    image, alpha, meta = _run(scene)
    weights = torch.rand_like(image)
    ((image * weights).sum() + alpha.sum()).backward()
    g2d = meta["means2d"].grad
    assert g2d is not None and g2d.shape == (scene.n, 2)
    assert torch.all(g2d[~meta["visible"]] == 0)
    assert float(g2d[meta["visible"]].abs().sum()) > 0
    # It is exactly the gradient of the compositing op with respect to its 2D means.
    m2 = meta["means2d"].detach().requires_grad_(True)
    feats = scene.colors.detach()
    img2, alpha2 = reference.composite(m2, meta["conics"].detach(), meta["opacities"].detach(), feats,
                                       scene.background.detach(), meta["radii"], meta["depths"].detach(), 40, 30)
    ((img2 * weights).sum() + alpha2.sum()).backward()
    torch.testing.assert_close(g2d, m2.grad)
    for name, t in scene.params().items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name


# ---------------------------------------------------------------------------------------------------------------
# Edge cases of the entry point

def test_empty_scene_is_background(seed):
    scene = random_scene(0, 21, 17, seed=seed, channels=4, dtype=torch.float64).requires_grad_()
    image, alpha, meta = _run(scene)
    assert image.shape == (17, 21, 4) and alpha.shape == (17, 21, 1)
    torch.testing.assert_close(image, scene.background.expand(17, 21, 4))
    assert torch.all(alpha == 0)
    assert meta["means2d"].shape == (0, 2) and meta["radii"].shape == (0,)
    image.sum().backward()
    torch.testing.assert_close(scene.background.grad, torch.full((4,), 17.0 * 21.0, dtype=torch.float64))


def test_single_gaussian(seed):
    scene = random_scene(1, 23, 19, seed=seed, hard=False, dtype=torch.float64)
    scene.means = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # in view of the camera below
    scene.viewmat = torch.eye(4, dtype=torch.float64)
    scene.K = torch.tensor([[20.0, 0, 11.5], [0, 20.0, 9.5], [0, 0, 1]], dtype=torch.float64)
    scene.scales = torch.full((1, 3), 0.1, dtype=torch.float64)
    scene.requires_grad_()
    image, alpha, meta = _run(scene)
    ref_img, ref_alpha, _ = brute_render(scene, scene.colors)
    np.testing.assert_allclose(image.detach().numpy(), ref_img, atol=1e-12)
    assert bool(meta["visible"][0]) and float(alpha.detach().max()) > 0.01
    image.sum().backward()
    assert meta["means2d"].grad.shape == (1, 2)


def test_behind_camera_renders_background_with_zero_gradients(seed):
    scene = random_scene(10, 20, 20, seed=seed, hard=False, dtype=torch.float64)
    cam = scene.means @ scene.viewmat[:3, :3].T + scene.viewmat[:3, 3]
    cam[:, 2] = -cam[:, 2].abs() - 0.1  # mirror everything behind the camera
    scene.means = (cam - scene.viewmat[:3, 3]) @ scene.viewmat[:3, :3]
    scene.requires_grad_()
    image, alpha, meta = _run(scene)
    assert not meta["visible"].any()
    torch.testing.assert_close(image, scene.background.expand(20, 20, 3))
    image.sum().backward()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        grad = getattr(scene, name).grad
        assert grad is None or (torch.isfinite(grad).all() and torch.all(grad == 0)), name


def test_near_plane_and_degenerate_scales_are_finite(seed):
    scene = random_scene(200, 48, 32, seed=seed, dtype=torch.float32)
    scene.scales[:20, 0] = 0.0  # degenerate: flat Gaussians
    scene.requires_grad_()
    image, alpha, meta = _run(scene, near=0.5, far=4.0)
    depths = meta["depths"].detach()
    assert not meta["visible"][(depths <= 0.5) | (depths >= 4.0)].any()
    (image.sum() + alpha.sum()).backward()
    for name, t in scene.params().items():
        assert torch.isfinite(t.grad).all(), name


# ---------------------------------------------------------------------------------------------------------------
# Validation and dispatch

def test_invalid_inputs_raise_input_error():
    scene = random_scene(5, 16, 16, seed=1)
    kw = scene.rasterize_kwargs()
    bad = [dict(means=kw["means"][:, :2]), dict(quats=kw["quats"][:4]), dict(opacities=kw["opacities"][:, None]),
           dict(colors=kw["colors"].double()), dict(background=torch.zeros(4)), dict(width=0),
           dict(height=2.5), dict(viewmat=torch.eye(3)), dict(K=torch.eye(4)), dict(sh_degree=4),
           dict(sh_degree=1)]  # colors are [N,3], not SH
    for change in bad:
        with pytest.raises(InputError):
            rasterize(**{**kw, **change}, backend="torch")
    with pytest.raises(InputError):
        rasterize(**kw, backend="opengl")
    with pytest.raises(InputError):
        rasterize(**kw, backend="torch", near=1.0, far=0.5)
    with pytest.raises(InputError):
        rasterize(**kw, backend="cuda")  # CPU tensors


def test_torch_backend_never_touches_the_extension(monkeypatch):
    trap = types.ModuleType("avatar3d.render.native")

    def boom(*_a, **_k):
        raise AssertionError("the torch backend called the native extension")

    trap.is_available = trap.has_cuda = trap.project = trap.composite = boom
    monkeypatch.setitem(sys.modules, "avatar3d.render.native", trap)
    monkeypatch.setattr(sys.modules["avatar3d.render"], "native", trap, raising=False)
    scene = random_scene(20, 16, 16, seed=2)
    image, _, meta = _run(scene, backend="torch")
    assert meta["backend"] == "torch" and image.shape == (16, 16, 3)


def test_auto_falls_back_to_torch_with_one_warning(monkeypatch):
    monkeypatch.setattr(raster_module, "_native", lambda: None)
    monkeypatch.setattr(raster_module, "_warned_fallback", False)
    scene = random_scene(10, 16, 16, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, meta = _run(scene, backend="auto")
        _run(scene, backend="auto")
    assert meta["backend"] == "torch"
    assert sum("pure-PyTorch" in str(w.message) for w in caught) == 1


def test_native_backend_without_extension_says_how_to_build(monkeypatch):
    trap = types.ModuleType("avatar3d.render.native")
    trap.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "avatar3d.render.native", trap)
    monkeypatch.setattr(sys.modules["avatar3d.render"], "native", trap, raising=False)
    scene = random_scene(3, 16, 16, seed=4)
    with pytest.raises(BackendUnavailableError, match="build"):
        _run(scene, backend="cpu")
