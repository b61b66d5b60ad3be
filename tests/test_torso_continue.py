"""The torso continued below the frame (training/torso_continue.py) on the synthetic portrait's own enrollment."""
from __future__ import annotations

import math

import pytest
import torch

from avatar3d.gaussians.avatar_render import binding_faces, binding_index
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.synthetic import synthetic_rig
from avatar3d.head.torso import avatar_rig, grid_cells, load_torso
from avatar3d.pipeline.synthetic_eval import build_avatar_dir, eval_subject
from avatar3d.training.torso_continue import continuation_sources, continue_torso, shown
from avatar3d.training.torso_fit import FALL_BAND

RES = 96


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """A portrait subject enrolled (torso fitted), its rig with the torso and the views of its frames."""
    subject = eval_subject(seconds=0.3, fps=10, resolution=RES, seed=3, texture_size=256, supersample=1,
                           portrait=True)
    root = build_avatar_dir(subject, tmp_path_factory.mktemp("portrait") / "av")
    rig = avatar_rig(subject.rig, root)
    with torch.no_grad():
        views = [(pose_vertices(rig, subject.frame_params(t))[0], subject.camera.K, subject.camera.viewmat)
                 for t in range(subject.num_frames)]
    return subject, root, rig, views


def _gaussians(rig, seed: int, count: int = 30000) -> BoundGaussians:
    g = torch.Generator().manual_seed(seed)
    return BoundGaussians.on_surface(rig.template, binding_faces(rig), count, generator=g)


def test_the_fitted_torso_reaches_below_a_backed_off_frame_in_bands_of_the_fill_height(enrolled):
    subject, root, rig, _ = enrolled
    shape = load_torso(root)
    fall = shape.length - shape.shoulder_drop - shape.rounding
    assert shape.fall_rings == max(6, round(fall / FALL_BAND))
    assert abs(fall / shape.fall_rings - FALL_BAND) < 0.01
    grid = rig.meta["torso_grid"]
    assert grid["bands"] == grid["slope_bands"] + shape.fall_rings


def _pictures(views, colour_of_x):
    """One picture per view whose colour depends on the column alone: colour_of_x([W] in [0,1]) -> [W,3]."""
    x = (torch.arange(RES, dtype=torch.float32) + 0.5) / RES
    return [colour_of_x(x)[None].expand(RES, RES, 3).clone() for _ in views]


def _ramp(x):
    return torch.stack([x, 1.0 - x, torch.full_like(x, 0.5)], dim=-1)


def test_what_the_frames_showed_is_kept_and_below_it_the_last_band_seen_is_filled(enrolled, seed):
    subject, _, rig, views = enrolled
    faces, binding = binding_faces(rig), binding_index(rig)
    gaussians = _gaussians(rig, seed)
    seen = shown(gaussians, faces, views, RES, RES)
    assert 0.2 < seen.float().mean() < 0.95  # the torso runs out of the frame
    out = continue_torso(gaussians, rig, views, _pictures(views, _ramp), RES, RES)
    # every Gaussian a frame showed is written unchanged, first and in order
    kept = int(seen.sum())
    assert torch.equal(out.parent[:kept], gaussians.parent[seen])
    assert torch.equal(out.local_means[:kept], gaussians.local_means[seen].detach())
    # the fill: opaque, below its column's source band, and reaching into no picture (it would paint over it)
    fill = out.subset(torch.arange(gaussians.num_gaussians - int((~seen).sum()), out.num_gaussians))
    assert fill.num_gaussians > 0 and not bool(shown(fill, faces, views, RES, RES).any())
    assert bool((torch.sigmoid(fill.opacity_logits) > 0.99).all())
    grid = rig.meta["torso_grid"]
    cells_in, cells_out = grid_cells(rig, binding)[gaussians.parent], grid_cells(rig, binding)[fill.parent]
    sources = continuation_sources(gaussians, rig, shown(gaussians, faces, views, RES, RES))
    band_of = {int(c[1]): int(c[0]) for c in cells_in[sources]}
    assert all(int(c[0]) > band_of[int(c[1])] for c in cells_out)
    # no gap: in each column that has a fill, every band from its first to the bottom has one
    for k in torch.unique(cells_out[:, 1]).tolist():
        bands = set(cells_out[cells_out[:, 1] == k, 0].tolist())
        assert set(range(min(bands), grid["bands"])) <= bands, k


def test_the_fill_takes_the_colour_the_pictures_show_at_its_source(enrolled, seed):
    """Pictures coloured by column: each fill Gaussian's colour is the mean the pictures show at the centres of
    its column's (and half's) source Gaussians."""
    from avatar3d.gaussians.model import rgb_to_sh0

    _, _, rig, views = enrolled
    faces, binding = binding_faces(rig), binding_index(rig)
    gaussians = _gaussians(rig, seed)
    out = continue_torso(gaussians, rig, views, _pictures(views, _ramp), RES, RES)
    unseen = int((~shown(gaussians, faces, views, RES, RES)).sum())
    fill = out.subset(torch.arange(gaussians.num_gaussians - unseen, out.num_gaussians))
    sources = continuation_sources(gaussians, rig, shown(gaussians, faces, views, RES, RES))
    cells_src = grid_cells(rig, binding)[gaussians.parent[sources]]
    centre_x, centre_y = [], []
    for vertices, K, viewmat in views:  # where each source Gaussian's centre falls, in every picture
        cam = gaussians.subset(sources).world(vertices, faces).means @ viewmat[:3, :3].T + viewmat[:3, 3]
        centre_x.append(K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2])
        centre_y.append(K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2])
    centre_x, centre_y = torch.stack(centre_x, 1), torch.stack(centre_y, 1)  # [S, views]
    inside = (centre_x >= 0) & (centre_x < RES) & (centre_y >= 0) & (centre_y < RES)
    column = (torch.floor(centre_x).clamp(0, RES - 1) + 0.5) / RES
    cells_fill = grid_cells(rig, binding)[fill.parent]
    checked = 0
    for (k, half), dc in zip(cells_fill[:, 1:].tolist(), fill.sh[:, 0].detach()):
        mine = (cells_src[:, 1] == k) & (cells_src[:, 2] == half)
        if not bool((inside & mine[:, None]).any()):
            continue
        expected = _ramp(column[mine][inside[mine]].mean()[None])[0]
        assert torch.allclose(dc, rgb_to_sh0(expected), atol=1e-4), (k, half)
        checked += 1
    assert checked > 10


def test_the_sources_are_one_seen_band_per_column(enrolled, seed):
    """`continuation_sources` (what thinning spares and the fill takes its colour from): one band per column of
    the grid, the lowest its frames showed in full."""
    _, _, rig, views = enrolled
    faces, binding = binding_faces(rig), binding_index(rig)
    gaussians = _gaussians(rig, seed)
    sources = continuation_sources(gaussians, rig, shown(gaussians, faces, views, RES, RES))
    seen = shown(gaussians, faces, views, RES, RES)
    assert 0 < int(sources.sum()) < int(seen.sum())
    assert bool(seen[sources].all())
    cells = grid_cells(rig, binding)[gaussians.parent]
    for k in torch.unique(cells[sources, 1]).tolist():
        band = torch.unique(cells[sources & (cells[:, 1] == k), 0])
        assert len(band) == 1, k
        for lower in range(int(band) + 1, rig.meta["torso_grid"]["bands"]):  # none lower was seen in full
            there = (cells[:, 1] == k) & (cells[:, 0] == lower)
            assert not bool(there.any()) or not bool(seen[there].all()), (k, lower)
    everything = torch.ones(gaussians.num_gaussians, dtype=torch.bool)
    assert not bool(continuation_sources(gaussians, synthetic_rig(), everything).any())


def test_a_backed_off_camera_sees_the_torso_run_out_of_its_frame(enrolled, seed):
    from avatar3d.camera import orbit_viewmat
    from avatar3d.gaussians.avatar_render import render_avatar
    from avatar3d.pipeline.synthetic_eval import PORTRAIT_TARGET

    subject, _, rig, views = enrolled
    faces = binding_faces(rig)
    gaussians = _gaussians(rig, seed, 20000)
    gaussians.opacity_logits.data.fill_(math.log(0.9 / 0.1))
    far = orbit_viewmat(subject.distance * 1.5, 0.0, 0.0, PORTRAIT_TARGET)
    params = subject.frame_params(0)

    def bottom_coverage(g):
        with torch.no_grad():
            out = render_avatar(g, rig, faces, params, subject.camera.K, far, RES, RES, backend="auto")
        return float(out.alpha[-3:, RES // 3:2 * RES // 3].mean())  # the bottom rows, middle third

    before = bottom_coverage(gaussians.subset(shown(gaussians, faces, views, RES, RES)))
    after = bottom_coverage(continue_torso(gaussians, rig, views, _pictures(views, _ramp), RES, RES))
    assert before < 0.5 < after, (before, after)  # only what was seen ends inside the picture; continued, it does not


def test_a_head_avatar_is_left_as_it_is(seed):
    rig = synthetic_rig()
    faces = binding_faces(rig)
    g = torch.Generator().manual_seed(seed)
    gaussians = BoundGaussians.on_surface(rig.template, faces, 500, generator=g)
    out = continue_torso(gaussians, rig, [], [], RES, RES)
    assert out is gaussians
