"""One fixed square crop per video: where it lies, cutting and resampling frames, mapping landmarks and K.

Convention: pixel centres at +0.5, so a continuous image coordinate u (0 at the left edge) maps into a
crop `box` resampled to R pixels as (u - x0) * R / size, and the crop camera is `S @ K` with
S = [[s, 0, -s x0], [0, s, -s y0], [0, 0, 1]], s = R / size. Where the crop leaves the frame the
border pixels are repeated (edge replication), so the head is never cut and there is no black band.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from avatar3d.errors import InputError

DEFAULT_MARGIN = 1.7  # crop side / face-landmark box side: room for hair, forehead, chin and neck
DEFAULT_LIFT = 0.08  # crop centre above the face-box centre, in face-box heights (the mesh stops at the brow)
DEFAULT_FOV_DEG = 25.0  # assumed field of view (larger image side) when no K is known: a fitter's start
PORTRAIT_MARGIN = 2.7  # portrait framing: crop side / face size (head, neck and shoulders)
PORTRAIT_LIFT = -0.45  # portrait framing: the crop centre this many face heights *below* the face centre
FRAMINGS = ("portrait", "head")


@dataclass(frozen=True)
class CropBox:
    """Square crop in frame pixels: columns x0..x0+size, rows y0..y0+size (may extend past the frame)."""

    x0: int
    y0: int
    size: int

    @property
    def x1(self) -> int:
        return self.x0 + self.size

    @property
    def y1(self) -> int:
        return self.y0 + self.size

    def inside(self, width: int, height: int) -> bool:
        """True when the crop lies wholly inside a `width` x `height` frame (no padding needed)."""
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height

    def as_array(self) -> np.ndarray:
        """int64 `[3]` (x0, y0, size), for storing in an npz."""
        return np.array([self.x0, self.y0, self.size], dtype=np.int64)


def framed_crop(track: Any, width: int, height: int, framing: str = "portrait") -> CropBox:
    """The crop of a framing: `head` (the head alone, compute_crop's defaults) or `portrait` (head, neck and
    shoulders: PORTRAIT_MARGIN face sizes, the face in the upper part), a portrait kept inside the frame (smaller
    where the frame is too small for it, moved where it would leave the frame) so it needs no padding."""
    if framing not in FRAMINGS:
        raise InputError(f"unknown framing {framing!r}; use one of {', '.join(FRAMINGS)}")
    if framing == "head":
        return compute_crop(track, width, height)
    box = compute_crop(track, width, height, margin=PORTRAIT_MARGIN, lift=PORTRAIT_LIFT)
    size = min(box.size, int(width), int(height))
    centre_x, centre_y = box.x0 + box.size / 2.0, box.y0 + box.size / 2.0
    x0 = int(round(min(max(centre_x - size / 2.0, 0), width - size)))
    y0 = int(round(min(max(centre_y - size / 2.0, 0), height - size)))
    return CropBox(x0, y0, size)


def compute_crop(track: Any, width: int, height: int, margin: float = DEFAULT_MARGIN,
                 lift: float = DEFAULT_LIFT, percentile: float = 99.0) -> CropBox:
    """The square crop that holds the head in every frame.

    `track` is a `LandmarkTrack` (only its detected frames are used) or landmarks `[T,N,2]` in pixels.
    Per frame the landmarks' bounding box is taken; their union over frames is robust to a few
    outliers (the `percentile` of each extent); the crop side is `margin` times the larger side of
    that union, centred `lift` face heights above its centre.
    """
    if hasattr(track, "points"):
        points = np.asarray(track.points)
        if hasattr(track, "detected") and np.asarray(track.detected).any():
            points = points[np.asarray(track.detected, bool)]
    else:
        points = np.asarray(track)
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] == 0:
        raise InputError(f"compute_crop needs landmarks [T,N,2] for at least one frame, got shape "
                         f"{tuple(points.shape)}; pass the LandmarkTrack from detect_video")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"the frame size must be positive, got {width}x{height}; pass the video's width/height")
    if not margin >= 1.0:
        raise InputError(f"margin must be >= 1 (crop side / face size), got {margin}; use e.g. {DEFAULT_MARGIN}")
    if not 50.0 <= percentile <= 100.0:
        raise InputError(f"percentile must be in [50, 100], got {percentile}; use e.g. 99")
    if not np.isfinite(points).all():
        raise InputError("the landmarks contain NaN/inf; interpolate failed frames first (detect_video does)")
    lo = points.min(axis=1)  # [T,2]
    hi = points.max(axis=1)  # [T,2]
    x0, y0 = np.percentile(lo, 100.0 - percentile, axis=0)
    x1, y1 = np.percentile(hi, percentile, axis=0)
    face = max(x1 - x0, y1 - y0, 1.0)
    size = max(int(round(margin * face)), 1)
    cx = 0.5 * (x0 + x1)
    cy = 0.5 * (y0 + y1) - lift * (y1 - y0)
    return CropBox(int(round(cx - 0.5 * size)), int(round(cy - 0.5 * size)), size)


def _check_resolution(resolution: int) -> int:
    if int(resolution) != resolution or int(resolution) <= 0:
        raise InputError(f"resolution must be a positive whole number of pixels, got {resolution}; use e.g. 512")
    return int(resolution)


def apply_crop(frame: np.ndarray, box: CropBox, resolution: int = 512) -> np.ndarray:  # [H,W,3] -> [R,R,3]
    """Cut `box` out of a uint8 frame (edge-replicated where it leaves the frame) and resample it to
    `resolution` (Lanczos, antialiased when shrinking). Returns uint8 `[R,R,3]`."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"apply_crop takes a uint8 RGB frame [H,W,3], got {arr.dtype} {tuple(arr.shape)}; "
                         f"convert it first")
    if box.size <= 0:
        raise InputError(f"the crop size must be positive, got {box.size}; recompute it with compute_crop")
    res = _check_resolution(resolution)
    h, w = arr.shape[:2]
    # Index clipping is edge replication, and it reads only the crop's pixels.
    rows = np.clip(np.arange(box.y0, box.y1), 0, h - 1)
    cols = np.clip(np.arange(box.x0, box.x1), 0, w - 1)
    if box.inside(w, h):
        cut = arr[box.y0:box.y1, box.x0:box.x1]
    else:
        cut = arr[rows[:, None], cols[None, :]]
    if box.size == res:
        return np.ascontiguousarray(cut)
    img = Image.fromarray(np.ascontiguousarray(cut)).resize((res, res), resample=Image.Resampling.LANCZOS)
    return np.asarray(img)


def crop_landmarks(points: Any, box: CropBox, resolution: int = 512) -> Any:  # [...,2] -> [...,2]
    """Frame pixel coordinates -> crop pixel coordinates (numpy arrays or torch tensors)."""
    s = _check_resolution(resolution) / box.size
    if hasattr(points, "new_tensor"):  # torch: keep dtype and device
        return (points - points.new_tensor([box.x0, box.y0])) * s
    pts = np.asarray(points)
    dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
    return ((pts - np.array([box.x0, box.y0], dtype)) * s).astype(dtype, copy=False)


def uncrop_landmarks(points: Any, box: CropBox, resolution: int = 512) -> Any:  # [...,2] -> [...,2]
    """Crop pixel coordinates -> frame pixel coordinates (inverse of `crop_landmarks`)."""
    s = box.size / _check_resolution(resolution)
    if hasattr(points, "new_tensor"):
        return points * s + points.new_tensor([box.x0, box.y0])
    pts = np.asarray(points)
    dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
    return (pts * s + np.array([box.x0, box.y0], dtype)).astype(dtype, copy=False)


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """K `[3,3]` float64 for a `width` x `height` frame: principal point at its centre, square pixels,
    `fov_deg` across the larger side (an initial guess; the fitter refines the focal length)."""
    if not 0.0 < fov_deg < 180.0:
        raise InputError(f"fov_deg must be between 0 and 180 degrees, got {fov_deg}; use e.g. {DEFAULT_FOV_DEG}")
    f = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def crop_intrinsics(K_full: Any, box: CropBox, resolution: int = 512,  # K_full: [3,3] or None
                    image_size: tuple[int, int] | None = None, fov_deg: float = DEFAULT_FOV_DEG) -> Any:
    """The crop camera K `[3,3]` from the full-frame K (numpy or torch, kept).

    Without `K_full`, a nominal camera is assumed (`default_intrinsics` of the frame when
    `image_size=(width, height)` is given, else of the crop itself: principal point at its centre).
    """
    res = _check_resolution(resolution)
    s = res / box.size
    if K_full is None:
        if image_size is None:
            return default_intrinsics(res, res, fov_deg)
        K_full = default_intrinsics(int(image_size[0]), int(image_size[1]), fov_deg)
    S = [[s, 0.0, -s * box.x0], [0.0, s, -s * box.y0], [0.0, 0.0, 1.0]]
    if hasattr(K_full, "new_tensor"):
        if tuple(K_full.shape) != (3, 3):
            raise InputError(f"K must be [3,3], got {tuple(K_full.shape)}; pass the camera intrinsics matrix")
        return K_full.new_tensor(S) @ K_full
    K = np.asarray(K_full, dtype=np.float64)
    if K.shape != (3, 3):
        raise InputError(f"K must be [3,3], got {K.shape}; pass the camera intrinsics matrix")
    return np.array(S) @ K
