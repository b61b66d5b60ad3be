"""MediaPipe-478 embedding: canonical-mesh ordering guard, closest points, lips and irises land right."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.errors import HeadModelError
from avatar3d.head import registry
from avatar3d.head.embedding import (
    CANONICAL_PATH,
    NOSE_TIP,
    build_mediapipe_embedding,
    check_canonical_order,
    closest_point_on_triangles,
    load_canonical_face,
)
from avatar3d.head.lbs import landmarks, pose_vertices
from avatar3d.head.rig import HeadRig, RigParams

LIP_LANDMARKS = [0, 13, 14, 17, 61, 291, 78, 308, 37, 267, 84, 314]


def test_canonical_mesh_ships_with_the_package_and_its_licence():
    assert CANONICAL_PATH.is_file()
    assert (CANONICAL_PATH.parent / "LICENSE.mediapipe").is_file()
    verts, faces = load_canonical_face()
    assert verts.shape == (468, 3) and faces.shape[1] == 3


def test_ordering_guard_nose_tip_is_most_forward(seed):
    verts, _ = load_canonical_face()
    assert int(np.argmax(verts[:, 2])) == NOSE_TIP
    # metres, face-sized, nose tip on the midline
    assert abs(verts[NOSE_TIP, 0]) < 1e-6 and 0.1 < np.ptp(verts[:, 1]) < 0.25
    rng = np.random.default_rng(seed)
    other = int(rng.integers(5, 468))
    shuffled = verts.copy()
    shuffled[[NOSE_TIP, other]] = shuffled[[other, NOSE_TIP]]
    with pytest.raises(HeadModelError, match="landmark order"):
        check_canonical_order(shuffled)
    with pytest.raises(HeadModelError, match="468"):
        check_canonical_order(verts[:400])


def test_closest_point_on_triangles_matches_dense_sampling(seed):
    rng = np.random.default_rng(seed)
    n = 64
    a, b, c = (rng.normal(size=(n, 3)) for _ in range(3))
    p = rng.normal(size=(n, 3)) * 2
    bary = closest_point_on_triangles(p, a, b, c)
    assert (bary >= -1e-9).all() and np.allclose(bary.sum(1), 1)
    q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    d = np.linalg.norm(q - p, axis=1)
    s = np.linspace(0, 1, 81)
    u, v = np.meshgrid(s, s)
    keep = (u + v) <= 1
    u, v = u[keep], v[keep]
    samples = a[:, None] + u[None, :, None] * (b - a)[:, None] + v[None, :, None] * (c - a)[:, None]
    d_dense = np.linalg.norm(samples - p[:, None], axis=2).min(1)
    assert (d <= d_dense + 1e-9).all()  # never worse than any sampled point
    assert np.allclose(d, d_dense, atol=0.05)


def _on_region(rig: HeadRig, index: int, name: str) -> bool:
    """The landmark's dominant triangle corner lies in the region."""
    emb = rig.landmarks_mp
    tri = rig.faces[emb.face_idx[index]]
    return bool(rig.region(name)[tri[emb.bary[index].argmax()]])


def _check_embedding(rig: HeadRig):
    emb = rig.landmarks_mp
    assert emb.face_idx.shape == (478,) and emb.bary.shape == (478, 3)
    assert torch.allclose(emb.bary.sum(1), torch.ones(478), atol=1e-5)
    assert (emb.bary >= 0).all()
    for i in LIP_LANDMARKS:
        assert _on_region(rig, i, "lips"), f"landmark {i} is not on the lips"
    for centre, ring, side in ((468, range(469, 473), "right"), (473, range(474, 478), "left")):
        for i in (centre, *ring):
            assert _on_region(rig, i, f"eyeball_{side}"), f"landmark {i} is not on the {side} eyeball"
    pts = emb.points(rig.template, rig.faces)
    # iris centres are the front of each eyeball, the subject's left eye at +x
    assert pts[473, 0] > 0 > pts[468, 0]
    for centre, ring in ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477))):
        offs = pts[list(ring)] - pts[centre]
        assert offs[0, 0] > 0 and offs[1, 1] > 0 and offs[2, 0] < 0 and offs[3, 1] < 0  # +x, up, -x, down
        assert pts[centre, 2] >= pts[list(ring), 2].max()
    # face landmarks stay on the rig surface: the nose tip is the most forward face landmark
    assert int(pts[:468, 2].argmax()) in (1, 4)


@pytest.fixture(scope="module")
def synthetic():
    return registry.synthetic_with_embedding()


def test_synthetic_embedding_lips_and_irises(synthetic):
    _check_embedding(synthetic)


def test_synthetic_embedding_without_68_landmarks_uses_geometry(synthetic):
    tensors, info = synthetic.state_dict()
    rig = HeadRig.from_state_dict(tensors, info)
    rig.landmarks_68 = None
    emb, summary = build_mediapipe_embedding(rig)
    assert summary["anchors"] == "geometric"
    rig.landmarks_mp = emb
    _check_embedding(rig)


def test_landmarks_follow_the_jaw(synthetic):
    params = RigParams.zeros(synthetic, 2)
    params.jaw[1, 0] = 0.3  # open
    lm = landmarks(synthetic, pose_vertices(synthetic, params))
    drop = lm[0, :, 1] - lm[1, :, 1]
    assert drop[17] > 0.004  # lower lip goes down
    assert drop[0].abs() < 0.25 * drop[17]  # upper lip much less
    assert drop[10].abs() < 1e-4  # forehead not at all


def test_ict_embedding_lips_and_irises(shared):
    from avatar3d.head.embedding import attach_mediapipe_embedding
    from avatar3d.head.ict import convert_ict

    rig = attach_mediapipe_embedding(convert_ict(shared / "headmodels" / "ICT-FaceKit"))
    _check_embedding(rig)
    assert rig.meta["mp_embedding"]["anchors"] == "landmarks_68"
    # the embedded eye corners sit on the ICT landmarks they were registered to (within 2 mm)
    pts = rig.landmarks_mp.points(rig.template, rig.faces)
    for mp_idx, lm_idx in ((33, 36), (263, 45), (61, 48), (291, 54)):
        assert (pts[mp_idx] - rig.template[rig.landmarks_68[lm_idx]]).norm() < 0.002


def test_missing_regions_are_derived_from_the_registration(synthetic):
    # a rig without face/lips/eyelids/brows (FLAME without its mask file) gets them from the procedure
    from avatar3d.head.embedding import attach_mediapipe_embedding

    tensors, info = synthetic.state_dict()
    rig = HeadRig.from_state_dict(tensors, info)
    for name in ("face", "lips", "eyelids", "brows"):
        rig.regions.pop(name)
    attach_mediapipe_embedding(rig)
    assert set(rig.meta["mp_embedding"]["derived_regions"]) == {"face", "lips", "eyelids", "brows"}
    for name in ("face", "lips", "eyelids", "brows"):
        got, truth = rig.region(name), synthetic.region(name)
        assert got.sum() > 0.3 * truth.sum(), name
        assert (got & truth).sum() > 0.7 * got.sum(), name  # mostly inside the rig's own region
    assert not (rig.region("lips") & (rig.region("eyeball_left") | rig.region("teeth"))).any()
