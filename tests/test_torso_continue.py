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
from avatar3d.training.torso_continue import continue_torso, shown
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


def test_what_the_frames_showed_is_kept_and_below_it_the_last_band_seen_repeats(enrolled, seed):
    subject, _, rig, views = enrolled
    faces, binding = binding_faces(rig), binding_index(rig)
    gaussians = _gaussians(rig, seed)
    seen = shown(gaussians, faces, views, RES, RES)
    assert 0.2 < seen.float().mean() < 0.95  # the torso runs out of the frame
    out = continue_torso(gaussians, rig, views, RES, RES)
    # every Gaussian a frame showed is written unchanged, first and in order
    kept = int(seen.sum())
    assert torch.equal(out.parent[:kept], gaussians.parent[seen])
    assert torch.equal(out.local_means[:kept], gaussians.local_means[seen].detach())
    # what was added lies where no frame looked, each a copy of a Gaussian of the same segment and half, higher up
    added = out.subset(torch.arange(gaussians.num_gaussians - int((~seen).sum()), out.num_gaussians))
    assert added.num_gaussians > 0 and not bool(shown(added, faces, views, RES, RES, footprint=False).any())
    cells_in, cells_out = grid_cells(rig, binding)[gaussians.parent], grid_cells(rig, binding)[added.parent]
    grid = rig.meta["torso_grid"]
    assert bool((cells_out[:, 0] >= grid["slope_bands"]).all())
    sources = {(tuple(m.tolist()), int(c[1]), int(c[2])): int(c[0]) for m, c in
               zip(gaussians.local_means.detach(), cells_in) if c[0] >= 0}
    for m, c in zip(added.local_means[:200], cells_out[:200]):
        assert sources[(tuple(m.tolist()), int(c[1]), int(c[2]))] < int(c[0])
    # no gap: in each segment that has copies, every band from its first copy to the bottom has Gaussians
    for k in torch.unique(cells_out[:, 1]).tolist():
        out_cells = grid_cells(rig, binding)[out.parent]
        bands = set(out_cells[out_cells[:, 1] == k, 0].tolist())
        first = int(cells_out[cells_out[:, 1] == k, 0].min())
        assert set(range(first, grid["bands"])) <= bands, k


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
    after = bottom_coverage(continue_torso(gaussians, rig, views, RES, RES))
    assert before < 0.5 < after, (before, after)  # only what was seen ends inside the picture; continued, it does not


def test_a_head_avatar_is_left_as_it_is(seed):
    rig = synthetic_rig()
    faces = binding_faces(rig)
    g = torch.Generator().manual_seed(seed)
    gaussians = BoundGaussians.on_surface(rig.template, faces, 500, generator=g)
    out = continue_torso(gaussians, rig, [], RES, RES)
    assert out is gaussians
