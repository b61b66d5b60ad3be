"""Pinhole camera helpers: intrinsics, look-at, orbit conventions, camera centre."""
from __future__ import annotations

import math

import pytest
import torch

from avatar3d.camera import Camera, camera_centre, intrinsics, look_at, orbit_viewmat
from avatar3d.errors import InputError


def _project(view, K, points):  # points: [N,3] -> ([N,2] pixels, [N] depth)
    cam = points @ view[:3, :3].T + view[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:3], cam[:, 2]


def test_intrinsics_field_of_view(seed):
    w, h = 64 + seed % 200, 48 + seed % 100
    K = intrinsics(20.0, w, h)
    # A point at the top edge of the field of view lands on the image's top border.
    z = 0.6
    top = torch.tensor([[0.0, -z * math.tan(math.radians(10.0)), z]])
    uv, _ = _project(torch.eye(4), K, top)
    assert abs(float(uv[0, 1])) < 1e-4 and abs(float(uv[0, 0]) - w / 2) < 1e-4
    assert K[0, 0] == K[1, 1] and K[2, 2] == 1
    with pytest.raises(InputError):
        intrinsics(180.0, w, h)
    with pytest.raises(InputError):
        intrinsics(20.0, 0, h)


def test_look_at_is_a_proper_rigid_transform(seed):
    gen = torch.Generator().manual_seed(seed)
    eye = torch.randn(3, generator=gen, dtype=torch.float64)
    target = torch.randn(3, generator=gen, dtype=torch.float64)
    view = look_at(eye, target)
    rot = view[:3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64))
    assert abs(float(torch.linalg.det(rot)) - 1.0) < 1e-12
    torch.testing.assert_close(camera_centre(view), eye)
    # The target is straight ahead (+z) at its distance; world up is image up (camera -y).
    cam_target = rot @ target + view[:3, 3]
    torch.testing.assert_close(cam_target[:2], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(cam_target[2], (target - eye).norm())
    assert float((rot @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))[1]) <= 0
    with pytest.raises(InputError):
        look_at(eye, eye)
    with pytest.raises(InputError):
        look_at((0.0, 0.0, 0.0), (0.0, 2.0, 0.0))  # looking along up


def test_frontal_orbit_sees_the_face_unmirrored():
    # Rig space: x = subject's left, y up, z out of the face. From the front the subject's left is on image right.
    view = orbit_viewmat(0.6)
    K = intrinsics(20.0, 100, 100)
    pts = torch.tensor([[0.05, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 0.0, 0.05]])
    uv, depth = _project(view, K, pts)
    assert uv[0, 0] > 50  # subject's left -> image right
    assert uv[1, 1] < 50  # up -> image top (y down)
    assert depth[2] < depth[0]  # the nose (+z) is nearer than the ear
    torch.testing.assert_close(camera_centre(view), torch.tensor([0.0, 0.0, 0.6]))


def test_orbit_angles_follow_the_conventions(seed):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(3, generator=gen, dtype=torch.float64) * 0.1
    yaw = float(torch.rand(1, generator=gen)) * 160 - 80
    pitch = float(torch.rand(1, generator=gen)) * 160 - 80
    dist = 0.3 + float(torch.rand(1, generator=gen))
    view = orbit_viewmat(dist, yaw, pitch, target, dtype=torch.float64)
    centre = camera_centre(view)
    torch.testing.assert_close((centre - target).norm(), torch.tensor(dist, dtype=torch.float64))
    # Positive yaw: towards the subject's left (+x); positive pitch: above (+y).
    assert math.copysign(1.0, float(centre[0] - target[0])) == math.copysign(1.0, yaw)
    assert math.copysign(1.0, float(centre[1] - target[1])) == math.copysign(1.0, pitch)
    # It looks at the target and agrees with look_at (world up stays image up).
    torch.testing.assert_close(view, look_at(centre, target, dtype=torch.float64), atol=1e-12, rtol=0)


def test_camera_yaw_matches_head_yaw(seed):
    """Rotating the head by +yaw about y and the camera by +yaw around it leaves the image unchanged."""
    yaw = float(torch.rand(1)) * 120 - 60
    c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    head_rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)  # +yaw: face turns to +x
    pts = torch.randn(20, 3, dtype=torch.float64) * 0.05
    K = intrinsics(20.0, 64, 64, dtype=torch.float64)
    uv0, _ = _project(orbit_viewmat(0.6, dtype=torch.float64), K, pts)
    uv1, _ = _project(orbit_viewmat(0.6, yaw, dtype=torch.float64), K, pts @ head_rot.T)
    torch.testing.assert_close(uv0, uv1)
    nose = head_rot @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert float(nose[0]) * yaw > 0  # the face turned towards the subject's left


def test_straight_down_orbit_is_well_defined():
    view = orbit_viewmat(1.0, 30.0, 90.0)
    assert torch.isfinite(view).all()
    torch.testing.assert_close(camera_centre(view), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_camera_dataclass(seed):
    cam = Camera.orbit(0.6, 20.0, 32, 24, yaw_deg=10.0, dtype=torch.float64)
    assert (cam.width, cam.height) == (32, 24)
    pts = torch.randn(5, 3, dtype=torch.float64) * 0.05
    torch.testing.assert_close(cam.project(pts), _project(cam.viewmat, cam.K, pts)[0])
    torch.testing.assert_close(cam.centre, camera_centre(cam.viewmat))
    assert cam.to(torch.float32).K.dtype == torch.float32
    batch = torch.stack([cam.viewmat, orbit_viewmat(2.0, dtype=torch.float64)])
    assert camera_centre(batch).shape == (2, 3)
    with pytest.raises(InputError):
        orbit_viewmat(0.0)
