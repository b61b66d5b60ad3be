"""The side-by-side evaluation video `AVATAR/eval.mp4`: real | render | error heat map.

Each output frame puts three panels of the eval resolution next to each other: the ground truth (with
the background set to the training colour, as the metrics see it), the avatar's render, and the
per-pixel error (mean absolute difference over RGB) mapped through a perceptual colour map from 0 to
`max_error`, with a small colour bar and its scale written in the heat map's lower-right corner and a
label on each panel. Written through `Mp4Writer` (atomic: the file appears only when complete).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np

from avatar3d.errors import InputError
from avatar3d.io.media import AUDIO_RATE

# "inferno"-like anchors (black -> purple -> orange -> pale yellow): monotone in lightness, so the error
# size reads correctly in grey as well
_ANCHORS = np.array([
    [0.001, 0.000, 0.014], [0.258, 0.039, 0.406], [0.578, 0.148, 0.404], [0.865, 0.317, 0.226],
    [0.988, 0.645, 0.040], [0.988, 0.998, 0.645]], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """values [...] in [0,1] (clipped) -> RGB float32 [...,3] in [0,1]."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(np.int64), len(_ANCHORS) - 2)
    f = (v - i)[..., None]
    return _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f


def _as_float_image(img: Any, name: str) -> np.ndarray:
    """uint8 or float [H,W,3] numpy / torch -> float32 [H,W,3] in [0,1]."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"the {name} image must be [H,W,3], got {tuple(arr.shape)}; pass one RGB frame")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _label(panel: np.ndarray, text: str, corner: str = "tl") -> np.ndarray:
    """Write `text` on a dark box in a corner of a uint8 [H,W,3] panel (PIL's built-in font)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(panel)
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text)
    w, h = x1 - x0 + 6, y1 - y0 + 6
    x = 3 if corner[1] == "l" else panel.shape[1] - w - 3
    y = 3 if corner[0] == "t" else panel.shape[0] - h - 3
    draw.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
    draw.text((x + 3 - x0, y + 3 - y0), text, fill=(255, 255, 255))
    return np.asarray(im)


def _colour_bar(panel: np.ndarray, max_error: float) -> np.ndarray:
    """Draw the colour bar with its scale into the lower-right corner of the heat-map panel (uint8)."""
    from PIL import Image, ImageDraw

    H, W = panel.shape[:2]
    bar_w, bar_h = max(W // 3, 40), max(H // 40, 6)
    im = Image.fromarray(panel)
    draw = ImageDraw.Draw(im)
    lo, hi = "0", f">={max_error:g}"
    title = "|error| (mean RGB)"
    th = draw.textbbox((0, 0), title)[3] + 2
    box_h = bar_h + 2 * th + 10
    x0, y0 = W - bar_w - 10, H - box_h - 4
    draw.rectangle([x0 - 4, y0 - 2, W - 4, H - 4], fill=(0, 0, 0))
    draw.text((x0, y0), title, fill=(255, 255, 255))
    ramp = (colormap(np.linspace(0, 1, bar_w))[None].repeat(bar_h, 0) * 255).astype(np.uint8)
    im.paste(Image.fromarray(ramp), (x0, y0 + th + 2))
    ty = y0 + th + bar_h + 4
    draw.text((x0, ty), lo, fill=(255, 255, 255))
    draw.text((x0 + bar_w - draw.textbbox((0, 0), hi)[2], ty), hi, fill=(255, 255, 255))
    return np.asarray(im)


def compose_eval_frame(real: Any,  # [H,W,3] ground truth, uint8 or float in [0,1]
                       render: Any,  # [H,W,3] the avatar's render, same size
                       max_error: float = 0.25, labels: bool = True) -> np.ndarray:
    """One eval-video frame: uint8 [H,3W,3] = real | render | error heat map (with a colour bar)."""
    a, b = _as_float_image(real, "real"), _as_float_image(render, "render")
    if a.shape != b.shape:
        raise InputError(f"real {a.shape} and render {b.shape} differ in size; render at the eval resolution")
    if not max_error > 0:
        raise InputError(f"max_error must be positive, got {max_error}; use e.g. 0.25")
    err = np.abs(a - b).mean(axis=-1)  # [H,W]
    heat = colormap(err / max_error)
    panels = [(x * 255 + 0.5).astype(np.uint8) for x in (a, b, heat)]
    if labels:
        panels[0] = _label(panels[0], "real")
        panels[1] = _label(panels[1], "render")
        panels[2] = _label(panels[2], "error")
        panels[2] = _colour_bar(panels[2], max_error)
    return np.concatenate(panels, axis=1)


def write_eval_video(path: os.PathLike, pairs: Iterable[tuple[Any, Any]], fps: float, *,
                     max_error: float = 0.25, audio: Optional[np.ndarray] = None, audio_rate: int = AUDIO_RATE,
                     metadata: Optional[dict] = None) -> int:
    """Write `path` (mp4) from (real [H,W,3], render [H,W,3]) pairs, consumed lazily; returns the frame count.

    audio: optional mono float32 [A] (e.g. the held-out frames' sound) at `audio_rate`.
    """
    from avatar3d.io.media import Mp4Writer

    count = 0
    meta = {"comment": "avatar3d evaluation: real | render | error", **(metadata or {})}
    with Mp4Writer(path, fps=fps, audio=audio, audio_rate=audio_rate, metadata=meta, preset="veryfast") as writer:
        for real, render in pairs:
            writer.write(compose_eval_frame(real, render, max_error))
            count += 1
        if count == 0:
            raise InputError("no frames to write to the eval video; evaluate at least one held-out frame")
    return count
