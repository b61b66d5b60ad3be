"""The native rasterizer ops (`avatar3d._C`, built from cuda_ext/) as differentiable torch functions.

`project` and `composite` have the signatures of the oracle's ops in `avatar3d.render.reference` and
dispatch on the inputs' device (C++/OpenMP on CPU tensors, CUDA kernels on CUDA tensors). The kernels
compute in float32; float64 inputs are cast in and the outputs cast back (gradients follow the casts).
The extension is imported lazily so that `import avatar3d` works without it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from avatar3d.camera import camera_centre
from avatar3d.errors import NATIVE_BUILD_HINT as BUILD_HINT
from avatar3d.errors import BackendUnavailableError

_ext: ModuleType | None = None
_import_error: Exception | None = None


def _load() -> ModuleType | None:
    global _ext, _import_error
    if _ext is None and _import_error is None:
        try:
            _ext = importlib.import_module("avatar3d._C")
        except ImportError as err:
            _import_error = err
    return _ext


def _require() -> ModuleType:
    ext = _load()
    if ext is None:
        raise BackendUnavailableError(f"the native rasterizer extension avatar3d._C is not available "
                                      f"({_import_error}); {BUILD_HINT}")
    return ext


def is_available() -> bool:
    """Whether the extension imports (CPU kernels at least)."""
    return _load() is not None


def has_cuda() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    ext = _load()
    return ext is not None and bool(ext.has_cuda())


STAGES = ("project", "intersect", "sort", "blend", "blend_backward", "project_backward")


def stage_times() -> dict[str, float]:
    """Milliseconds of each stage (`STAGES`) of the last CPU rasterization on this thread: projection,
    tile intersection (count and scatter), per-tile depth sort, blending, and the two backward passes."""
    return dict(_require().stage_times())


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not has_cuda():
        raise BackendUnavailableError("avatar3d._C was built without CUDA kernels but the inputs are CUDA tensors; "
                                      "rebuild with `AVATAR3D_CUDA=1 python setup.py build_ext --inplace` on a "
                                      "machine with nvcc, or move the inputs to the CPU")
    if device.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"the native rasterizer runs on cpu or cuda tensors, not {device.type}; "
                                      f"use backend='torch'")


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmat, K, width, height, near, far, antialiased):
        ext = _require()
        cam = (viewmat.detach().float().cpu(), K.detach().float().cpu(), int(width), int(height), float(near),
               float(far), bool(antialiased))
        means2d, conics, depths, radii, opac = ext.project_forward(means, quats, scales, opacities, *cam)
        ctx.save_for_backward(means, quats, scales, opacities, radii)
        ctx.cam = cam
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, opac

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii, v_opac):
        means, quats, scales, opacities, radii = ctx.saved_tensors

        def g(v: Tensor | None, like: Tensor) -> Tensor:
            return torch.zeros_like(like) if v is None else v.contiguous()

        n = means.shape[0]
        zeros = means.new_zeros
        v_means, v_quats, v_scales, v_opacities = _require().project_backward(
            means, quats, scales, opacities, *ctx.cam, radii,
            g(v_means2d, zeros(n, 2)), g(v_conics, zeros(n, 3)), g(v_depths, zeros(n)), g(v_opac, zeros(n)))
        return v_means, v_quats, v_scales, v_opacities, None, None, None, None, None, None, None


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, radii, depths, width, height):
        ext = _require()
        # Without a gradient to come, the CPU records nothing for the backward (less memory traffic per pixel).
        image, alpha, gauss_ids, tile_ranges, last, final_t, spans = ext.composite_forward(
            means2d, conics, opacities, colors, background, radii, depths, int(width), int(height),
            any(ctx.needs_input_grad[:5]))
        ctx.save_for_backward(means2d, conics, opacities, colors, background, gauss_ids, tile_ranges, spans, last,
                              final_t)
        ctx.size = (int(width), int(height))
        return image, alpha

    @staticmethod
    def backward(ctx, v_image, v_alpha):
        saved = ctx.saved_tensors
        width, height = ctx.size
        means2d, colors = saved[0], saved[3]
        v_image = means2d.new_zeros(height, width, colors.shape[1]) if v_image is None else v_image.contiguous()
        v_alpha = means2d.new_zeros(height, width, 1) if v_alpha is None else v_alpha.contiguous()
        v_means2d, v_conics, v_opac, v_colors, v_bg = _require().composite_backward(
            *saved, v_image, v_alpha, width, height)
        return v_means2d, v_conics, v_opac, v_colors, v_bg, None, None, None, None


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmat: Tensor, K: Tensor,
            width: int, height: int, near: float = 0.01, far: float = 100.0, antialiased: bool = False):
    # means: [N,3], quats: [N,4] (w,x,y,z), scales: [N,3], opacities: [N], viewmat: [4,4], K: [3,3]
    """Project Gaussians: (means2d [N,2], conics [N,3], depths [N], radii [N] int32, opacities_eff [N]).

    Differentiable in means, quats, scales and opacities (and depths carry the gradient of camera z).
    """
    _require()
    _check_device(means.device)
    dtype = means.dtype
    means2d, conics, depths, radii, opac = _Project.apply(
        _f32(means), _f32(quats), _f32(scales), _f32(opacities), viewmat, K, width, height, near, far, antialiased)
    return means2d.to(dtype), conics.to(dtype), depths.to(dtype), radii, opac.to(dtype)


def composite(means2d: Tensor, conics: Tensor, opacities_eff: Tensor, colors: Tensor, background: Tensor | None,
              radii: Tensor, depths: Tensor, width: int, height: int):
    # means2d: [N,2], conics: [N,3], opacities_eff: [N], colors: [N,C], background: [C] or None,
    # radii: [N] int32, depths: [N]
    """Blend projected Gaussians front to back: (image [H,W,C], alpha [H,W,1]).

    Differentiable in means2d, conics, opacities_eff, colors and background.
    """
    _require()
    _check_device(means2d.device)
    dtype = means2d.dtype
    if background is None:
        background = colors.new_zeros(colors.shape[1])
    image, alpha = _Composite.apply(
        _f32(means2d), _f32(conics), _f32(opacities_eff), _f32(colors), _f32(background),
        radii.to(torch.int32).contiguous(), depths.detach().to(torch.float32).contiguous(), width, height)
    return image.to(dtype), alpha.to(dtype)


class _SSIMMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ssim, stats = _require().ssim_forward(x, y)
        ctx.save_for_backward(x, y, stats)
        return ssim

    @staticmethod
    def backward(ctx, v_map):
        x, y, stats = ctx.saved_tensors
        return _require().ssim_backward(x, y, stats, v_map.contiguous()), None


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    # x, y: [H,W,C] float32 CPU images
    """The training loss's per-pixel SSIM map [H,W] (11-tap Gaussian window, sigma 1.5, zero padding; the mean of
    the channels), differentiable in `x` only (`y` is the target). The PyTorch reference is
    `avatar3d.training.losses.padded_ssim_map_reference`."""
    _require()
    if x.device.type != "cpu":
        raise BackendUnavailableError(f"the native SSIM runs on CPU tensors, not {x.device.type}; use the "
                                      f"PyTorch path (training.losses.padded_ssim_map_reference)")
    return _SSIMMap.apply(_f32(x), _f32(y.detach()))


def finish_frame(image: Tensor, alpha: Tensor, plate: Tensor, pixel_to_plate: Tensor,
                 keep_seen: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    # image: [H,W,3] float32, alpha: [H,W(,1)] float32, plate: [h,w,3] uint8 or empty, pixel_to_plate: [3,3] float64
    """A rendered frame to uint8 over its plate, on CPU tensors (render/finish.py; no gradient): rgb [H,W,3], alpha
    [H,W] and the plate as seen [H,W,3] (empty unless `keep_seen`)."""
    rgb, alpha_u8, seen = _require().finish_frame(image.contiguous(), alpha.contiguous(), plate.contiguous(),
                                                  pixel_to_plate.contiguous(), bool(keep_seen))
    return rgb, alpha_u8, seen


def bind_world(vertices: Tensor, faces: Tensor, parent: Tensor, local_means: Tensor, local_quats: Tensor,
               log_scales: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # vertices: [V,3] posed mesh, faces: [F,3] binding triangles, parent: [N], local_means: [N,3],
    # local_quats: [N,4] (w,x,y,z), log_scales: [N,3]; CPU tensors
    """World means [N,3], quaternions [N,4] and scales [N,3] of rig-bound Gaussians for one frame, in one native pass
    (gaussians/binding.py's maths; no gradient: training poses them in PyTorch)."""
    if vertices.device.type != "cpu":
        raise BackendUnavailableError(f"the native binding runs on CPU tensors, not {vertices.device.type}; use "
                                      f"BoundGaussians.world")
    means, quats, scales = _require().bind_world(
        _f32(vertices.detach()), faces.to(torch.int64), parent.to(torch.int64), _f32(local_means.detach()),
        _f32(local_quats.detach()), _f32(log_scales.detach()))
    return means, quats, scales


def sh_colours(degree: int, coeffs: Tensor, means: Tensor, viewmat: Tensor) -> Tensor:
    # coeffs: [N,K,3], means: [N,3], viewmat: [4,4]; CPU tensors
    """sh.sh_to_rgb in one native pass (no gradient: training evaluates it in PyTorch): [N,3]."""
    if means.device.type != "cpu":
        raise BackendUnavailableError(f"the native SH colours run on CPU tensors, not {means.device.type}; use "
                                      f"render.sh.sh_to_rgb")
    centre = camera_centre(viewmat.detach().double()).contiguous()
    rgb = _require().sh_colours(_f32(coeffs.detach()), _f32(means.detach()), centre, int(degree))
    return rgb.to(means.dtype)
