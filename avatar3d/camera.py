"""Pinhole cameras: intrinsics from a field of view, look-at and orbit view matrices.

Conventions (see DESIGN.md): OpenCV camera (x right, y down, z forward), `K` 3x3 in pixels with pixel
centres at integer + 0.5, `viewmat` 4x4 world->camera. World/rig space: x towards the subject's left,
y up, z out of the face, so a camera in front of the face sits at +z and looks along -z.

Orbit angles (degrees), about `target`:
- `yaw` turns the camera about +y. Positive yaw moves the camera towards the subject's left (+x), the same
  way a positive head yaw turns the face (DESIGN.md: "a camera --yaw moves the camera the same way").
- `pitch` raises the camera: positive pitch puts the camera above the head, looking down at it.
  (Note: a positive *head* pitch makes the face look down; a positive camera pitch looks down *at* the face.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

from avatar3d.errors import InputError

Vec3 = Union[Tensor, Sequence[float]]


def _vec3(value: Vec3, name: str, dtype: torch.dtype | None, device) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.shape != (3,):
        raise InputError(f"{name} must be a 3-vector, got shape {tuple(t.shape)}; pass [x, y, z] in metres")
    return t


def intrinsics(fov_y_deg: float, width: int, height: int, *, dtype: torch.dtype = torch.float32,
               device=None) -> Tensor:
    """K [3,3] for square pixels, principal point at the image centre, vertical field of view `fov_y_deg`."""
    if not 0.0 < float(fov_y_deg) < 180.0:
        raise InputError(f"fov_y_deg={fov_y_deg} is outside (0, 180); pass a vertical field of view in degrees")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"image size {width}x{height} is not positive; pass width and height in pixels")
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def viewmat_from_pose(rot_c2w: Tensor, centre: Tensor) -> Tensor:  # rot_c2w: [3,3], centre: [3] -> [4,4]
    """World->camera 4x4 from a camera->world rotation [3,3] (columns: camera x, y, z axes) and centre [3]."""
    view = torch.zeros(4, 4, dtype=rot_c2w.dtype, device=rot_c2w.device)
    view[:3, :3] = rot_c2w.T
    view[:3, 3] = -rot_c2w.T @ centre
    view[3, 3] = 1.0
    return view


def look_at(eye: Vec3, target: Vec3, up: Vec3 = (0.0, 1.0, 0.0), *, dtype: torch.dtype | None = None,
            device=None) -> Tensor:
    # eye: [3], target: [3], up: [3] (tensors or sequences; world metres)
    """viewmat [4,4] of a camera at `eye` looking at `target`; image up (-y) points along `up` as far as possible."""
    ref = eye if isinstance(eye, Tensor) else None
    dtype = dtype or (ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
    device = device if device is not None else (ref.device if ref is not None else None)
    eye_t, target_t, up_t = (_vec3(v, n, dtype, device) for v, n in ((eye, "eye"), (target, "target"), (up, "up")))
    forward = target_t - eye_t
    if float(forward.norm()) <= 1e-12:
        raise InputError("look_at: eye and target coincide; place the camera away from the point it looks at")
    z = forward / forward.norm()
    x = torch.linalg.cross(z, up_t)  # camera right = forward x up (with y down this stays right-handed)
    if float(x.norm()) <= 1e-9 * float(up_t.norm().clamp_min(1e-30)):
        raise InputError("look_at: the view direction is parallel to `up`; pass a different up vector")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)  # camera down
    return viewmat_from_pose(torch.stack([x, y, z], dim=1), eye_t)


def _rot_x(deg: float) -> list[list[float]]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]


def _rot_y(deg: float) -> list[list[float]]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]


def orbit_viewmat(distance: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0, target: Vec3 = (0.0, 0.0, 0.0),
                  *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:  # target: [3]
    """viewmat [4,4] of a camera `distance` metres from `target`, orbiting it (angles as in the module doc).

    At yaw = pitch = 0 the camera sits at target + (0, 0, distance) looking along -z at the face. The camera
    frame is rotated rigidly (no look-at singularity at |pitch| = 90): centre =
    target + distance * (cos(pitch) sin(yaw), sin(pitch), cos(pitch) cos(yaw)).
    """
    if not float(distance) > 0.0:
        raise InputError(f"orbit distance {distance} is not positive; pass the camera distance in metres")
    target_t = _vec3(target, "target", dtype, device)
    rot = torch.tensor(_rot_y(yaw_deg), dtype=dtype, device=device) @ torch.tensor(
        _rot_x(-pitch_deg), dtype=dtype, device=device)
    frontal = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device))  # x right, y down, z = -z_world
    rot_c2w = rot @ frontal
    centre = target_t + rot[:, 2] * float(distance)
    return viewmat_from_pose(rot_c2w, centre)


def camera_centre(viewmat: Tensor) -> Tensor:  # viewmat: [4,4] or [B,4,4]
    """World position [3] (or [B,3]) of the camera: -Rᵀ t."""
    rot = viewmat[..., :3, :3]
    trans = viewmat[..., :3, 3:4]
    return -(rot.transpose(-1, -2) @ trans)[..., 0]


@dataclass
class Camera:
    """A pinhole camera: intrinsics, world->camera pose and the image size it renders."""

    K: Tensor  # [3,3] pixels, pixel centres at +0.5
    viewmat: Tensor  # [4,4] world->camera (OpenCV)
    width: int
    height: int

    @classmethod
    def orbit(cls, distance: float, fov_y_deg: float, width: int, height: int, yaw_deg: float = 0.0,
              pitch_deg: float = 0.0, target: Vec3 = (0.0, 0.0, 0.0), *, dtype: torch.dtype = torch.float32,
              device=None) -> "Camera":
        """A camera orbiting `target` (see `orbit_viewmat`) with a vertical field of view `fov_y_deg`."""
        return cls(intrinsics(fov_y_deg, width, height, dtype=dtype, device=device),
                   orbit_viewmat(distance, yaw_deg, pitch_deg, target, dtype=dtype, device=device),
                   int(width), int(height))

    @property
    def centre(self) -> Tensor:  # [3]
        return camera_centre(self.viewmat)

    def to(self, *args, **kwargs) -> "Camera":
        """Same camera with K and viewmat moved/cast like `Tensor.to`."""
        return Camera(self.K.to(*args, **kwargs), self.viewmat.to(*args, **kwargs), self.width, self.height)

    def project(self, points: Tensor) -> Tensor:  # points: [...,3] world -> [...,2] pixels
        """Pixel coordinates (x right, y down) of world points (no culling)."""
        cam = points @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        uvw = cam @ self.K.T
        return uvw[..., :2] / uvw[..., 2:3]
