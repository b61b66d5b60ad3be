"""The native rasterizer (C++/OpenMP, and CUDA where a GPU exists) against the pure-PyTorch oracle.

Random scenes from the fixed seed list (`seed` fixture; `make soak` draws fresh ones). The scenes mix the hard
cases on purpose: Gaussians behind the camera and at the near plane, off screen, centred on tile borders, huge
and sub-pixel, degenerate (zero-scale axes), opacities at the 0.99 clamp and below 1/255.

The reference is the oracle run in float64 on the same inputs, never the float32 oracle (which carries its own
rounding): cuda_ext/README.md, "How the backends are compared". Forward: every pixel within 1e-5, except
pixels where a cut-off decision (skip at alpha < 1/255, stop at T <= 1e-4, a tile membership through a radius)
sits within float32 rounding of its threshold, or two depths tie; those are found by re-rendering the float64
reference with the cut-offs moved by a relative 1e-4 and with the native radii and depths, and may differ by
what that move changes.
Gradients: ||g - g_ref|| / ||g_ref|| <= 1e-3 for a random linear loss over the pixels away from every cut-off;
the background's, a sum that cancels, within what the transmittance differences explain.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pytest

import torch

from avatar3d.camera import camera_centre
from avatar3d.errors import BackendUnavailableError
from avatar3d.render import native, rasterize, reference
from avatar3d.render.reference.composite import ALPHA_MIN, T_MIN, composite_with_cutoffs
from avatar3d.render.scenes import Scene, head_scene, random_scene
from avatar3d.render.sh import sh_to_rgb

pytestmark = pytest.mark.skipif(not native.is_available(),
                                reason="the native extension avatar3d._C is not built (make build)")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or not native.has_cuda(),
                                reason="no CUDA GPU here (or the extension was built without CUDA)")

FWD_TOL = 1e-5
CUTOFF_NUDGE = 1e-4  # relative move of ALPHA_MIN and T_MIN that marks a pixel as sitting on a cut-off
CUTOFF_FRAC = 0.01  # at most this share of pixels may sit on a cut-off (a bug cannot hide there)
GRAD_TOL = 1e-3
CANCEL_TOL = 1e-6  # of the summed terms' size: float32 accumulation, far below any wrong formula
# Seeds that once failed (each explained in cuda_ext/README.md): near-camera projection (1868087538, 2047050122),
# a 1/255 alpha flip with SH colours (1155337546), an edge-on antialiased opacity (106150557), an SH view
# direction 1 cm from the camera (8163839), a 1/255 flip in the float64-dtype test (1862640148), a flip just
# under 1e-5 (1510110721), two Gaussians 1e-8 apart in depth (2113180022), the gradient of an edge-on flat Gaussian's
# antialiased opacity (2056048090), a single Gaussian's opacity gradient cancelling to 1e-5 of its terms (317524258),
# a Gaussian kept by one backend and culled by the other at the screen edge (1615009371), a flat Gaussian seen as a
# thin line whose near-singular conic amplified the float32 footprint's error (1931070051).
REGRESSION_SEEDS = (1868087538, 2047050122, 1155337546, 106150557, 8163839, 1862640148, 1510110721, 2113180022,
                    2056048090, 317524258, 1615009371, 1931070051)


def _loss_weights(image: torch.Tensor, alpha: torch.Tensor, seed: int):
    # image: [H,W,C], alpha: [H,W,1] -> the weights (w_img, w_alpha) of the fixed random linear loss
    # drawn in float32 whatever the dtype, so the float64 reference and a float32 backend share one loss
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g).to(image.device, image.dtype)
    w_alpha = torch.randn(alpha.shape, generator=g).to(alpha.device, alpha.dtype)
    return w_img, w_alpha


def _render(scene: Scene, backend: str, antialiased: bool, seed: int, keep: torch.Tensor | None = None,
            magnitude: bool = False):
    # keep: [H,W] bool, the pixels the loss covers (default all)
    # Returns (image [H,W,C], alpha [H,W,1], meta, {name: gradient}) for a fixed random linear loss (`magnitude`:
    # the same loss with |weights|, whose gradients show how large the summed terms are).
    sc = scene.clone().requires_grad_()
    image, alpha, meta = rasterize(**sc.rasterize_kwargs(), backend=backend, antialiased=antialiased)
    w_img, w_alpha = _loss_weights(image, alpha, seed)
    if magnitude:
        w_img, w_alpha = w_img.abs(), w_alpha.abs()
    if keep is not None:
        keep = keep.to(image.device).unsqueeze(-1)
        w_img, w_alpha = w_img * keep, w_alpha * keep
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    grads = {name: t.grad for name, t in sc.params().items()}
    grads["means2d"] = meta["means2d"].grad
    return image.detach(), alpha.detach(), meta, grads


class Spread(NamedTuple):
    total: torch.Tensor  # [H,W] how far the reference moves under every variant
    cutoffs: torch.Tensor  # [H,W] under the cut-off and radius variants alone (the depth order and the float32
    # representation of the projection left as they are)


def _cutoff_spread(scene64: Scene, antialiased: bool, other_radii: torch.Tensor,
                   other_depths: torch.Tensor | None = None) -> torch.Tensor:
    # scene64: float64, other_radii/other_depths: [N] the tested backend's -> Spread of [H,W] float64 on the CPU
    """Per pixel, how far the float64 reference (image and alpha) moves when its cut-offs move.

    Variants: ALPHA_MIN and T_MIN scaled by 1 -/+ CUTOFF_NUDGE, each with the reference's radii and with the
    tested backend's (a radius at an integer boundary changes the tiles a Gaussian is evaluated in), with
    the reference's depths and the tested backend's (two Gaussians at depths within float32 rounding of each
    other are blended in either order), and with the projection's outputs rounded to float32, the dtype the op
    returns (a thin-line footprint's near-singular conic amplifies even that rounding along the line).
    """
    s = scene64
    with torch.no_grad():
        m2, con, depth, radii, opac = reference.project(s.means, s.quats, s.scales, s.opacities, s.viewmat, s.K,
                                                        s.width, s.height, 0.01, 100.0, antialiased)
        feats = sh_to_rgb(s.sh_degree, s.colors, s.means, s.viewmat) if s.sh_degree is not None else s.colors

        def render(rad, dep, factor):
            img, alpha = composite_with_cutoffs(m2, con, opac, feats, s.background, rad, dep, s.width, s.height,
                                                ALPHA_MIN * factor, T_MIN * factor)
            return torch.cat([img, alpha], dim=-1)

        base = render(radii, depth, 1.0)
        spread = torch.zeros(base.shape[:2], dtype=base.dtype, device=base.device)
        cut_spread = spread
        rounded = composite_with_cutoffs(m2.float().to(m2), con.float().to(con), opac.float().to(opac), feats,
                                         s.background, radii, depth, s.width, s.height, ALPHA_MIN, T_MIN)
        spread = (torch.cat(rounded, dim=-1) - base).abs().amax(dim=-1)
        radii_sets = [radii] if torch.equal(radii, other_radii.to(radii.device)) else [radii, other_radii.to(radii.device)]
        depth_sets = [depth]
        if other_depths is not None:  # the tested backend's depths, equal ones (float32 ties) broken both ways
            rank = torch.arange(depth.numel(), dtype=depth.dtype, device=depth.device) / max(1, depth.numel())
            for sign in (1.0, -1.0):
                dep = other_depths.to(depth) * (1.0 + sign * 1e-13 * rank)
                if not torch.equal(torch.argsort(dep), torch.argsort(depth)):
                    depth_sets.append(dep)
        for rad in radii_sets:
            for k, dep in enumerate(depth_sets):
                for factor in (1.0 - CUTOFF_NUDGE, 1.0, 1.0 + CUTOFF_NUDGE):
                    moved = (render(rad, dep, factor) - base).abs().amax(dim=-1)
                    spread = torch.maximum(spread, moved)
                    if k == 0:
                        cut_spread = torch.maximum(cut_spread, moved)
    return Spread(spread.cpu(), cut_spread.cpu())


def _assert_forward_close(ref: torch.Tensor, out: torch.Tensor, spreads: Spread, what: str) -> None:
    # ref, out: [H,W,C] (see _cutoff_spread)
    assert ref.shape == out.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    diff = (ref.double().cpu() - out.double().cpu()).abs().amax(dim=-1)  # per pixel, worst channel
    # The allowance grows with the spread everywhere, not only past FWD_TOL: a flip worth 0.99e-5 (a Gaussian at
    # 1/255 behind 99.7 % alpha) plus 1e-8 of rounding must not fail where one worth 1.01e-5 passes.
    spread = spreads.total
    excess = diff - (FWD_TOL + 2.0 * spread)
    on_cutoff = spread > FWD_TOL
    away = excess[~on_cutoff]
    assert not (away > 0).any(), (f"{what}: {int((away > 0).sum())} pixels away from any cut-off differ by more "
                                  f"than {FWD_TOL} (+ twice what moving a cut-off changes; worst excess "
                                  f"{away.max().item():.3g})")
    assert not (excess[on_cutoff] > 0).any(), (f"{what}: a pixel on a cut-off differs by more than moving the "
                                               f"cut-off changes (excess {excess[on_cutoff].max().item():.3g})")
    allowed = max(2, math.floor(CUTOFF_FRAC * diff.numel()))
    # the cap counts cut-off decisions; a depth tie legitimately reorders the whole overlap of two Gaussians
    counted = int((spreads.cutoffs > FWD_TOL).sum())
    assert counted <= allowed, f"{what}: {counted} pixels sit on a cut-off (allowed {allowed})"


def _assert_background_grad(g_ref, g_out, alpha_ref, alpha_out, w_img) -> None:
    # g_*: [C], alpha_*: [H,W,1], w_img: [H,W,C] the loss weights of the image
    """dL/dbackground = sum_p T_p w_p exactly, a sum that cancels (most pixels are saturated: |sum| can be 1e-3
    of sum_p |T_p w_p|), so a relative bound on it would test the rounding of the cancellation. Its error must
    instead be what the two transmittances' difference explains, plus float32 summation rounding."""
    w = w_img.double().cpu()
    d_t = (alpha_ref.double().cpu() - alpha_out.double().cpu()).abs()  # |T_out - T_ref|, T = 1 - alpha
    bound = (d_t * w.abs()).sum(dim=(0, 1)) + 1e-6 * w.abs().sum(dim=(0, 1))
    err = (g_out.double().cpu() - g_ref.double().cpu()).abs()
    assert bool((err <= bound).all()), f"gradient of background: error {err.tolist()} > bound {bound.tolist()}"


def _assert_grads_close(ref: dict, out: dict, skip: tuple = (), magnitude: dict | None = None) -> None:
    """||g - g_ref|| <= GRAD_TOL ||g_ref||, plus CANCEL_TOL times the gradient of the |weights| loss when given: a
    gradient that is a sum of terms cancelling to 1e-5 of their size (a Gaussian's opacity seen against colours on
    both sides) is otherwise held to the rounding of the cancellation."""
    for name, g_ref in ref.items():
        if name in skip:
            continue
        g_out = out[name]
        if g_ref is None:  # the oracle's graph does not reach this input (e.g. every Gaussian culled): no gradient
            assert g_out is None or float(g_out.abs().max()) == 0.0, f"gradient of {name}: oracle has none, native is non-zero"
            continue
        assert g_out is not None and g_out.shape == g_ref.shape, f"gradient of {name} missing or misshaped"
        assert torch.isfinite(g_out).all(), f"gradient of {name} is not finite"
        ref_norm = g_ref.double().norm().item()
        err = (g_out.double().cpu() - g_ref.double().cpu()).norm().item()
        size = 0.0 if magnitude is None or magnitude.get(name) is None else magnitude[name].double().norm().item()
        if ref_norm == 0.0:
            assert err <= 1e-6 + CANCEL_TOL * size, f"gradient of {name}: reference is 0 but native has norm {err:.3g}"
        else:
            assert err <= GRAD_TOL * ref_norm + CANCEL_TOL * size, (
                f"gradient of {name}: relative error {err / ref_norm:.3g} (terms of size {size:.3g})")


def _compare(scene: Scene, seed: int, antialiased: bool = False, backend: str = "cpu",
             device: str = "cpu") -> dict:
    """`backend` on the float32 scene against the float64 oracle on the same inputs (same device).

    The gradients are those of a loss over the pixels away from every cut-off: a pixel on one (a Gaussian
    skipped at alpha = 1/255 by one backend and kept by the other) changes the gradient of that Gaussian's mean
    by up to ~fx/z * 1/255 per metre, several % of it, through that pixel alone. Every gradient is a sum over
    pixels, so leaving those pixels out of the loss removes exactly their part and nothing else.
    """
    scene = scene.to(device=device)
    scene64 = scene.to(dtype=torch.float64)
    with torch.no_grad():
        native_meta = rasterize(**scene.rasterize_kwargs(), backend=backend, antialiased=antialiased)[2]
    spread = _cutoff_spread(scene64, antialiased, native_meta["radii"], native_meta["depths"])
    keep = spread.total <= FWD_TOL
    img_r, alpha_r, meta_r, grads_r = _render(scene64, "torch", antialiased, seed, keep)
    img_n, alpha_n, meta_n, grads_n = _render(scene, backend, antialiased, seed, keep)
    grads_size = _render(scene64, "torch", antialiased, seed, keep, magnitude=True)[3]
    assert meta_n["backend"] == backend
    _assert_forward_close(img_r, img_n, spread, "image")
    _assert_forward_close(alpha_r, alpha_n, spread, "alpha")
    mismatched = (meta_r["radii"] != meta_n["radii"]).sum().item()
    assert mismatched <= max(1, scene.n // 1000), f"{mismatched} radii differ from the oracle"
    _assert_grads_close(grads_r, grads_n, skip=("background",), magnitude=grads_size)
    w_img = _loss_weights(img_r, alpha_r, seed)[0] * keep.to(img_r.device).unsqueeze(-1)
    _assert_background_grad(grads_r["background"], grads_n["background"], alpha_r, alpha_n, w_img)
    return {"radii": meta_n["radii"], "grads": grads_n}


@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("size", [(203, 150), (96, 160), (64, 64)])
def test_cpu_matches_oracle_on_hard_random_scenes(seed, antialiased, size):
    width, height = size
    scene = random_scene(800, width, height, seed=seed, hard=True)
    out = _compare(scene, seed, antialiased)
    # The scene really contains culled Gaussians and visible ones, and gradients reach the visible ones.
    radii = out["radii"]
    assert (radii == 0).any() and (radii > 0).any()
    assert out["grads"]["means"][radii > 0].abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 5])
def test_cpu_matches_oracle_with_other_channel_counts(seed, channels):
    scene = random_scene(500, 77, 50, seed=seed, channels=channels)
    _compare(scene, seed)


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_cpu_matches_oracle_with_sh_colours(seed, sh_degree):
    scene = random_scene(500, 100, 72, seed=seed, sh_degree=sh_degree)
    _compare(scene, seed, antialiased=sh_degree % 2 == 1)


def test_cpu_single_gaussian(seed):
    scene = random_scene(1, 40, 33, seed=seed, hard=False)
    _compare(scene, seed)
    # The same Gaussian moved 0.5 m in front of the camera, opaque: certainly visible, and still agreeing.
    rot, centre = scene.viewmat[:3, :3], camera_centre(scene.viewmat)
    scene.means = (centre + 0.5 * rot[2]).unsqueeze(0)
    scene.opacities = torch.tensor([0.9])
    _, alpha, meta, _ = _render(scene, "cpu", False, seed)
    assert meta["radii"][0] > 0 and alpha.max() > 0.5
    _compare(scene, seed)


def test_cpu_empty_scene_gives_background(seed):
    scene = random_scene(0, 35, 18, seed=seed)
    sc = scene.clone().requires_grad_()
    image, alpha, _ = rasterize(**sc.rasterize_kwargs(), backend="cpu")
    assert torch.equal(image, sc.background.detach().expand(18, 35, 3))
    assert torch.equal(alpha, torch.zeros(18, 35, 1))
    w = torch.rand(image.shape)
    (image * w).sum().backward()
    torch.testing.assert_close(sc.background.grad, w.sum(dim=(0, 1)), rtol=1e-5, atol=1e-5)
    assert sc.means.grad.shape == (0, 3)


def test_cpu_projection_matches_oracle_including_depth_gradient(seed):
    scene = random_scene(600, 120, 90, seed=seed)
    # the loss covers the Gaussians both keep: one whose visibility is decided within rounding (a mean 3e-6 px
    # inside the screen edge by its radius, seed 1615009371) has a gradient in one and none in the other
    with torch.no_grad():
        both = [ops.project(sc.means, sc.quats, sc.scales, sc.opacities, sc.viewmat, sc.K, scene.width,
                            scene.height, 0.01, 100.0, True)[3] > 0
                for ops, sc in ((reference, scene.to(dtype=torch.float64)), (native, scene))]
    kept = (both[0] == both[1]).unsqueeze(-1)
    outs = {}
    for name, ops, sc in (("torch", reference, scene.to(dtype=torch.float64)), ("cpu", native, scene.clone())):
        sc.requires_grad_()
        m2, con, depth, radii, opac = ops.project(sc.means, sc.quats, sc.scales, sc.opacities, sc.viewmat, sc.K,
                                                  scene.width, scene.height, 0.01, 100.0, True)
        g = torch.Generator().manual_seed(seed)
        loss = sum((t * torch.randn(t.shape, generator=g).to(t.dtype) * kept.reshape(-1, *[1] * (t.dim() - 1))).sum()
                   for t in (m2, con, depth, opac))
        loss.backward()
        outs[name] = (m2.detach(), con.detach(), depth.detach(), radii, opac.detach(),
                      {k: sc.params()[k].grad for k in ("means", "quats", "scales", "opacities")})
    ref, nat = outs["torch"], outs["cpu"]
    assert (ref[3] != nat[3]).sum().item() <= 1, "radii differ from the float64 oracle"
    vis = (ref[3] > 0) & (nat[3] > 0)
    for i, name in enumerate(("means2d", "conics", "depths", "opacities_eff")):
        r, n = (ref[i], nat[i]) if i != 3 else (ref[4], nat[4])
        torch.testing.assert_close(n[vis].double(), r[vis], rtol=1e-4, atol=1e-4, msg=f"{name} differs")
    _assert_grads_close(ref[5], nat[5])


def test_cpu_backend_keeps_float64_dtype(seed):
    # float64 in, float64 out (the kernels compute in float32); the values compared as everywhere else: within
    # 1e-5 away from cut-offs (seed 1862640148: one pixel's 1/255 flip differed by 1.7e-3), against the oracle
    # on the inputs as the kernels see them (rounded to float32: 1 cm from the camera that rounding alone moves
    # pixels by 5e-5)
    scene = random_scene(300, 48, 40, seed=seed, dtype=torch.float64).to(dtype=torch.float32).to(dtype=torch.float64)
    img_r, _, _, grads_r = _render(scene, "torch", False, seed)
    img_n, _, meta_n, grads_n = _render(scene, "cpu", False, seed)
    assert img_n.dtype == torch.float64 and grads_n["means"].dtype == torch.float64
    _assert_forward_close(img_r, img_n, _cutoff_spread(scene, False, meta_n["radii"], meta_n["depths"]), "image")


@pytest.mark.parametrize("n", [4000, 30000])
def test_cpu_is_deterministic_whatever_the_thread_count(seed, n):
    # every output, gradients included, is reduced in a fixed order: the same bits on 1 or 2 threads and on
    # every repeat (OpenMP hands tiles to threads dynamically, so a per-thread partial sum would not be); 30k
    # Gaussians also bin in parallel parts (over 16384 visible), one thread in one
    scene = head_scene(n, 96, 80, seed=seed)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            sc = scene.clone().requires_grad_()
            image, alpha, _ = rasterize(**sc.rasterize_kwargs(), backend="cpu")
            w_img, w_alpha = _loss_weights(image, alpha, seed)
            ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
            runs.append([image.detach(), alpha.detach(), *(t.grad for t in sc.params().values())])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


@pytest.mark.parametrize("channels", [3, 5])
def test_cpu_forward_without_gradient_is_the_same_render(seed, channels):
    # With no gradient to come the compositor records nothing for a backward (last, final T, spans); what it
    # renders must not change by a bit (RGB and other channel counts take different code).
    scene = head_scene(3000, 80, 72, seed=seed)
    scene.colors = torch.rand(scene.n, channels, generator=torch.Generator().manual_seed(seed))
    scene.background = torch.rand(channels, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        quiet = rasterize(**scene.rasterize_kwargs(), backend="cpu")
    sc = scene.clone().requires_grad_()
    image, alpha, _ = rasterize(**sc.rasterize_kwargs(), backend="cpu")
    assert alpha.detach().amax() > 0.5  # the head covers pixels
    assert torch.equal(quiet[0], image.detach()) and torch.equal(quiet[1], alpha.detach())


def test_missing_extension_says_how_to_build(monkeypatch):
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_import_error", ImportError("No module named 'avatar3d._C'"))
    assert not native.is_available()
    scene = random_scene(5, 32, 32, seed=0)
    with pytest.raises(BackendUnavailableError, match="setup.py build_ext --inplace"):
        native.project(scene.means, scene.quats, scene.scales, scene.opacities, scene.viewmat, scene.K, 32, 32)


@needs_cuda
@pytest.mark.parametrize("antialiased", [False, True])
def test_cuda_matches_oracle_on_hard_random_scenes(seed, antialiased):
    scene = random_scene(3000, 203, 150, seed=seed, hard=True)
    _compare(scene, seed, antialiased, backend="cuda", device="cuda")


@needs_cuda
@pytest.mark.parametrize("channels,sh_degree", [(1, None), (6, None), (3, 3)])
def test_cuda_matches_oracle_with_channels_and_sh(seed, channels, sh_degree):
    scene = random_scene(1000, 130, 97, seed=seed, channels=channels, sh_degree=sh_degree)
    _compare(scene, seed, backend="cuda", device="cuda")


@needs_cuda
def test_cuda_empty_and_single(seed):
    for n in (0, 1):
        scene = random_scene(n, 50, 37, seed=seed, hard=False)
        _compare(scene, seed, backend="cuda", device="cuda")


def _compare_backends(scene: Scene, seed: int, antialiased: bool = False) -> None:
    # The CUDA kernels and the C++ ones on the same scene, each against the float64 oracle on its own device.
    _compare(scene, seed, antialiased, backend="cpu", device="cpu")
    _compare(scene, seed, antialiased, backend="cuda", device="cuda")


@needs_cuda
@pytest.mark.parametrize("antialiased", [False, True])
def test_cuda_matches_cpu_on_a_dense_head_scene(seed, antialiased):
    # Thousands of Gaussians per tile: several shared-memory batches per tile, the last one partial, and most
    # pixels stopping early at the transmittance cut-off; 100x75 is not a multiple of the tile size.
    scene = head_scene(20_000, 100, 75, seed=seed)
    _compare_backends(scene, seed, antialiased)


@needs_cuda
@pytest.mark.parametrize("channels", [2, 9])
def test_cuda_matches_cpu_with_several_channel_passes(seed, channels):
    scene = random_scene(1500, 61, 45, seed=seed, channels=channels)
    _compare_backends(scene, seed)


@needs_cuda
def test_cuda_projection_matches_cpu_including_depth_gradient(seed):
    scene = random_scene(2000, 120, 90, seed=seed)
    outs = {}
    for device in ("cpu", "cuda"):
        sc = scene.to(device=device).requires_grad_()
        m2, con, depth, radii, opac = native.project(sc.means, sc.quats, sc.scales, sc.opacities, sc.viewmat, sc.K,
                                                     scene.width, scene.height, 0.01, 100.0, True)
        g = torch.Generator().manual_seed(seed)
        loss = sum((t * torch.randn(t.shape, generator=g).to(device)).sum() for t in (m2, con, depth, opac))
        loss.backward()
        outs[device] = ([t.detach().cpu() for t in (m2, con, depth, opac)], radii.cpu(),
                        {k: sc.params()[k].grad.cpu() for k in ("means", "quats", "scales", "opacities")})
    (ref, radii_c, grads_c), (out, radii_g, grads_g) = outs["cpu"], outs["cuda"]
    assert (radii_c != radii_g).sum().item() <= max(1, scene.n // 1000)
    same = (radii_c > 0) & (radii_g > 0)
    assert same.any()
    for name, r, o in zip(("means2d", "conics", "depths", "opacities_eff"), ref, out):
        torch.testing.assert_close(o[same], r[same], rtol=1e-4, atol=1e-4, msg=f"{name} differs")
    # culled Gaussians: zeros, exactly as on the CPU
    assert torch.equal(out[0][radii_g == 0], torch.zeros_like(out[0][radii_g == 0]))
    _assert_grads_close(grads_c, grads_g)


@needs_cuda
def test_cuda_empty_scene_gives_background_and_its_gradient(seed):
    scene = random_scene(0, 35, 18, seed=seed).to(device="cuda")
    sc = scene.clone().requires_grad_()
    image, alpha, _ = rasterize(**sc.rasterize_kwargs(), backend="cuda")
    assert torch.equal(image, sc.background.detach().expand(18, 35, 3))
    assert torch.equal(alpha, torch.zeros_like(alpha))
    w = torch.rand(image.shape, device="cuda")
    (image * w).sum().backward()
    torch.testing.assert_close(sc.background.grad, w.sum(dim=(0, 1)), rtol=1e-5, atol=1e-5)
    assert sc.means.grad.shape == (0, 3)


@needs_cuda
def test_cuda_forward_is_deterministic(seed):
    # Stable radix sort and no atomics in the forward pass: the same scene renders bit-identically.
    scene = head_scene(5000, 64, 48, seed=seed).to(device="cuda")
    first = rasterize(**scene.rasterize_kwargs(), backend="cuda")[0]
    second = rasterize(**scene.rasterize_kwargs(), backend="cuda")[0]
    assert torch.equal(first, second)


@needs_cuda
def test_cuda_kernels_reject_tensors_on_another_device(seed):
    # A CPU tensor handed to the CUDA kernels would be an illegal address: the glue must refuse it.
    scene = random_scene(50, 32, 32, seed=seed).to(device="cuda")
    m2, con, depth, radii, opac = native.project(scene.means, scene.quats, scene.scales, scene.opacities,
                                                 scene.viewmat, scene.K, 32, 32)
    ext = native._require()
    with pytest.raises(RuntimeError, match="device|cuda|cpu"):
        ext.composite_forward(m2, con, opac, scene.colors, scene.background.cpu(), radii, depth, 32, 32, True)
    with pytest.raises(RuntimeError, match="device|cuda|cpu"):
        ext.project_backward(scene.means, scene.quats, scene.scales, scene.opacities, scene.viewmat.cpu(),
                             scene.K.cpu(), 32, 32, 0.01, 100.0, False, radii.cpu(), torch.zeros_like(m2),
                             torch.zeros_like(con), torch.zeros_like(depth), torch.zeros_like(opac))
