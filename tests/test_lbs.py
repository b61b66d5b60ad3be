"""LBS against an independent float64 numpy reference, and what each joint moves on the synthetic rig."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatar3d.errors import InputError
from avatar3d.head.lbs import landmarks, pose_vertices
from avatar3d.head.rig import JOINT_PARENTS, LandmarkEmbedding, RigParams
from avatar3d.head.synthetic import synthetic_rig


@pytest.fixture(scope="module")
def rig():
    return synthetic_rig()


def reference_lbs(rig, shape, expr, pose, transl):
    """FLAME's lbs written out per frame with numpy/scipy in float64 (no code shared with lbs.py)."""
    T = rig.template.double().numpy()
    SB = rig.shape_basis.double().numpy()
    EB = rig.expr_basis.double().numpy()
    JR = rig.joint_regressor.double().numpy()
    W = rig.lbs_weights.double().numpy()
    PC = rig.pose_correctives.double().numpy()
    out, joints_out = [], []
    for b in range(pose.shape[0]):
        v = T + SB @ shape[b] + EB @ expr[b]
        J = JR @ v
        Rs = [Rotation.from_rotvec(pose[b, j]).as_matrix() for j in range(5)]
        feat = np.concatenate([(Rs[j] - np.eye(3)).ravel() for j in range(1, 5)])
        v = v + PC @ feat
        G = []
        for j in range(5):
            local = np.eye(4)
            local[:3, :3] = Rs[j]
            p = JOINT_PARENTS[j]
            local[:3, 3] = J[j] - (J[p] if p >= 0 else 0)
            G.append(local if p < 0 else G[p] @ local)
        A = []
        for j in range(5):
            a = G[j].copy()
            a[:3, 3] -= G[j][:3, :3] @ J[j]
            A.append(a)
        posed = np.zeros_like(v)
        for j in range(5):
            posed += W[:, j:j + 1] * (v @ A[j][:3, :3].T + A[j][:3, 3])
        out.append(posed + transl[b])
        joints_out.append(np.array([G[j][:3, 3] for j in range(5)]) + transl[b])
    return np.stack(out), np.stack(joints_out)


def random_params(rig, batch, dtype, g, shared_shape=False):
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return RigParams(
        shape=r(rig.num_shape) if shared_shape else r(batch, rig.num_shape),
        expr=torch.rand(batch, rig.num_expr, generator=g, dtype=torch.float64),
        global_rot=0.3 * r(batch, 3), neck=0.3 * r(batch, 3), jaw=0.2 * r(batch, 3),
        eyes=0.25 * r(batch, 2, 3), transl=0.05 * r(batch, 3),
    ).map(lambda t: t.to(dtype))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
def test_matches_float64_reference(rig, seed, dtype, tol):
    g = torch.Generator().manual_seed(seed)
    p = random_params(rig, 3, dtype, g)
    verts, joints = pose_vertices(rig, p, return_joints=True)
    assert verts.shape == (3, rig.num_vertices, 3) and verts.dtype == dtype
    pd = p.map(lambda t: t.double().numpy())
    pose = np.concatenate([pd.global_rot[:, None], pd.neck[:, None], pd.jaw[:, None], pd.eyes], 1)  # [B,5,3]
    ref_v, ref_j = reference_lbs(rig, pd.shape, pd.expr, pose, pd.transl)
    np.testing.assert_allclose(verts.double().numpy(), ref_v, atol=tol)
    np.testing.assert_allclose(joints.double().numpy(), ref_j, atol=tol)


def test_shared_identity_broadcasts(rig, seed):
    g = torch.Generator().manual_seed(seed)
    p = random_params(rig, 2, torch.float64, g, shared_shape=True)
    a = pose_vertices(rig, p)
    b = pose_vertices(rig, RigParams(p.shape.expand(2, -1), p.expr, p.global_rot, p.neck, p.jaw, p.eyes, p.transl))
    torch.testing.assert_close(a, b)


def test_gradients_reach_every_parameter(rig, seed):
    g = torch.Generator().manual_seed(seed)
    p = random_params(rig, 2, torch.float32, g).map(lambda t: t.clone().requires_grad_(True))
    verts, joints = pose_vertices(rig, p, return_joints=True)
    (verts.square().sum() + joints.sum()).backward()
    for name in ("shape", "expr", "global_rot", "neck", "jaw", "eyes", "transl"):
        grad = getattr(p, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def _moved(rig, **pose):
    p = RigParams.zeros(rig, 1, dtype=torch.float64)
    for k, v in pose.items():
        getattr(p, k)[0] = torch.as_tensor(v, dtype=torch.float64)
    rest = pose_vertices(rig, RigParams.zeros(rig, 1, dtype=torch.float64))[0]
    return (pose_vertices(rig, p)[0] - rest).norm(dim=-1)


def test_eye_rotation_moves_only_eyeball_and_eyelids(rig, seed):
    g = torch.Generator().manual_seed(seed)
    aa = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0) * 0.3
    for k, side in ((0, "left"), (1, "right")):
        eyes = torch.zeros(2, 3, dtype=torch.float64)
        eyes[k] = aa
        d = _moved(rig, eyes=eyes)
        moved = d > 1e-9
        allowed = rig.region(f"eyeball_{side}") | rig.region("eyelids")
        assert moved.any() and not (moved & ~allowed).any()
        assert (d[rig.region(f"eyeball_{side}")] > 0).float().mean() > 0.9  # the eyeball turns
        other = "right" if side == "left" else "left"
        assert (d[rig.region(f"eyeball_{other}")] == 0).all()
        assert d[rig.region("eyelids")].max() > 1e-3  # lids follow the gaze


def test_jaw_moves_chin_not_forehead(rig):
    d = _moved(rig, jaw=[0.3, 0.0, 0.0])
    chin = int(rig.landmarks_68[8])
    assert d[chin] > 0.015
    v = rig.template
    forehead = rig.region("face") & (v[:, 1] > 0.06)
    assert forehead.sum() > 20 and d[forehead].max() == 0
    assert d[rig.region("eyeball_left") | rig.region("eyeball_right")].max() == 0


def test_neck_rotation_is_rigid_about_the_neck_joint(rig, seed):
    g = torch.Generator().manual_seed(seed)
    aa = torch.randn(3, generator=g, dtype=torch.float64) * 0.3
    p = RigParams.zeros(rig, 1, dtype=torch.float64)
    p.neck[0] = aa
    verts, joints = pose_vertices(rig, p, return_joints=True)
    rest, rest_j = pose_vertices(rig, RigParams.zeros(rig, 1, dtype=torch.float64), return_joints=True)
    head = rig.lbs_weights[:, 1] == 1
    assert head.sum() > 1000
    R = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    c = rest_j[0, 1]
    expected = (rest[0, head] - c) @ R.T + c
    torch.testing.assert_close(verts[0, head], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(joints[0, :2], rest_j[0, :2])  # root and neck stay where they are


def test_translation_translates(rig, seed):
    g = torch.Generator().manual_seed(seed)
    p = random_params(rig, 2, torch.float64, g)
    v0, j0 = pose_vertices(rig, p, return_joints=True)
    t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    p.transl = p.transl + t
    v1, j1 = pose_vertices(rig, p, return_joints=True)
    torch.testing.assert_close(v1 - v0, t[:, None].expand_as(v0))
    torch.testing.assert_close(j1 - j0, t[:, None].expand_as(j0))


def test_bad_params_and_landmarks(rig):
    p = RigParams.zeros(rig, 2)
    p.expr = torch.zeros(2, rig.num_expr + 1)
    with pytest.raises(InputError, match="expr"):
        pose_vertices(rig, p)
    verts = pose_vertices(rig, RigParams.zeros(rig, 2))
    emb_rig = rig.to()
    emb_rig.landmarks_mp = None
    with pytest.raises(InputError, match="embedding"):
        landmarks(emb_rig, verts)
    emb_rig.landmarks_mp = LandmarkEmbedding(torch.tensor([0, 5]), torch.tensor([[1.0, 0, 0], [0.2, 0.3, 0.5]]))
    lm = landmarks(emb_rig, verts)
    f = rig.faces[5]
    expected = 0.2 * verts[:, f[0]] + 0.3 * verts[:, f[1]] + 0.5 * verts[:, f[2]]
    torch.testing.assert_close(lm[:, 1], expected)
    assert lm.shape == (2, 2, 3)


def test_identity_is_computed_once_per_person_and_follows_a_new_one(rig, seed):
    # the template + identity shapes are kept between frames of one identity; a new identity, or one that
    # needs its gradient, is computed afresh
    from avatar3d.head.lbs import shaped_vertices

    g = torch.Generator().manual_seed(seed)
    expr = torch.randn(2, rig.num_expr, generator=g, dtype=torch.float64)

    def direct(shape):
        return (rig.template.double()[None] + torch.einsum("s,vcs->vc", shape, rig.shape_basis.double())[None]
                + torch.einsum("be,vce->bvc", expr, rig.expr_basis.double()))

    for _ in range(2):
        shape = torch.randn(rig.num_shape, generator=g, dtype=torch.float64)
        for _ in range(2):  # the second call takes the kept identity
            torch.testing.assert_close(shaped_vertices(rig, shape, expr), direct(shape))
    shape = shape.clone().requires_grad_()
    shaped_vertices(rig, shape, expr).sum().backward()
    assert shape.grad is not None and shape.grad.abs().sum() > 0
