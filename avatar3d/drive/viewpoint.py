"""The camera of a rendered frame: the enrolled camera, orbited about the head centre by the user's controls.

With neutral controls the camera *is* the enrolled one (same pose, same intrinsics scaled to the output
size), so a self-reenactment lines up with the real frames. Yaw and pitch rotate the camera rigidly about
the head centre in the head's own frame (yaw about the head's up axis, positive towards the subject's left;
pitch raises the camera), distance moves it along its line to the head centre, fov changes the focal length
and keeps the principal point. A camera path's keyframes override the static fields.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from avatar3d.camera import Camera, camera_centre, viewmat_from_pose
from avatar3d.drive.controls import Controls
from avatar3d.rotation import euler_to_matrix


@dataclass
class EnrolledCamera:
    """The enrollment video's camera and where the head sits in front of it."""

    K: Tensor  # [3,3] intrinsics at `resolution`
    viewmat: Tensor  # [4,4] world->camera
    resolution: int  # side of the square enrolled frames
    head_centre: Tensor  # [3] world, the orbit target
    head_rot: Tensor  # [3,3] world rotation of the head's frame (x subject's left, y up, z out of the face)

    @property
    def distance(self) -> float:
        return float((camera_centre(self.viewmat) - self.head_centre).norm())

    @property
    def fov(self) -> float:
        """Vertical field of view, degrees."""
        return math.degrees(2.0 * math.atan(0.5 * self.resolution / float(self.K[1, 1])))


def camera_fields(controls: Controls, progress: float, clip_seconds: Optional[float]) -> dict:
    """distance/distance_scale/yaw/pitch/fov/target_offset for this moment (camera path over static controls)."""
    out = {"distance": controls.distance, "distance_scale": controls.distance_scale,
           "yaw": controls.yaw + controls.orbit * float(progress), "pitch": controls.pitch, "fov": controls.fov,
           "target_offset": (0.0, 0.0, 0.0)}
    if controls.camera_path is not None:
        seconds = clip_seconds if clip_seconds else 1.0
        keyed = controls.camera_path.at(float(progress) * seconds, seconds)
        if keyed.get("distance") is not None:
            out["distance"] = float(keyed["distance"])
        elif keyed.get("distance_scale") is not None:
            out["distance"], out["distance_scale"] = None, float(keyed["distance_scale"])
        for key in ("pitch", "fov", "target_offset"):
            if keyed.get(key) is not None:
                out[key] = keyed[key]
        if keyed.get("yaw") is not None:
            out["yaw"] = float(keyed["yaw"]) + controls.orbit * float(progress)
    return out


def view_camera(enrolled: EnrolledCamera, controls: Controls, resolution: int, progress: float = 0.0,
                clip_seconds: Optional[float] = None) -> Camera:
    """The camera of one output frame (square `resolution`)."""
    c = camera_fields(controls, progress, clip_seconds)
    dtype, device = enrolled.viewmat.dtype, enrolled.viewmat.device
    H = enrolled.head_centre.to(dtype)
    rot_c2w = enrolled.viewmat[:3, :3].T
    centre = camera_centre(enrolled.viewmat)
    # orbit in the head frame: R_orbit = R_head · R_y(yaw) · R_x(-pitch) · R_headᵀ
    local = euler_to_matrix(torch.tensor(float(c["yaw"]), dtype=dtype), torch.tensor(-float(c["pitch"]), dtype=dtype),
                            torch.tensor(0.0, dtype=dtype)).to(device)
    R_orbit = enrolled.head_rot @ local @ enrolled.head_rot.T
    offset = centre - H
    distance = float(c["distance"]) if c["distance"] is not None else float(offset.norm()) * float(c["distance_scale"])
    target = H + enrolled.head_rot @ torch.as_tensor(c["target_offset"], dtype=dtype, device=device)
    new_centre = target + R_orbit @ (offset / offset.norm()) * distance
    viewmat = viewmat_from_pose(R_orbit @ rot_c2w, new_centre)
    K = enrolled.K.clone() * (resolution / enrolled.resolution)
    K[2, 2] = 1.0
    if c["fov"] is not None:
        f = 0.5 * resolution / math.tan(math.radians(float(c["fov"])) / 2.0)
        K[0, 0] = K[1, 1] = f
    return Camera(K, viewmat, int(resolution), int(resolution))
