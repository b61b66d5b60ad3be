"""The background plate: a picture of the room behind the person, placed as a plane in 3D and seen by any camera.

An enrollment estimates the plate from its video (training/background.py): a clean image of the background as the
video's camera saw it, over the whole source frame. Here it is a plane fronto-parallel to that camera at `depth`
metres along its axis. A plane maps into any other pinhole camera by a homography, so rendering it is one
perspective warp: the enrolled camera sees the video's own background pixel for pixel, and a moved or orbiting
camera sees it with the parallax of a wall `depth` metres away. Where a camera looks past the plate's edges the
picture is mirrored at its border (a continuation, not a black band).

Files (owned here): `AVATAR/background.png` (the plate, RGB) and `AVATAR/background.json` (its intrinsics `K`
for the PNG's pixels, the enrolled camera's `viewmat`, `depth`, and how it was estimated).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json

PLATE_PNG = "background.png"
PLATE_JSON = "background.json"
PLATE_VERSION = 1


@dataclass
class BackgroundPlate:
    """A background picture on a plane in front of the camera that took it."""

    image: np.ndarray  # [H,W,3] uint8 RGB
    K: np.ndarray  # [3,3] intrinsics of `image`'s pixels (pixel centres at +0.5)
    viewmat: np.ndarray  # [4,4] world->camera of the camera that saw it (the enrollment's)
    depth: float
    """Metres from that camera to the plane along its optical axis (the room's back wall, assumed)."""
    info: dict[str, Any] = field(default_factory=dict)
    """How it was estimated (frames sampled, share of the picture seen rather than filled in)."""

    def __post_init__(self) -> None:
        self._mean = None  # mean_colour, computed once
        self._seen = None  # (camera key, the plate it saw, uint8): the one-camera cache of `view` and `render`
        self._last_key = None  # the camera of the last `worth_keeping`
        self.image = np.asarray(self.image)
        if not self.image.flags.writeable or not self.image.flags.c_contiguous:  # composited every frame as it is
            self.image = np.ascontiguousarray(self.image).copy()
        self.K = np.asarray(self.K, np.float64)
        self.viewmat = np.asarray(self.viewmat, np.float64)
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise InputError(f"a background plate is a uint8 RGB image [H,W,3], got {self.image.dtype} "
                             f"{self.image.shape}")
        if self.K.shape != (3, 3) or self.viewmat.shape != (4, 4):
            raise InputError(f"a background plate needs K [3,3] and viewmat [4,4], got {self.K.shape} and "
                             f"{self.viewmat.shape}")
        if not (np.isfinite(self.depth) and self.depth > 0):
            raise InputError(f"the plate's depth must be a positive number of metres, got {self.depth}")
        self._inv_viewmat, self._inv_K = np.linalg.inv(self.viewmat), np.linalg.inv(self.K)  # used every frame

    def homography(self, K: Any, viewmat: Any) -> np.ndarray:  # K: [3,3], viewmat: [4,4] -> [3,3]
        """Plate pixel (continuous, homogeneous) -> pixel of the camera (K, viewmat).

        A plate pixel p lies at X_e = depth · K_e⁻¹ p in the enrolled camera's coordinates (its third
        coordinate is `depth`); the other camera sees R_rel X_e + t_rel, with (R_rel, t_rel) = viewmat ·
        viewmat_e⁻¹. As p's third component is 1, t_rel = t_rel · e3ᵀ p, so the whole map is linear in p."""
        rel = np.asarray(viewmat, np.float64) @ self._inv_viewmat
        R, t = rel[:3, :3], rel[:3, 3:4]
        e3 = np.array([[0.0, 0.0, 1.0]])
        return np.asarray(K, np.float64) @ (self.depth * R @ self._inv_K + t @ e3)

    def pixel_map(self, K: Any, viewmat: Any, width: int, height: int) -> np.ndarray | None:
        # K: [3,3], viewmat: [4,4] -> [3,3] or None
        """Pixel of the camera (K, viewmat, width x height) -> plate pixel, both with centres at +0.5 (the
        inverse of `homography`); None when the camera is behind the plane or looks away from it (the warp
        would fold: such a camera sees `mean_colour`)."""
        K, viewmat = _numpy(K), _numpy(viewmat)
        if not self._in_front(K, viewmat, width, height):
            return None
        return np.linalg.inv(self.homography(K, viewmat))

    def view(self, K: Any, viewmat: Any, width: int, height: int) -> tuple[np.ndarray, np.ndarray, tuple | None] | None:
        """How a frame composites the plate for this camera (render/finish.py): (picture [h,w,3] uint8, its pixel
        map [3,3], the camera's key for `remember`, or None when there is nothing new to remember), or None when the
        camera does not see the plane (`mean_colour`). A camera that has not moved since the last `remember` gets
        the picture it saw then, pixel for pixel (the identity map): the plate is not sampled again."""
        K, viewmat = _numpy(K), _numpy(viewmat)
        key = (int(width), int(height), K.tobytes(), viewmat.tobytes())
        seen = self._seen
        if seen is not None and seen[0] == key:
            return seen[1], np.eye(3), None
        to_plate = self.pixel_map(K, viewmat, width, height)
        return None if to_plate is None else (self.image, to_plate, key)

    def worth_keeping(self, key: tuple) -> bool:
        """Whether a frame by the camera `key` (from `view`) should keep what it sees: yes when the last frame asked
        about had the same camera (a camera that stays is kept from its second frame on), no for a camera that moves
        every frame (keeping samples the whole plate; otherwise the pixels the person hides are skipped)."""
        again = key == self._last_key
        self._last_key = key
        return again

    def remember(self, key: tuple, seen: np.ndarray) -> None:  # seen: [H,W,3] uint8
        """Keep what the camera `key` (from `view`) saw, for its next frames."""
        self._seen = (key, seen)

    def mean_colour(self) -> np.ndarray:  # -> [3] uint8
        """The plate's mean colour (what a camera that does not see the plane gets)."""
        if self._mean is None:
            self._mean = self.image.reshape(-1, 3).mean(0).round().astype(np.uint8)
        return self._mean

    def render(self, K: Any, viewmat: Any, width: int, height: int) -> np.ndarray:  # -> [height,width,3] uint8
        """The plate as the camera (K [3,3], viewmat [4,4], width x height) sees it, sampled as a rendered frame
        samples it (render/finish.py). A camera behind the plane or looking away from it sees the plate's mean
        colour."""
        import torch

        from avatar3d.render.finish import finish_frame

        view = self.view(K, viewmat, width, height)
        if view is None:
            return np.broadcast_to(self.mean_colour(), (int(height), int(width), 3)).copy()
        picture, to_picture, key = view
        if key is None:  # a still camera: what it saw last time
            return picture.copy()
        nothing = torch.zeros(int(height), int(width), 3), torch.zeros(int(height), int(width), 1)
        _, _, seen = finish_frame(*nothing, picture, to_picture, keep_seen=True)
        self.remember(key, seen)
        return seen.copy()

    def _in_front(self, K: np.ndarray, viewmat: np.ndarray, width: int, height: int) -> bool:
        """Whether every corner ray of the camera meets the plane in front of the camera (else the warp folds)."""
        rel = self.viewmat @ np.linalg.inv(viewmat)  # camera -> enrolled camera
        centre = rel[:3, 3]
        corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64)
        dirs = (rel[:3, :3] @ np.linalg.inv(K) @ corners.T).T  # [4,3] in the enrolled camera's frame
        if np.any(dirs[:, 2] <= 1e-9) or centre[2] >= self.depth:
            return False
        return bool(np.all((self.depth - centre[2]) / dirs[:, 2] > 0))

    # ------------------------------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        """Write background.png and background.json into `folder` (each atomically; the JSON last, so a plate is
        complete once its JSON exists)."""
        from io import BytesIO

        from PIL import Image

        buf = BytesIO()
        Image.fromarray(self.image).save(buf, format="PNG")
        folder = Path(folder)
        atomic_write_bytes(folder / PLATE_PNG, buf.getvalue())
        atomic_write_json(folder / PLATE_JSON, {
            "version": PLATE_VERSION, "image": PLATE_PNG, "width": int(self.image.shape[1]),
            "height": int(self.image.shape[0]), "K": self.K.tolist(), "viewmat": self.viewmat.tolist(),
            "depth": float(self.depth), "info": self.info})


def load_plate(folder: Path) -> BackgroundPlate | None:
    """The avatar's plate, or None when it has none (enrolled before plates, or its background moved)."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    meta_path, png_path = folder / PLATE_JSON, folder / PLATE_PNG
    if not meta_path.is_file():
        return None
    fix = f"re-enroll, or delete {PLATE_JSON} and {PLATE_PNG} in the avatar folder {folder.name} to render without it"
    try:
        meta = json.loads(meta_path.read_text())
        with Image.open(png_path) as img:
            image = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, UnidentifiedImageError):
        raise InputError(f"the avatar's background plate ({PLATE_JSON} and {PLATE_PNG}) is unreadable; {fix}"
                         ) from None
    if not isinstance(meta, dict):
        raise InputError(f"{PLATE_JSON} is not a JSON object; {fix}")
    if image.shape[:2] != (meta.get("height"), meta.get("width")):
        raise InputError(f"{PLATE_PNG} is {image.shape[1]}x{image.shape[0]} but {PLATE_JSON} says "
                         f"{meta.get('width')}x{meta.get('height')}; {fix}")
    try:
        return BackgroundPlate(image, np.array(meta["K"]), np.array(meta["viewmat"]), float(meta["depth"]),
                               dict(meta.get("info", {})))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{PLATE_JSON} lacks a valid field ({err}); {fix}") from None


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value, np.float64)
