"""The torso proxy (head/torso.py): its shape, its join with the neck, and how it moves with the rig."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.registry import load_rig
from avatar3d.head.rig import RigParams
from avatar3d.head.torso import TorsoShape, attach_torso, neck_base, torso_mesh


@pytest.fixture(scope="module")
def rig():
    return load_rig("synthetic")


def _shape(rng) -> TorsoShape:
    return TorsoShape(shoulder_width=float(rng.uniform(0.3, 0.5)), shoulder_drop=float(rng.uniform(0.02, 0.1)),
                      chest_depth=float(rng.uniform(0.16, 0.28)), length=float(rng.uniform(0.25, 0.4)),
                      rounding=float(rng.uniform(0.02, 0.06)))


def test_the_proxy_has_the_asked_proportions_and_faces_outwards(rig, seed):
    rng = np.random.default_rng(seed)
    shape, base = _shape(rng), neck_base(rig)
    verts, faces, profile = torso_mesh(base, shape)
    top = float(base.centre[1])
    assert verts[:, 0].max() - verts[:, 0].min() == pytest.approx(shape.shoulder_width, abs=1e-6)
    assert float(verts[:, 1].min()) == pytest.approx(top - shape.length, abs=1e-9)
    assert float(verts[:, 1].max()) == pytest.approx(top, abs=1e-9)
    assert verts[:, 2].max() - verts[:, 2].min() == pytest.approx(shape.chest_depth, abs=0.01)
    # the shoulder's edge (profile 1) at the side lies shoulder_drop + rounding below the neck's base
    side = (profile == 1.0) & (verts[:, 0] > shape.shoulder_width / 2 - 1e-6)
    assert float(verts[side, 1].max()) == pytest.approx(top - shape.shoulder_drop - shape.rounding, abs=1e-6)
    normals = torch.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]], dim=1)
    radial = verts[faces].mean(1) - base.centre
    radial[:, 1] = 0
    assert bool(((normals * radial).sum(1) > 0).all())  # counter-clockwise seen from outside
    # a strip wrapped around: every edge is shared by two triangles except the open top and bottom rings
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    rings = int((profile == 0).sum())
    assert int((counts == 1).sum()) == 2 * rings and int((counts > 2).sum()) == 0


def _section_gap(rig, base, ring) -> float:
    """Largest distance (x, z) from a ring vertex to the rig's own surface cut at the ring's height, over the
    directions where that surface reaches the height."""
    from avatar3d.head.torso import plane_section

    segs = plane_section(rig.template.double().cpu(), rig.faces.cpu(), float(base.centre[1])).points
    a, e = segs[:, 0], segs[:, 1] - segs[:, 0]
    p = ring[:, [0, 2]]
    t = (((p[:, None] - a[None]) * e[None]).sum(-1) / (e ** 2).sum(-1).clamp_min(1e-15)[None]).clamp(0, 1)
    gap = (p[:, None] - (a[None] + t[..., None] * e[None])).norm(dim=-1).min(1).values
    theta = torch.atan2(p[:, 0] - base.centre[0], p[:, 1] - base.centre[2])
    _, hit, _, _ = base.crossing(theta)
    assert hit.double().mean() > 0.8
    return float(gap[hit].max())


def test_the_top_ring_is_the_necks_ring(rig, seed):
    """The proxy starts on the neck's own surface at its base, so there is no gap between them."""
    base = neck_base(rig)
    verts, _, profile = torso_mesh(base, _shape(np.random.default_rng(seed)))
    assert _section_gap(rig, base, verts[profile == 0]) < 1e-6


def test_the_torso_follows_the_body_not_the_head(rig, seed):
    torch.manual_seed(seed)
    with_torso = attach_torso(rig, TorsoShape())
    v0 = rig.num_vertices
    assert with_torso.checksum() == rig.checksum()
    assert int(with_torso.region("torso").sum()) == with_torso.num_vertices - v0
    assert torch.equal(with_torso.faces[: rig.num_faces], rig.faces)
    params = RigParams.zeros(rig, 2)
    params.global_rot = 0.3 * torch.randn(2, 3)
    params.transl = 0.1 * torch.randn(2, 3)
    params.expr = torch.randn(2, rig.num_expr)
    head_only = pose_vertices(rig, params)
    both = pose_vertices(with_torso, params)
    assert torch.allclose(both[:, :v0], head_only, atol=1e-6)  # the rig's own vertices are untouched
    turned = RigParams(**{**params.__dict__, "neck": 0.4 * torch.randn(2, 3), "jaw": 0.2 * torch.rand(2, 3)})
    after = pose_vertices(with_torso, turned)
    assert torch.allclose(after[:, v0:], both[:, v0:], atol=1e-6)  # the head turns, the torso stays
    assert float((after[:, :v0] - both[:, :v0]).abs().max()) > 0.01
    # and it moves rigidly with the root
    rest = pose_vertices(with_torso, RigParams.zeros(rig, 1))[0, v0:]
    pairs = lambda x: (x[:, None] - x[None]).norm(dim=-1)  # noqa: E731  (cdist's float32 shortcut is too coarse)
    assert torch.allclose(pairs(rest[::7]), pairs(both[0, v0:][::7]), atol=1e-5)


def test_bad_proportions_are_refused(rig):
    base = neck_base(rig)
    for bad in (TorsoShape(shoulder_width=0.0), TorsoShape(length=-1.0), TorsoShape(shoulder_drop=0.5, length=0.3)):
        with pytest.raises(InputError, match="torso"):
            torso_mesh(base, bad)


def test_the_ict_rig_takes_a_torso(ict_home):
    ict_rig = load_rig("ict")
    base = neck_base(ict_rig)
    assert 0.05 < base.half_width < 0.15 and 0.03 < base.half_depth < 0.1
    verts, _, profile = torso_mesh(base, TorsoShape())
    assert _section_gap(ict_rig, base, verts[profile == 0]) < 1e-6
    with_torso = attach_torso(ict_rig, TorsoShape())
    assert with_torso.num_faces > ict_rig.num_faces and bool(with_torso.renderable_faces()[ict_rig.num_faces:].all())


def test_a_persons_neck_carries_the_torso(rig, seed):
    """With any identity and expression, the top ring stays on the neck's surface (each ring vertex moves as the
    surface point it sits on), so the join does not open for a person whose neck differs from the average."""
    torch.manual_seed(seed)
    with_torso = attach_torso(rig, TorsoShape())
    v0 = rig.num_vertices
    params = RigParams.zeros(rig, 1)
    params.shape = 2.0 * torch.randn(rig.num_shape)
    params.expr = torch.randn(1, rig.num_expr)
    rest = pose_vertices(with_torso, RigParams.zeros(rig, 1))[0].double()
    posed = pose_vertices(with_torso, params)[0].double()
    base = neck_base(rig)
    theta = torch.arange(40, dtype=torch.float64) * (2 * np.pi / 40)
    _, hit, segment, s = base.crossing(theta)
    idx, w = base.section.weights(segment, s)
    on_surface = (posed[idx] * w[..., None]).sum(1)  # [40,3] the same surface points on this person
    top = posed[v0:v0 + 40]
    assert torch.allclose(top[hit], on_surface[hit], atol=1e-5)
    assert float((posed[:v0] - rest[:v0]).norm(dim=1).max()) > 1e-3  # the shapes do move this rig
