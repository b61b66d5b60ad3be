"""Rotations: round trips, agreement with scipy, stability near zero, head-pose Euler conventions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatar3d import rotation as rot


def _random_axis_angle(n, dtype, max_angle=np.pi - 1e-3):
    axis = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, dtype=torch.float64) * max_angle
    return (axis * angle).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_matrix_matches_scipy_and_round_trips(seed, dtype):
    aa = _random_axis_angle(64, dtype)
    R = rot.axis_angle_to_matrix(aa)
    assert R.dtype == dtype and R.shape == (64, 3, 3)
    ref = Rotation.from_rotvec(aa.double().numpy()).as_matrix()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(R.double().numpy(), ref, atol=tol)
    back = rot.matrix_to_axis_angle(R)
    np.testing.assert_allclose(back.double().numpy(), aa.double().numpy(), atol=100 * tol)


def test_quaternion_round_trip_and_scipy_order(seed):
    aa = _random_axis_angle(50, torch.float64, max_angle=np.pi)
    q = rot.axis_angle_to_quaternion(aa)
    ref = Rotation.from_rotvec(aa.numpy()).as_quat()  # scipy: (x, y, z, w)
    ref = np.concatenate([ref[:, 3:], ref[:, :3]], 1)
    ref *= np.sign(ref[:, :1])
    np.testing.assert_allclose(q.numpy() * np.sign(q[:, :1].numpy()), ref, atol=1e-12)
    R = rot.quaternion_to_matrix(q)
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-12)
    q2 = rot.matrix_to_quaternion(R)
    assert (q2[:, 0] >= 0).all()
    np.testing.assert_allclose(torch.abs((q2 * q).sum(-1)).numpy(), 1.0, atol=1e-12)  # same rotation up to sign
    np.testing.assert_allclose(rot.quaternion_to_axis_angle(q).numpy(), aa.numpy(), atol=1e-9)


def test_matrix_to_quaternion_near_180_degrees(seed):
    axis = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    aa = axis * (np.pi - 1e-7)
    R = rot.axis_angle_to_matrix(aa)
    R2 = rot.quaternion_to_matrix(rot.matrix_to_quaternion(R))
    np.testing.assert_allclose(R2.numpy(), R.numpy(), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_and_differentiable_at_zero(dtype):
    tiny = torch.tensor([[0.0, 0.0, 0.0], [1e-9, -2e-9, 3e-9], [1e-5, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    R = rot.axis_angle_to_matrix(tiny)
    assert torch.isfinite(R).all()
    np.testing.assert_allclose(R[0].detach().numpy(), np.eye(3), atol=0)
    # d R / d aa_k at 0 is the cross-product generator of axis k
    jac = torch.autograd.functional.jacobian(lambda a: rot.axis_angle_to_matrix(a), torch.zeros(3, dtype=dtype))
    gen_x = np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
    np.testing.assert_allclose(jac[..., 0].numpy(), gen_x, atol=1e-6)
    R.sum().backward()
    assert torch.isfinite(tiny.grad).all()
    back = rot.matrix_to_axis_angle(R.detach().double())
    np.testing.assert_allclose(back.numpy(), tiny.detach().double().numpy(), atol=1e-7 if dtype == torch.float32 else 1e-15)
    q = torch.zeros(2, 4, dtype=dtype)
    q[:, 0] = 1.0
    q.requires_grad_(True)
    rot.quaternion_to_axis_angle(q).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_euler_conventions_follow_design():
    forward = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # the face looks along +z
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    # positive yaw: the face turns towards the subject's left (+x)
    f = rot.euler_to_matrix(30.0, 0.0, 0.0).double() @ forward
    assert f[0] > 0.49 and abs(f[1]) < 1e-12
    # positive pitch: the face looks down (-y)
    f = rot.euler_to_matrix(0.0, 20.0, 0.0).double() @ forward
    assert f[1] < -0.34 and abs(f[0]) < 1e-12
    # positive roll (about +z, right-handed): the top of the head goes towards the subject's right (-x)
    u = rot.euler_to_matrix(0.0, 0.0, 15.0).double() @ up
    assert u[0] < -0.25
    # the composition order R_y R_x R_z is documented; check it explicitly against scipy
    ref = Rotation.from_euler("YXZ", [40.0, -25.0, 10.0], degrees=True).as_matrix()
    np.testing.assert_allclose(rot.euler_to_matrix(40.0, -25.0, 10.0).double().numpy(), ref, atol=1e-6)


def test_euler_round_trip_batched(seed):
    g = torch.Generator().manual_seed(seed)
    ypr = torch.stack([torch.rand(30, generator=g, dtype=torch.float64) * 340 - 170,
                       torch.rand(30, generator=g, dtype=torch.float64) * 170 - 85,
                       torch.rand(30, generator=g, dtype=torch.float64) * 340 - 170], -1)
    aa = rot.euler_to_axis_angle(ypr[:, 0], ypr[:, 1], ypr[:, 2])
    assert aa.shape == (30, 3) and aa.dtype == torch.float64
    np.testing.assert_allclose(rot.axis_angle_to_euler(aa).numpy(), ypr.numpy(), atol=1e-8)


def test_angle_between(seed):
    axis = torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0)
    a = axis * np.radians(10.0)
    b = axis * np.radians(25.0)
    assert float(rot.angle_between_axis_angles(a, b)) == pytest.approx(15.0, abs=1e-9)
    # tiny angles are resolved (acos of the trace would return 0 here)
    c = a + torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0) * 1e-9
    d = float(rot.angle_between_axis_angles(a, c))
    assert 0 < d < 1e-6
    R = rot.axis_angle_to_matrix(_random_axis_angle(8, torch.float64))
    assert torch.allclose(rot.angle_between_matrices(R, R), torch.zeros(8, dtype=torch.float64), atol=1e-6)
    flip = rot.axis_angle_to_matrix(torch.tensor([0.0, np.pi, 0.0], dtype=torch.float64))
    assert float(rot.angle_between_matrices(torch.eye(3, dtype=torch.float64), flip)) == pytest.approx(180.0, abs=1e-6)
