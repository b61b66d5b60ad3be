"""Pruning after training: contributions are blending weights (they sum to the pictures' coverage), and the share
of least contribution goes."""
from __future__ import annotations

import pytest
import torch

from avatar3d.gaussians.avatar_render import render_avatar
from avatar3d.gaussians.store import load_bound
from avatar3d.head.lbs import pose_vertices
from avatar3d.io.avatar_dir import AvatarPaths
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.gaussians.avatar_render import pose_gaussians
from avatar3d.render.rasterize import rasterize
from avatar3d.training.prune import blend_statistics, contributions, faint_kept, prune_least


@pytest.fixture(scope="module")
def trained(synthetic_avatar_dir):
    from avatar3d.head.synthetic import synthetic_rig

    paths = AvatarPaths(synthetic_avatar_dir)
    seq = TrackedSequence.load(paths.tracking)
    gaussians, faces, rig = load_bound(paths, synthetic_rig(), "cpu")
    return gaussians, faces, rig, seq


def _camera(seq):
    return torch.as_tensor(seq.K, dtype=torch.float32), torch.as_tensor(seq.viewmat, dtype=torch.float32)


def _views(rig, seq, frames):
    params = seq.params()
    K, viewmat = _camera(seq)
    return [(pose_vertices(rig, params.slice(torch.tensor([t])))[0], K, viewmat, params.slice(torch.tensor([t])))
            for t in frames]


def test_contributions_are_blending_weights(trained, seed):
    gaussians, faces, rig, seq = trained
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, seq.num_frames, (2,), generator=g).tolist()
    views = _views(rig, seq, frames)
    res = seq.resolution
    weights = contributions(gaussians, faces, views, res, res)
    assert weights.shape == (gaussians.num_gaussians,) and bool((weights >= 0).all())
    # every pixel's weights add up to its coverage: the sum over Gaussians is the pictures' summed alpha
    K, viewmat = _camera(seq)
    K = K.clone()
    K[0] *= 48 / seq.resolution
    K[1] *= 40 / seq.resolution
    views = [(v, K, m, p) for v, _, m, p in views]
    weights = contributions(gaussians, faces, views, 48, 40)
    coverage = sum(float(render_avatar(gaussians, rig, faces, seq.params().slice(torch.tensor([t])), K, viewmat,
                                       48, 40).alpha.sum()) for t in frames)
    assert coverage > 50.0  # the avatar is in the pictures
    assert float(weights.sum()) == pytest.approx(coverage, rel=1e-4)


def test_prune_drops_the_least_contributing_share(trained, seed):
    gaussians, _, _, _ = trained
    g = torch.Generator().manual_seed(seed)
    n = gaussians.num_gaussians
    weights = torch.rand(n, generator=g)
    weights[:5] = 0.0  # never seen: the first to go
    kept = prune_least(gaussians, weights, 0.25)
    assert kept.num_gaussians == n - int(n * 0.25)
    threshold = torch.sort(weights).values[int(n * 0.25)]
    expected = weights >= threshold
    torch.testing.assert_close(kept.local_means, gaussians.local_means[expected])
    assert prune_least(gaussians, weights, 0.0) is gaussians


def test_training_prunes_the_share_it_is_given(tmp_path):
    from conftest import tiny_train_config

    from avatar3d.pipeline.synthetic_eval import build_avatar_dir, eval_subject
    from avatar3d.training.trainer import train_gaussians

    subject = eval_subject(seconds=0.6, fps=10, resolution=48, seed=0, texture_size=128, supersample=1)
    folder = build_avatar_dir(subject, tmp_path / "avatar")
    cfg = tiny_train_config(48, iterations=20, init_gaussians=1200, max_gaussians=1200, densify_from=10**6,
                            densify_until=0, densify_every=10**6, refine_params=False, prune_share=0.5)
    result = train_gaussians(folder, cfg, progress=False, frames_train=list(range(subject.num_frames)),
                             rig=subject.rig)
    assert 100 < result.num_gaussians <= 600


def test_faint_kept_drops_the_candidates_of_least_weight_per_pixel(seed):
    g = torch.Generator().manual_seed(seed)
    n = 500
    weights, areas = torch.rand(n, generator=g) * 10, torch.rand(n, generator=g) * 100
    candidates = torch.rand(n, generator=g) < 0.5
    keep = faint_kept(weights, areas, candidates, 0.3)
    dropped = ~keep
    assert int(dropped.sum()) == int(int(candidates.sum()) * 0.3) > 0
    density = weights / (areas + 1.0)
    assert not bool((dropped & ~candidates).any())
    assert float(density[dropped].max()) <= float(density[candidates & keep].min())
    assert bool(faint_kept(weights, areas, candidates, 0.0).all())


def test_footprints_are_the_alpha_ellipses_pixels(trained, seed):
    """The summed footprint matches a count of the pixels where each Gaussian's alpha reaches 1/255."""
    gaussians, faces, rig, seq = trained
    g = torch.Generator().manual_seed(seed)
    t = int(torch.randint(0, seq.num_frames, (1,), generator=g))
    views = _views(rig, seq, [t])
    res = seq.resolution
    _, areas = blend_statistics(gaussians, faces, views, res, res)
    vertices, K, viewmat, params = views[0]
    world = pose_gaussians(gaussians, vertices, faces, params)
    _, _, meta = rasterize(world.means, world.quats, world.scales, world.opacities,
                           torch.ones(gaussians.num_gaussians, 1), viewmat, K, res, res)
    pick = torch.nonzero(meta["radii"] > 0).flatten()[torch.randperm(int((meta["radii"] > 0).sum()), generator=g)[:20]]
    fine = (torch.arange(-4 * res, 8 * res) + 0.5) / 4  # 16 samples per pixel, reaching beyond the picture
    ys, xs = torch.meshgrid(fine, fine, indexing="ij")
    for i in pick.tolist():
        dx, dy = xs - meta["means2d"][i, 0].detach(), ys - meta["means2d"][i, 1].detach()
        a, b, c = meta["conics"][i].detach()
        alpha = meta["opacities"][i].detach() * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        counted = float((alpha >= 1 / 255).sum()) / 16
        assert float(areas[i]) == pytest.approx(counted, rel=0.05, abs=1.0)
