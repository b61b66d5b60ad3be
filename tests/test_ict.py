"""ICT-FaceKit conversion (needs ../shared): counts, helper geometry, jaw and eye rigging, cache."""
from __future__ import annotations

import json
import math

import pytest
import torch

from avatar3d.head import registry
from avatar3d.head.ict import RANGES, ict_input_files
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.obj import read_obj_vertices
from avatar3d.head.rig import RigParams
from avatar3d.paths import shared_dir


def _ict_folder(shared):
    return shared / "headmodels" / "ICT-FaceKit"


@pytest.fixture(scope="module")
def ict(tmp_path_factory):
    """(home, install record, loaded rig): ICT converted once into an isolated AVATAR3D_HOME."""
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared (development videos, audio, head models) is not present on this machine")
    home = tmp_path_factory.mktemp("avatar3d_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVATAR3D_HOME", str(home))
        info = registry.install_ict(_ict_folder(shared))
        rig = registry.load_rig("ict")
    return home, info, rig


def _delta(shared, name):
    d = _ict_folder(shared) / "FaceXModel"
    return (read_obj_vertices(d / f"{name}.obj") - read_obj_vertices(d / "generic_neutral_mesh.obj")) * 0.01


def test_counts_and_expression_set(shared, ict):
    _, info, rig = ict
    d = _ict_folder(shared) / "FaceXModel"
    names = json.loads((d / "vertex_indices.json").read_text())["expressions"]
    n_identity = len(list(d.glob("identity*.obj")))
    assert rig.num_vertices == 26719
    # quads become two triangles, triangles stay
    polys = [ln.split() for ln in (d / "generic_neutral_mesh.obj").read_text().splitlines() if ln.startswith("f ")]
    assert rig.num_faces == sum(len(p) - 3 for p in polys)
    assert rig.num_shape == n_identity
    removed = {"jawOpen"} | {f"eyeLook{x}_{s}" for x in ("Up", "Down", "In", "Out") for s in "LR"}
    assert rig.expr_names == [n for n in names if n not in removed]
    assert rig.num_expr == 53 - 9
    assert not any(n.startswith(("PupilDilate", "cheekRaiser")) for n in rig.expr_names)
    assert rig.landmarks_68.tolist() == json.loads((d / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    assert rig.uvs is not None and rig.face_uvs.shape == rig.faces.shape
    assert info["summary"]["expressions"] == rig.num_expr
    # metres: the head is ~20-30 cm tall, not 20-30 units
    extent = (rig.template.max(0).values - rig.template.min(0).values).max().item()
    assert 0.2 < extent < 0.5
    # left eyeball on the subject's left (+x)
    assert rig.template[rig.region("eyeball_left")][:, 0].mean() > 0.02


def test_helper_geometry_marked_and_never_rendered(ict):
    _, _, rig = ict
    helper = rig.region("helper")
    want = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for key in ("lacrimal_left", "lacrimal_right", "eye_blend_left", "eye_blend_right", "eye_occlusion_left",
                "eye_occlusion_right", "eyelashes_left", "eyelashes_right"):
        a, b = RANGES[key]
        want[a:b] = True
    assert torch.equal(helper, want)
    render = rig.renderable_faces()
    assert not helper[rig.faces[render]].any()
    assert (~render).sum() >= 163 * 2 + 15 * 2 + 128 * 2 + 540 * 2  # helper polygons (some are quads)
    for name in ("face", "lips", "eyelids", "brows", "scalp", "neck", "teeth", "mouth_interior",
                 "eyeball_left", "eyeball_right"):
        assert rig.region(name).any(), name
    assert not (rig.region("lips") & ~rig.region("face")).any()


def test_jaw_fit_reported_and_reproduces_jaw_open(shared, ict):
    _, _, rig = ict
    fit = rig.meta["jaw_fit_mm"]
    assert fit["checked_with"] == "lbs"
    assert fit["mean"] < 0.1 and fit["p95"] < 0.2
    assert 0.5 < fit["skinning_only_mean"] < 5  # the skinning alone explains most of jawOpen
    angle = math.radians(rig.meta["jaw_open_angle_deg"])
    assert 15 < rig.meta["jaw_open_angle_deg"] < 35
    params = RigParams.zeros(rig, 1)
    params.jaw[0, 0] = angle  # pitch about +x opens the mouth
    posed = pose_vertices(rig, params)[0]
    target = rig.template + torch.from_numpy(_delta(shared, "jawOpen")).float()
    err = (posed - target).norm(dim=1)[: RANGES["face"][1]] * 1000
    assert err.max() < 0.5
    moved = (posed - rig.template).norm(dim=1)
    chin = rig.landmarks_68[8]
    assert moved[chin] > 0.01  # the chin drops by centimetres
    forehead = rig.region("face") & (rig.template[:, 1] > rig.template[rig.landmarks_68[19], 1] + 0.01)
    # ICT's jawOpen itself moves the temples a fraction of a millimetre; the forehead stays put
    assert moved[forehead].max() < 1e-3 and moved[forehead].mean() < 1e-4


def test_eye_rotation_moves_only_eyeballs_and_eyelids(shared, ict, seed):
    _, _, rig = ict
    g = torch.Generator().manual_seed(seed)
    params = RigParams.zeros(rig, 1)
    params.eyes[0] = (torch.rand(2, 3, generator=g) - 0.5) * math.radians(40)
    params.eyes[0, :, 2] = 0.0  # gaze has no roll
    moved = (pose_vertices(rig, params)[0] - rig.template).norm(dim=1) > 1e-6
    allowed = (rig.region("eyeball_left") | rig.region("eyeball_right") | rig.region("eyelids")
               | rig.region("helper"))
    assert moved.any()
    assert not (moved & ~allowed).any()
    assert moved[rig.region("eyeball_left")].all() and moved[rig.region("eyeball_right")].all()
    assert (moved & rig.region("eyelids")).any()

    # at the assumed angle the eyelid corrective reproduces the eyeLook shape it was fitted to
    params = RigParams.zeros(rig, 1)
    params.eyes[0, 0, 0] = math.radians(rig.meta["eye_look_angle_deg"])  # left eye, pitch down
    posed = pose_vertices(rig, params)[0]
    lids = rig.region("eyelids")
    target = rig.template + torch.from_numpy(_delta(shared, "eyeLookDown_L")).float()
    assert (posed - target)[lids].norm(dim=1).max() < 2e-4


def test_joints_follow_identity_and_weights_are_valid(ict, seed):
    _, _, rig = ict
    assert torch.allclose(rig.lbs_weights.sum(1), torch.ones(rig.num_vertices), atol=1e-5)
    assert torch.allclose(rig.joint_regressor.sum(1), torch.ones(5), atol=1e-4)
    joints = rig.joint_regressor @ rig.template
    # FLAME's tree: root below neck, eyes above the jaw, left eye at +x
    assert joints[0, 1] < joints[1, 1] < joints[3, 1]
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02
    eye = rig.template[rig.region("eyeball_left")]
    r = (eye - joints[3]).norm(dim=1)
    assert r.std() / r.mean() < 0.1  # the eye joint is at the eyeball's centre
    beta = torch.randn(rig.num_shape, generator=torch.Generator().manual_seed(seed))
    shaped = rig.template + torch.einsum("s,vcs->vc", beta, rig.shape_basis)
    j2 = rig.joint_regressor @ shaped
    eye2 = shaped[rig.region("eyeball_left")].mean(0)
    assert torch.allclose(j2[3] - joints[3], eye2 - eye.mean(0), atol=2e-3)


def test_cache_is_reused_not_reconverted(shared, ict, monkeypatch):
    home, info, _ = ict
    monkeypatch.setenv("AVATAR3D_HOME", str(home))

    def boom(*args, **kwargs):
        raise AssertionError("converted again although the cache is valid")

    monkeypatch.setattr("avatar3d.head.ict.convert_ict", boom)
    again = registry.install_ict(_ict_folder(shared))
    assert again["cache_key"] == info["cache_key"]
    rig = registry.load_rig()  # the default is the installed ICT model
    assert rig.name == "ict" and rig.landmarks_mp is not None
    rows = registry.list_models()
    assert [r["name"] for r in rows] == ["ict"]
    assert rows[0]["vertices"] == 26719 and rows[0]["jaw_fit_mm"]["p95"] < 0.2
    assert len(info["fingerprint"]) == len(ict_input_files(_ict_folder(shared)))
