"""The synthetic rig: deterministic, head-sized, face-like, rigged like FLAME."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import NUM_JOINTS, HeadRig, RigParams
from avatar3d.head.synthetic import EXPR_NAMES, UV_ATLAS, synthetic_rig


@pytest.fixture(scope="module")
def rig():
    return synthetic_rig()


def _pose(rig, **kw):
    p = RigParams.zeros(rig, 1, dtype=torch.float64)
    for k, v in kw.items():
        target = getattr(p, k)
        if k == "expr":
            for name, value in v.items():
                target[0, rig.expr_names.index(name)] = value
        else:
            target[0] = torch.as_tensor(v, dtype=torch.float64)
    return pose_vertices(rig, p)[0]


def test_deterministic_and_well_formed(rig):
    again = synthetic_rig()
    for name in ("template", "faces", "shape_basis", "expr_basis", "joint_regressor", "lbs_weights",
                 "pose_correctives", "uvs", "face_uvs", "landmarks_68"):
        assert torch.equal(getattr(rig, name), getattr(again, name)), name
    assert 2000 < rig.num_vertices < 10000
    assert rig.template.dtype == torch.float32 and rig.faces.dtype == torch.int64
    f = rig.faces
    assert f.min() >= 0 and f.max() < rig.num_vertices
    v = rig.template.double()
    area = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]).norm(dim=1)
    assert area.min() > 0  # no degenerate triangles
    torch.testing.assert_close(rig.lbs_weights.sum(1), torch.ones(rig.num_vertices))
    assert rig.lbs_weights.min() >= 0
    torch.testing.assert_close(rig.joint_regressor.sum(1), torch.ones(NUM_JOINTS))
    assert rig.expr_names == list(EXPR_NAMES) and rig.num_shape >= 3 and rig.num_expr >= 5


def test_skin_triangles_face_outwards(rig):
    v = rig.template.double()
    skin = ~(rig.region("mouth_interior") | rig.region("teeth") | rig.region("eyeball_left")
             | rig.region("eyeball_right") | rig.region("helper"))
    f = rig.faces[skin[rig.faces].all(1)]
    n = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centre = torch.tensor([0.0, 0.0, -0.02], dtype=torch.float64)
    outward = ((n * (v[f].mean(1) - centre)).sum(1) > 0).double().mean()
    assert outward > 0.97
    for side in ("left", "right"):  # eyeballs: every triangle outwards from the eye centre
        m = rig.region(f"eyeball_{side}")
        fe = rig.faces[m[rig.faces].all(1)]
        c = v[m].mean(0)
        ne = torch.linalg.cross(v[fe[:, 1]] - v[fe[:, 0]], v[fe[:, 2]] - v[fe[:, 0]])
        assert ((ne * (v[fe].mean(1) - c)).sum(1) > 0).all()


def test_head_proportions_and_face_points(rig):
    v = rig.template
    joints = rig.joint_regressor @ v
    height = float(v[:, 1].max() - v[rig.region("face"), 1].min())
    assert 0.18 < height < 0.25  # crown to chin, metres
    eye_l, eye_r = joints[3], joints[4]
    assert eye_l[0] > 0 > eye_r[0]  # the subject's left eye is at +x
    assert 0.055 < float((eye_l - eye_r).norm()) < 0.07
    lm = rig.landmarks_68
    nose_tip = int(lm[30])
    assert nose_tip == int(v[:, 2].argmax())  # the nose tip is the most forward point
    assert v[lm[36], 0] < v[lm[39], 0] < 0 < v[lm[42], 0] < v[lm[45], 0]  # eye corners, right to left
    assert v[lm[48], 0] < 0 < v[lm[54], 0] and v[lm[8], 1] < v[lm[57], 1] < v[lm[30], 1] < v[lm[27], 1]
    # joints: root < neck < jaw < eyes in height; eyes sit at their eyeball centres
    assert joints[0, 1] < joints[1, 1] < joints[2, 1] < joints[3, 1]
    for side, j in (("left", 3), ("right", 4)):
        r = (v[rig.region(f"eyeball_{side}")] - joints[j]).norm(dim=1)
        assert float(r.max() - r.min()) < 1e-5 and 0.01 < float(r.mean()) < 0.015


def test_regions(rig):
    names = ("face", "lips", "eyelids", "brows", "scalp", "neck", "mouth_interior", "teeth",
             "eyeball_left", "eyeball_right", "helper")
    for name in names:
        assert rig.region(name).any(), name
    face = rig.region("face")
    for sub in ("lips", "eyelids", "brows"):
        assert not (rig.region(sub) & ~face).any(), sub
    eyes = rig.region("eyeball_left") | rig.region("eyeball_right")
    assert not (eyes & (face | rig.region("scalp") | rig.region("neck"))).any()
    helper_faces = rig.region("helper")[rig.faces].any(1)
    assert helper_faces.any() and not (rig.renderable_faces() & helper_faces).any()
    assert rig.renderable_faces().sum() == rig.num_faces - helper_faces.sum()


def test_mouth_opens_with_the_jaw(rig):
    lm = rig.landmarks_68
    upper, lower = int(lm[62]), int(lm[66])  # inner lip centres
    rest = _pose(rig)
    assert float((rest[upper] - rest[lower]).norm()) < 1e-6  # closed at rest (a slit)
    opened = _pose(rig, jaw=[0.3, 0.0, 0.0])
    gap = float(opened[upper, 1] - opened[lower, 1])
    assert gap > 0.012
    teeth_lower = rig.region("teeth") & (rig.lbs_weights[:, 2] == 1)
    teeth_upper = rig.region("teeth") & (rig.lbs_weights[:, 1] == 1)
    assert teeth_lower.any() and teeth_upper.any()
    assert float((opened[teeth_lower] - rest[teeth_lower]).norm(dim=1).min()) > 0.003


def test_blink_closes_the_eye_and_lids_follow_gaze(rig):
    joints = rig.joint_regressor.double() @ rig.template.double()
    for tag, side, j in (("L", "left", 3), ("R", "right", 4)):
        eye = rig.region(f"eyeball_{side}")
        radius = float((rig.template[eye].double() - joints[j]).norm(dim=1).max())
        lids = rig.region("eyelids") & ((rig.template[:, 0] > 0) == (side == "left"))
        for verts, closed in ((_pose(rig), False), (_pose(rig, expr={f"eyeBlink_{tag}": 1.0}), True)):
            rel = verts[lids] - joints[j]
            in_front = (rel[:, :2].norm(dim=1) < 0.8 * radius)  # skin over the eyeball's front
            behind = (rel[in_front].norm(dim=1) < radius) | (rel[in_front, 2] < 0)
            assert behind.any() != closed  # open: some skin is behind the eye; closed: none
    lids = rig.region("eyelids") & (rig.template[:, 1] > joints[3, 1].float() + 0.004) & (rig.template[:, 0] > 0)
    down = _pose(rig, eyes=[[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])  # positive pitch: the eye looks down
    assert float((down[lids, 1] - rig.template[lids, 1].double()).mean()) < -0.001


def test_identity_shapes_keep_eyeballs_rigid(rig, seed):
    g = torch.Generator().manual_seed(seed)
    p = RigParams.zeros(rig, 1, dtype=torch.float64)
    p.shape = 2 * torch.randn(rig.num_shape, generator=g, dtype=torch.float64)
    verts, joints = pose_vertices(rig, p, return_joints=True)
    moved = (verts[0] - rig.template.double()).norm(dim=1)
    assert moved.max() > 0.003
    for side, j in (("left", 3), ("right", 4)):
        r = (verts[0, rig.region(f"eyeball_{side}")] - joints[0, j]).norm(dim=1)
        assert float(r.max() - r.min()) < 1e-5


def test_uvs_and_round_trip(rig):
    assert rig.uvs.min() >= 0 and rig.uvs.max() <= 1
    assert rig.face_uvs.shape == rig.faces.shape and rig.face_uvs.max() < len(rig.uvs)
    # the pupil (front pole of the eyeball) is at the centre of its atlas tile
    for side in ("left", "right"):
        m = rig.region(f"eyeball_{side}")
        pole = int(torch.nonzero(m)[rig.template[m, 2].argmax()])
        tri = torch.nonzero((rig.faces == pole).any(1))[0, 0]
        uv = rig.uvs[rig.face_uvs[tri][rig.faces[tri] == pole][0]]
        u0, v0, u1, v1 = UV_ATLAS[f"eyeball_{side}"]
        torch.testing.assert_close(uv, torch.tensor([(u0 + u1) / 2, (v0 + v1) / 2]))
    tensors, info = rig.state_dict()
    back = HeadRig.from_state_dict(tensors, info)
    assert torch.equal(back.template, rig.template) and back.expr_names == rig.expr_names
    assert all(torch.equal(back.region(k), rig.region(k)) for k in rig.regions)
    assert np.isclose(back.meta["mouth_y"], rig.meta["mouth_y"])
