"""The background plate of an enrollment video: the room behind the person, without the person.

Frames spread evenly over the video are segmented (MediaPipe selfie segmentation, the same model as the masks);
per pixel, the median of the frames where no person covers it is the clean background, and what no frame shows
(behind a person who never moves away) is filled by inpainting (OpenCV, Telea's method). The plate covers the
whole source frame, not only the training crop, so a camera that zooms out sees real background.

A background that moves (a moving camera, people walking, a screen playing) has no single picture: where the
frames that show a pixel disagree by much more than video noise, over a large share of the picture, the plate is
refused with a warning and the avatar keeps a solid colour.

The plate's camera is the enrollment camera (fixed over the video) with intrinsics for the plate's pixels; it is
placed `behind` metres beyond the head (render/plate.py renders it for any camera).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from avatar3d.errors import InputError
from avatar3d.render.plate import BackgroundPlate


@dataclass
class BackgroundConfig:
    enabled: bool = True
    """Estimate a plate at all (off: the avatar keeps a solid background)."""
    samples: int = 48
    """Frames read for the plate, spread evenly over the video (a median needs a few dozen, not all)."""
    max_side: int = 1280
    """The plate's longer side in pixels at most (the source frame is shrunk to it, never enlarged)."""
    person_threshold: float = 0.1
    """A pixel whose person probability exceeds this is not background in that frame."""
    grow: float = 0.02
    """The person masks grown by this share of the frame's longer side (hair wisps and the segmentation's soft edge)."""
    min_seen: float = 0.1
    """A pixel seen in fewer than this share of the sampled frames (and at least 2) is filled by inpainting."""
    noise_levels: float = 12.0
    """A pixel is unsteady when the frames that see it deviate from their median by more than this (0-255, the
    median absolute deviation): well above compression noise, well below a moving edge."""
    moving_share: float = 0.25
    """More than this share of the seen pixels unsteady: the background moves; no plate."""
    behind: float = 1.0
    """Metres from the head to the plane the plate is placed on (the room's back wall; a monocular video with a
    fixed camera cannot tell, and only a moved camera's parallax depends on it)."""


@dataclass
class PlateEstimate:
    """What estimate_plate found: the image, how much was really seen, whether the background holds still."""

    image: np.ndarray  # [H,W,3] uint8
    seen_share: float  # share of the plate's pixels seen in enough frames (the rest is inpainted)
    unsteady_share: float  # share of the seen pixels whose frames disagree
    frames: int

    def moving(self, cfg: BackgroundConfig) -> bool:
        return self.unsteady_share > cfg.moving_share


def person_free(person: np.ndarray, cfg: BackgroundConfig) -> np.ndarray:  # [H,W] float -> [H,W] bool
    """Pixels of one frame that show background: below the person threshold, outside the grown person mask."""
    import cv2

    radius = max(1, int(round(cfg.grow * max(person.shape))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    covered = cv2.dilate((person > cfg.person_threshold).astype(np.uint8), kernel)
    return covered == 0


def estimate_plate(frames: np.ndarray, free: np.ndarray, cfg: BackgroundConfig,  # [S,H,W,3] uint8, [S,H,W] bool
                   strip: int = 64) -> PlateEstimate:
    """The median background of `frames` where `free` says each shows background; unseen pixels inpainted."""
    import cv2

    if frames.ndim != 4 or frames.shape[-1] != 3 or free.shape != frames.shape[:3]:
        raise InputError(f"estimate_plate takes frames [S,H,W,3] and free masks [S,H,W], got {frames.shape} and "
                         f"{free.shape}")
    count, height = len(frames), frames.shape[1]
    need = max(2, int(np.ceil(cfg.min_seen * count)))
    image = np.zeros(frames.shape[1:], np.uint8)
    seen = free.sum(0) >= need  # [H,W]
    unsteady = np.zeros(seen.shape, bool)
    for y0 in range(0, height, strip):  # strips keep the float copy small
        values = frames[:, y0:y0 + strip].astype(np.float32)
        values[~free[:, y0:y0 + strip]] = np.nan
        with warnings.catch_warnings():  # all-NaN pixels (no frame shows them) are inpainted below
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(values, axis=0)  # [h,W,3]
            spread = np.nanmedian(np.abs(values - median[None]), axis=0).max(-1)  # [h,W]
        image[y0:y0 + strip] = np.nan_to_num(median).clip(0, 255).round().astype(np.uint8)
        unsteady[y0:y0 + strip] = np.nan_to_num(spread) > cfg.noise_levels
    seen_share = float(seen.mean())
    unsteady_share = float((unsteady & seen).sum() / max(1, seen.sum()))
    if not seen.all():
        fill = (~seen).astype(np.uint8)
        if seen.any():
            radius = max(3, int(round(0.01 * max(seen.shape))))
            image = cv2.inpaint(image, fill, radius, cv2.INPAINT_TELEA)
    return PlateEstimate(image, seen_share, unsteady_share, count)


def sample_indices(num_frames: int, samples: int) -> np.ndarray:
    """`samples` frame indices spread evenly over [0, num_frames) (all of them for a short video)."""
    if num_frames <= samples:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, samples)).astype(int))


def read_samples(video: Path, cfg: BackgroundConfig, segment: Callable[[np.ndarray], np.ndarray],
                 progress: Optional[Callable[[], None]] = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(frames [S,h,w,3] uint8, free masks [S,h,w] bool, (x, y) scale plate/source) of the sampled frames, shrunk
    to `max_side`; the video is decoded once, only the samples are kept."""
    from PIL import Image

    from avatar3d.io.media import VideoReader

    with VideoReader(video) as reader:
        wanted = set(sample_indices(reader.num_frames, cfg.samples).tolist())
        scale = min(1.0, cfg.max_side / max(reader.width, reader.height))
        size = (max(1, int(round(reader.width * scale))), max(1, int(round(reader.height * scale))))
        frames, free = [], []
        for index, frame in enumerate(reader):
            if index not in wanted:
                continue
            if scale < 1.0:
                frame = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS))
            frames.append(frame)
            free.append(person_free(segment(frame), cfg))
            if progress:
                progress()
    if not frames:
        raise InputError(f"{video.name}: no frames could be read for the background plate; check the video")
    return np.stack(frames), np.stack(free), (size[0] / reader.width, size[1] / reader.height)


def plate_camera(seq, plate_scale: tuple[float, float]) -> np.ndarray:  # -> K [3,3] of the plate's pixels
    """The source frame's intrinsics (the crop camera undone) scaled to the plate's pixels ((x, y) scales)."""
    box = np.asarray(seq.crop_box, np.float64)
    s = float(seq.resolution) / box[2]
    crop = np.array([[s, 0.0, -s * box[0]], [0.0, s, -s * box[1]], [0.0, 0.0, 1.0]])
    K_full = np.linalg.inv(crop) @ np.asarray(seq.K, np.float64)
    return np.diag([plate_scale[0], plate_scale[1], 1.0]) @ K_full


def head_depth(seq) -> float:
    """Median distance of the head's root from the camera along its axis, metres."""
    view = np.asarray(seq.viewmat, np.float64)
    cam = np.asarray(seq.transl, np.float64) @ view[:3, :3].T + view[:3, 3]
    return float(np.median(cam[:, 2]))


def build_plate(video: Path, seq, cfg: BackgroundConfig, segment: Callable[[np.ndarray], np.ndarray],
                say: Callable[[str], None], progress: Optional[Callable[[], None]] = None
                ) -> Optional[BackgroundPlate]:
    """The video's plate, or None (with the reason said) when its background moves."""
    frames, free, scale = read_samples(Path(video), cfg, segment, progress)
    found = estimate_plate(frames, free, cfg)
    if found.seen_share == 0.0:
        say("warning: a person covers every part of every sampled frame, so the background is never seen; no "
            "background plate, the avatar renders over a solid colour")
        return None
    info = {"frames": found.frames, "seen_share": round(found.seen_share, 3),
            "unsteady_share": round(found.unsteady_share, 3), "behind": cfg.behind}
    if found.moving(cfg):
        say(f"warning: the background moves ({found.unsteady_share:.0%} of it changes between frames: a moving "
            f"camera, people or a screen behind the person); no background plate, the avatar renders over a "
            f"solid colour. For a portrait with its room, film with the camera still in front of a still "
            f"background.")
        return None
    if found.seen_share < 0.2:
        say(f"note: only {found.seen_share:.0%} of the background is ever uncovered (the person fills the frame); "
            f"the rest of the plate is filled in and looks smeared where a moved camera sees it")
    depth = head_depth(seq) + cfg.behind
    return BackgroundPlate(found.image, plate_camera(seq, scale), np.asarray(seq.viewmat, np.float64), depth, info)
