"""A rendered frame's last step: the rasterizer's float picture and alpha to uint8, over a background plate.

`finish_frame` runs the native op (cuda_ext/finish_cpu.cpp: warp, composite and conversion in one pass on the
rasterizer's own threads) on CPU tensors and the PyTorch oracle (render/reference/finish.py) elsewhere (a GPU)
or where the extension is not built. Both compute the same thing; see the oracle's docstring.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.render import native
from avatar3d.render.reference.finish import finish_frame as finish_frame_reference


def finish_frame(image: Tensor, alpha: Tensor, plate: Optional[np.ndarray] = None,
                 pixel_to_plate: Optional[np.ndarray] = None,
                 keep_seen: bool = False) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    # image: [H,W,3], alpha: [H,W,1], plate: [h,w,3] uint8, pixel_to_plate: [3,3]
    # -> rgb [H,W,3], alpha [H,W], seen [H,W,3] or None (uint8)
    """(rgb, alpha, seen) as uint8 numpy arrays: the picture over the plate seen through `pixel_to_plate` (an output
    pixel -> plate pixel homography, centres at +0.5), or, with no plate, the picture as rendered; `seen` (with
    `keep_seen`) is the plate as this camera saw it, to composite a still camera's next frames over (identity map)."""
    has_plate = plate is not None
    if has_plate and pixel_to_plate is None:
        raise ValueError("a plate needs its homography pixel_to_plate [3,3]")
    if has_plate:
        plate = np.ascontiguousarray(plate)
        if not plate.flags.writeable:  # torch wraps only writable arrays (it never writes to this one)
            plate = plate.copy()
    plate_t = torch.from_numpy(plate) if has_plate else torch.empty(0, dtype=torch.uint8)
    M = torch.as_tensor(np.asarray(pixel_to_plate if has_plate else np.eye(3), np.float64))
    if image.device.type == "cpu" and native.is_available():
        rgb, alpha_u8, seen = native.finish_frame(image.float(), alpha.float(), plate_t, M, keep_seen)
    else:
        rgb, alpha_u8, seen = finish_frame_reference(image, alpha, plate_t.to(image.device) if has_plate else None, M)
    kept = seen.cpu().numpy() if keep_seen and seen is not None and seen.numel() else None
    return rgb.cpu().numpy(), alpha_u8.cpu().numpy(), kept
