"""Between viser's browser camera and the avatar's orbit controls (yaw, pitch, distance about the head).

The viser scene is the rig space (x: the subject's left, y up, z out of the face) shifted so the head
centre is the origin (the orbit target) and scaled by SCENE_SCALE, so the browser's own orbit and zoom
steps feel right for a head a few tenths of a metre away. Angles in degrees with the signs of
`avatar3d.camera.orbit_viewmat`: positive yaw moves the camera towards the subject's left (+x),
positive pitch raises it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SCENE_SCALE = 10.0  # viser units per metre


def orbit_from_position(position: Sequence[float], look_at: Sequence[float] = (0.0, 0.0, 0.0)
                        ) -> tuple[float, float, float]:
    # position, look_at: [3] viser world units
    """(yaw, pitch, distance in metres) of a viser camera at `position` orbiting `look_at`."""
    rel = np.asarray(position, dtype=np.float64) - np.asarray(look_at, dtype=np.float64)
    horizontal = math.hypot(rel[0], rel[2])
    norm = float(np.linalg.norm(rel))
    yaw = math.degrees(math.atan2(rel[0], rel[2])) if horizontal > 1e-12 else 0.0
    pitch = math.degrees(math.atan2(rel[1], horizontal))
    return yaw, pitch, norm / SCENE_SCALE


def position_from_orbit(yaw: float, pitch: float, distance: float) -> np.ndarray:  # -> [3] viser units
    """The viser camera position (look_at at the origin) for an orbit; inverse of `orbit_from_position`."""
    y, p = math.radians(yaw), math.radians(pitch)
    direction = np.array([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)])
    return direction * float(distance) * SCENE_SCALE
