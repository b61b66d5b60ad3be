"""One rendered view: the avatar at a frame of a sequence, under a tab's controls, fitted to its canvas."""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from avatar3d_viewer.state import ViewState, to_controls

# One render at a time: on a CPU every render already uses all cores, and on a GPU it keeps the memory bounded.
RENDER_LOCK = threading.Lock()


def fit_aspect(image: np.ndarray, aspect: float, background: Sequence[float]) -> np.ndarray:
    # image: [R,R,3] uint8 -> [R, round(R*aspect), 3] uint8
    """Pad (wide canvas) or crop (tall canvas) a square render to the canvas aspect width/height, keeping the
    vertical field of view: the browser stretches the background image over the whole canvas."""
    h, w = image.shape[:2]
    if not np.isfinite(aspect) or aspect <= 0:
        return image
    width = max(2, int(round(h * float(aspect))))
    if width == w:
        return image
    if width < w:
        left = (w - width) // 2
        return np.ascontiguousarray(image[:, left:left + width])
    fill = np.clip(np.round(np.asarray(background, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    out = np.empty((h, width, 3), np.uint8)
    out[:] = fill
    left = (width - w) // 2
    out[:, left:left + w] = image
    return out


def render_view(avatar, params, index: int, state: ViewState, resolution: int, aspect: float = 1.0,
                progress: float = 0.0) -> np.ndarray:  # -> [R, R*aspect, 3] uint8
    """Frame `index` of `params` (a DriveParams) as the tab with `state` sees it."""
    index = min(max(int(index), 0), len(params) - 1)
    background = tuple(float(c) for c in state.background)
    with RENDER_LOCK:
        frame = avatar.render_frame(params, index, controls=to_controls(state), resolution=int(resolution),
                                    background=background, progress=progress)
    return fit_aspect(np.asarray(frame.image), aspect, background)
