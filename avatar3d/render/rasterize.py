"""`rasterize`: the one functional entry point of the Gaussian rasterizer, and its backend dispatch.

Projection and compositing are separate differentiable ops (as in gsplat), so the projected 2D means are a
tensor of their own whose gradient is kept (`meta["means2d"].grad` after backward) for densification.
Backends: "torch" (the pure-PyTorch oracle, never touches the extension), "cpu" / "cuda" (the native
extension, `avatar3d.render.native`, imported lazily so that this module works without it), and "auto".
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from avatar3d.errors import NATIVE_BUILD_HINT, BackendUnavailableError, InputError
from avatar3d.render import reference
from avatar3d import stages
from avatar3d.render.sh import MAX_SH_DEGREE, num_sh_bases, sh_to_rgb
from avatar3d.stages import stage

BACKENDS = ("auto", "torch", "cpu", "cuda")
_warned_fallback = False


def _native():
    """The native ops module, or None when the extension (or its Python side) is missing."""
    try:
        from avatar3d.render import native
    except ImportError:
        return None
    try:
        return native if native.is_available() else None
    except Exception:  # a broken build must not break the torch backend
        return None


def _native_has_cuda(native) -> bool:
    try:
        has = getattr(native, "has_cuda", None)
        return torch.cuda.is_available() and (has is None or bool(has()))
    except Exception:
        return False


def available_backends() -> list[str]:
    """Backends that can run here, e.g. ["torch", "cpu"] or ["torch", "cpu", "cuda"]."""
    names = ["torch"]
    native = _native()
    if native is not None:
        names.append("cpu")
        if _native_has_cuda(native):
            names.append("cuda")
    return names


def _resolve_backend(backend: str, device: torch.device):
    """(name, ops module) for the requested backend on tensors of `device`."""
    global _warned_fallback
    if backend not in BACKENDS:
        raise InputError(f"unknown rasterizer backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch", reference
    if backend in ("cpu", "cuda"):
        if device.type != backend:
            raise InputError(f"backend={backend!r} needs {backend} tensors but the inputs are on {device}; "
                             f"move them with .to('{backend}') or use backend='auto'")
        from avatar3d.render import native  # raises BackendUnavailableError itself when used unbuilt

        if not native.is_available():
            raise BackendUnavailableError(
                f"the native rasterizer extension (avatar3d._C) is not built; {NATIVE_BUILD_HINT}")
        return backend, native
    ops = _native()
    if ops is not None and (device.type == "cpu" or (device.type == "cuda" and _native_has_cuda(ops))):
        return device.type, ops
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"avatar3d: the native rasterizer extension is not available for {device.type} tensors; "
                      "falling back to the slow pure-PyTorch backend. Build it (`python setup.py build_ext "
                      "--inplace`, with AVATAR3D_CUDA=1 for CUDA) for real-time rendering.",
                      RuntimeWarning, stacklevel=3)
    return "torch", reference


def _check(t: Any, name: str, shape: str, ndim: int, dims: dict[int, int], ref: Tensor | None) -> Tensor:
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}")
    ok = t.ndim == ndim and all(t.shape[d] == v for d, v in dims.items())
    if not ok:
        raise InputError(f"{name} has shape {tuple(t.shape)} but must be {shape}; reshape it to {shape}")
    if ref is not None:
        if t.device != ref.device:
            raise InputError(f"{name} is on {t.device} but means are on {ref.device}; move all Gaussian "
                             f"tensors to one device")
        if t.dtype != ref.dtype:
            raise InputError(f"{name} has dtype {t.dtype} but means have {ref.dtype}; cast all Gaussian tensors "
                             f"to one dtype (float32 or float64)")
    return t


def _validate(means, quats, scales, opacities, colors, viewmat, K, width, height, background, sh_degree,
              near, far):
    means = _check(means, "means", "[N,3]", 2, {1: 3}, None)
    if means.dtype not in (torch.float32, torch.float64):
        raise InputError(f"means have dtype {means.dtype}; the rasterizer takes float32 or float64, cast with "
                         f".float()")
    n = means.shape[0]
    _check(quats, "quats", "[N,4] (w,x,y,z)", 2, {0: n, 1: 4}, means)
    _check(scales, "scales", "[N,3] (linear, not log)", 2, {0: n, 1: 3}, means)
    _check(opacities, "opacities", "[N] (in (0,1), not logits)", 1, {0: n}, means)
    if sh_degree is None:
        _check(colors, "colors", "[N,C] (or [N,K,3] SH with sh_degree=...)", 2, {0: n}, means)
        if colors.shape[1] < 1:
            raise InputError("colors have 0 channels; pass at least one feature channel per Gaussian")
    else:
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise InputError(f"sh_degree={sh_degree!r} is invalid; pass an integer in 0..{MAX_SH_DEGREE} or None "
                             f"for plain [N,C] colours")
        k = num_sh_bases(sh_degree)
        _check(colors, "colors (SH coefficients)", f"[N,>={k},3] for sh_degree={sh_degree}", 3, {0: n, 2: 3}, means)
        if colors.shape[1] < k:
            raise InputError(f"colors hold {colors.shape[1]} SH coefficients but sh_degree={sh_degree} needs {k}; "
                             f"lower sh_degree or pass [N,{k},3]")
    for value, name in ((viewmat, "viewmat"), (K, "K")):
        if not isinstance(value, Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if viewmat.shape != (4, 4):
        raise InputError(f"viewmat has shape {tuple(viewmat.shape)}; pass one 4x4 world->camera matrix")
    if K.shape != (3, 3):
        raise InputError(f"K has shape {tuple(K.shape)}; pass one 3x3 intrinsics matrix in pixels")
    for value, name in ((width, "width"), (height, "height")):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name}={value!r} is invalid; pass a positive integer number of pixels")
    n_ch = 3 if sh_degree is not None else colors.shape[1]
    if background is not None:
        _check(background, "background", f"[{n_ch}] (one value per colour channel)", 1, {0: n_ch}, means)
    if not 0.0 < float(near) < float(far):
        raise InputError(f"near={near}, far={far}: need 0 < near < far (metres)")


def _colours(backend: str, ops: Any, sh_degree: int | None, colors: Tensor, means: Tensor, viewmat: Tensor) -> Tensor:
    # colors: [N,C] features or [N,K,3] SH, means: [N,3], viewmat: [4,4] -> [N,C] or [N,3]
    """The features to composite: the SH's colour for this view where given. The native CPU backend evaluates it
    natively where no gradient is wanted (the same maths as sh_to_rgb, which the oracle and training use)."""
    if sh_degree is None:
        return colors
    wants_grad = torch.is_grad_enabled() and (colors.requires_grad or means.requires_grad)
    if backend == "cpu" and not wants_grad:
        return ops.sh_colours(sh_degree, colors, means, viewmat)
    return sh_to_rgb(sh_degree, colors, means, viewmat)


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmat: Tensor,
              K: Tensor, width: int, height: int, background: Tensor | None = None, *, sh_degree: int | None = None,
              backend: str = "auto", antialiased: bool = False, near: float = 0.01, far: float = 100.0):
    # means: [N,3] world, quats: [N,4] (w,x,y,z) unnormalised, scales: [N,3] linear, opacities: [N] in (0,1),
    # colors: [N,C] features or [N,K,3] SH (with sh_degree), viewmat: [4,4] world->camera, K: [3,3],
    # background: [C] or None (zeros)
    """Render Gaussians: returns (image [H,W,C], alpha [H,W,1], meta).

    meta: "means2d" [N,2] (after backward, `.grad` holds the 2D-mean gradient), "radii" [N] int32 (0 = culled),
    "depths" [N] camera-space z, "visible" [N] bool, "conics" [N,3], "opacities" [N] effective opacities,
    "backend" the backend that ran. viewmat and K are cast to the means' dtype and device.
    """
    _validate(means, quats, scales, opacities, colors, viewmat, K, width, height, background, sh_degree, near, far)
    name, ops = _resolve_backend(backend, means.device)
    viewmat = viewmat.to(dtype=means.dtype, device=means.device)
    K = K.to(dtype=means.dtype, device=means.device)
    with stage("sh"):
        feats = _colours(name, ops, sh_degree, colors, means, viewmat)
    if background is None:
        background = torch.zeros(feats.shape[1], dtype=means.dtype, device=means.device)

    means2d, conics, depths, radii, opac = ops.project(means, quats, scales, opacities, viewmat, K, width, height,
                                                       near, far, antialiased)
    if means2d.requires_grad:
        means2d.retain_grad()
    image, alpha = ops.composite(means2d, conics, opac, feats, background, radii, depths, width, height)
    if stages.active() and name == "cpu":  # the kernels' own timers split the native forward
        times = ops.stage_times()
        for key in ("project", "intersect", "sort", "blend"):
            stages.add(key, times[key] / 1e3)
    meta = {"means2d": means2d, "radii": radii, "depths": depths, "visible": radii > 0, "conics": conics,
            "opacities": opac, "backend": name}
    return image, alpha, meta
