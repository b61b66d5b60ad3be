"""Expression-dependent Gaussians: the person's expression code, the offsets it blends, and every path that poses
Gaussians (render, native posing, densification, the stored file, the PLY export, training and its resume)."""
from __future__ import annotations

import pytest
import torch

from avatar3d.gaussians.avatar_render import binding_faces, pose_gaussians, render_avatar
from avatar3d.gaussians.densify import rebuild
from avatar3d.gaussians.expression import OFFSET_NAMES, ExpressionBasis, expressed, face_vector
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.registry import load_rig
from avatar3d.head.rig import RigParams
from avatar3d.render import native


def _faces_of(rig, n: int, g: torch.Generator) -> RigParams:
    """`n` random frames of the rig: expressions, jaw openings, gazes."""
    params = RigParams.zeros(rig, n)
    params.expr = 0.4 * torch.rand(n, rig.num_expr, generator=g)
    params.jaw[:, 0] = 0.2 * torch.rand(n, generator=g)
    params.eyes = 0.1 * torch.randn(n, 2, 3, generator=g)
    return params


def _with_random_offsets(gaussians: BoundGaussians, basis: ExpressionBasis, g: torch.Generator) -> BoundGaussians:
    out = gaussians.with_expression(basis)
    with torch.no_grad():
        for name in OFFSET_NAMES:
            getattr(out, name).copy_(0.3 * torch.randn(getattr(out, name).shape, generator=g))
    return out


@pytest.fixture(scope="module")
def rig():
    return load_rig("synthetic")


def _avatar(rig, seed: int, count: int = 400):
    g = torch.Generator().manual_seed(seed)
    faces = binding_faces(rig)
    gaussians = BoundGaussians.on_surface(rig.template, faces, count, sh_degree=1, generator=g)
    frames = _faces_of(rig, 12, g)
    return _with_random_offsets(gaussians, ExpressionBasis.fit(frames, 4), g), faces, frames, g


def test_code_is_standardised_on_the_frames_it_was_fitted_on_and_clamped_beyond(rig, seed):
    g = torch.Generator().manual_seed(seed)
    frames = _faces_of(rig, 30, g)
    basis = ExpressionBasis.fit(frames, 5, limit=10.0)
    code = basis.code(frames)  # [30,5]
    assert basis.size == 5
    torch.testing.assert_close(code.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(code.std(0), torch.ones(5), atol=1e-4, rtol=0)
    mean_face = RigParams.zeros(rig, 1)
    x = basis.mean[None]
    mean_face.expr, mean_face.jaw, mean_face.eyes = x[:, :rig.num_expr], x[:, rig.num_expr:rig.num_expr + 3], \
        x[:, rig.num_expr + 3:].reshape(1, 2, 3)
    assert float(basis.code(mean_face).abs().max()) < 1e-5  # the mean face has code 0
    clamped = ExpressionBasis.fit(frames, 5, limit=0.5).code(frames)
    assert float(clamped.abs().max()) <= 0.5 + 1e-6
    assert float(clamped.abs().max()) == pytest.approx(0.5)


def test_fewer_components_than_asked_when_the_frames_span_fewer(rig, seed):
    g = torch.Generator().manual_seed(seed)
    frames = _faces_of(rig, 3, g)  # three frames span at most two directions about their mean
    assert ExpressionBasis.fit(frames, 8).size == 2
    still = frames.slice([0, 0, 0])
    assert ExpressionBasis.fit(still, 8).size == 0
    assert face_vector(frames).shape == (3, rig.num_expr + 9)


def test_offsets_blend_linearly_and_vanish_at_the_mean_face(rig, seed):
    gaussians, _, frames, _ = _avatar(rig, seed)
    frame = frames.slice(slice(3, 4))
    code = gaussians.expression.code(frame)[0]
    view = expressed(gaussians, frame)
    expect = gaussians.local_means + sum(c * gaussians.expr_means[:, k] for k, c in enumerate(code))
    torch.testing.assert_close(view.local_means, expect, atol=1e-5, rtol=0)
    expect_dc = gaussians.sh[:, 0] + sum(c * gaussians.expr_colours[:, k] for k, c in enumerate(code))
    torch.testing.assert_close(view.sh[:, 0], expect_dc, atol=1e-5, rtol=0)
    torch.testing.assert_close(view.sh[:, 1:], gaussians.sh[:, 1:])
    expect_opacity = gaussians.opacity_logits + gaussians.expr_opacity @ code
    torch.testing.assert_close(view.opacity_logits, expect_opacity, atol=1e-5, rtol=0)
    basis = gaussians.expression
    mean = basis.mean[None]
    e = rig.num_expr
    at_mean = RigParams(frame.shape, mean[:, :e], frame.global_rot, frame.neck, mean[:, e:e + 3],
                        mean[:, e + 3:].reshape(1, 2, 3), frame.transl)
    torch.testing.assert_close(expressed(gaussians, at_mean).local_means, gaussians.local_means, atol=1e-6, rtol=0)
    plain = BoundGaussians.from_tensors({k: v for k, v in gaussians.tensors().items()
                                         if not k.startswith("expr")})
    assert plain.expression is None and expressed(plain, frame) is plain


def test_native_posing_and_rendering_take_the_face_into_account(rig, seed):
    gaussians, faces, frames, _ = _avatar(rig, seed)
    gaussians.requires_grad_(False)
    frame = frames.slice(slice(5, 6))
    vertices = pose_vertices(rig, frame)[0]
    view = expressed(gaussians, frame)
    reference = BoundGaussians.world(view, vertices, faces)
    posed = pose_gaussians(gaussians, vertices, faces, frame)  # native where built, else the same torch maths
    torch.testing.assert_close(posed.means, reference.means, atol=2e-5, rtol=0)
    torch.testing.assert_close(posed.opacities, reference.opacities)
    torch.testing.assert_close(posed.sh, reference.sh)
    from avatar3d.camera import intrinsics, orbit_viewmat

    K, viewmat = intrinsics(30.0, 48, 48), orbit_viewmat(0.75, target=(0.0, -0.02, 0.0))
    backend = "cpu" if native.is_available() else "torch"
    with_offsets = render_avatar(gaussians, rig, faces, frame, K, viewmat, 48, 48, backend=backend).image
    without = render_avatar(gaussians.with_expression(None).requires_grad_(False), rig, faces, frame, K, viewmat, 48, 48,
                            backend=backend).image
    assert float((with_offsets - without).abs().max()) > 0.05


def test_file_round_trip_subset_and_densify_keep_the_offsets_with_their_gaussians(rig, seed):
    gaussians, _, frames, g = _avatar(rig, seed)
    again = BoundGaussians.from_tensors(gaussians.tensors())
    for name in OFFSET_NAMES + ("local_means",):
        torch.testing.assert_close(getattr(again, name), getattr(gaussians, name))
    torch.testing.assert_close(again.expression.code(frames), gaussians.expression.code(frames))
    index = torch.randint(gaussians.num_gaussians, (150,), generator=g)
    for picked in (gaussians.subset(index), rebuild(gaussians, None, index)):
        for name in OFFSET_NAMES:
            torch.testing.assert_close(getattr(picked, name), getattr(gaussians, name).detach()[index])
        assert picked.expression is gaussians.expression
    plain = gaussians.with_expression(None)
    assert not any(k.startswith("expr") for k in plain.tensors())


def test_ply_export_bakes_the_frames_face(rig, seed, tmp_path):
    from avatar3d.export.splat import export_ply

    gaussians, faces, frames, _ = _avatar(rig, seed)
    gaussians.requires_grad_(False)
    frame = frames.slice(slice(2, 3))
    ply = export_ply(tmp_path / "f.ply", gaussians, rig, faces, frame)
    view = expressed(gaussians, frame)
    torch.testing.assert_close(torch.as_tensor(ply.opacity_logit).float(), view.opacity_logits.float())
    torch.testing.assert_close(torch.as_tensor(ply.sh_dc).float(), view.sh[:, 0].float())
