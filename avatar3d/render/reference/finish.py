"""The oracle of a rendered frame's last step (cuda_ext/finish_cpu.cpp is the native one; any device).

The rasterizer's float picture and alpha become uint8, composited over a background plate seen through a
homography: seen = u8(plate(H · pixel)), rgb = u8(clamp(image + w · seen / 255)) with the plate's weight
w = 1 - clamp(alpha), alpha = u8(clamp(alpha)), with u8(v) = floor(255 v + 0.5). Where w < PLATE_MIN_WEIGHT the
person hides the plate (it would move the value by under a quarter of a level): rgb = u8(clamp(image)), and the
native op does not sample the plate there unless it keeps `seen`. The plate is sampled bilinearly at continuous pixel
coordinates (pixel centres at +0.5), reflected at its border without repeating the edge pixel (OpenCV's
BORDER_REFLECT_101), and rounded to a level before compositing, so that a still camera may keep `seen` and
composite the next frames over it (the identity map) with the very same result.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

PLATE_MIN_WEIGHT = 1.0 / 1024.0  # a plate weighted less under a pixel is not seen there (cuda_ext/include/a3d/cores.h)


def reflect101(index: Tensor, size: int) -> Tensor:  # index: [...] int64 -> [...] in [0, size)
    """Indices reflected into [0, size) about the border pixels' centres, for any distance outside."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * size - 2
    index = torch.remainder(index, period)
    return torch.where(index < size, index, period - index)


def plate_seen(plate: Tensor, pixel_to_plate: Tensor, width: int, height: int) -> Tensor:
    # plate: [h,w,3] uint8, pixel_to_plate: [3,3] float64 -> [height,width,3] float32 in [0,1]
    """The plate as the output pixels see it through the homography (bilinear, reflected border)."""
    device = plate.device
    M = pixel_to_plate.to(device=device, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float64) + 0.5,
                            torch.arange(width, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    w = M[2, 0] * xs + M[2, 1] * ys + M[2, 2]
    u = (M[0, 0] * xs + M[0, 1] * ys + M[0, 2]) / w - 0.5
    v = (M[1, 0] * xs + M[1, 1] * ys + M[1, 2]) / w - 0.5
    u0, v0 = torch.floor(u), torch.floor(v)
    wx, wy = (u - u0).float()[..., None], (v - v0).float()[..., None]
    ph, pw = plate.shape[:2]
    x0, x1 = reflect101(u0.long(), pw), reflect101(u0.long() + 1, pw)
    y0, y1 = reflect101(v0.long(), ph), reflect101(v0.long() + 1, ph)
    p = plate.float()
    top = (1 - wx) * p[y0, x0] + wx * p[y0, x1]
    bottom = (1 - wx) * p[y1, x0] + wx * p[y1, x1]
    return ((1 - wy) * top + wy * bottom) * (1.0 / 255.0)


def to_u8(values: Tensor) -> Tensor:  # [...] float -> [...] uint8
    return (values.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def finish_frame(image: Tensor, alpha: Tensor, plate: Optional[Tensor] = None,
                 pixel_to_plate: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    # image: [H,W,3] float32, alpha: [H,W] or [H,W,1], plate: [h,w,3] uint8
    # -> rgb [H,W,3] uint8, alpha [H,W] uint8, seen [H,W,3] uint8 or None
    """The frame as uint8 over the plate (or, without one, as rendered: its background already blended in), and
    the plate as this camera sees it."""
    height, width = image.shape[:2]
    alpha = alpha.reshape(height, width).float()
    colour, seen = image.float(), None
    if plate is not None and plate.numel():
        seen = to_u8(plate_seen(plate, pixel_to_plate, width, height))
        weight = 1.0 - alpha.clamp(0, 1)
        weight = torch.where(weight >= PLATE_MIN_WEIGHT, weight, torch.zeros_like(weight))
        colour = colour + weight[..., None] * (seen.float() * (1.0 / 255.0))
    return to_u8(colour), to_u8(alpha), seen
