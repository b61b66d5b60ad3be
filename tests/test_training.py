"""Gaussian avatar training on a tiny synthetic subject (synthetic rig, frames rendered from a known set)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar3d.camera import intrinsics, orbit_viewmat
from avatar3d.errors import InputError
from avatar3d.gaussians.densify import DensifyStats, densify_and_prune, rebuild, reset_opacity
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.registry import load_rig
from avatar3d.head.rig import RigParams
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, write_manifest
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training import checkpoint as ckpt_io
from avatar3d.training.config import TrainConfig
from avatar3d.head.refined import load_refined
from avatar3d.training.losses import padded_ssim, photometric_loss
from avatar3d.gaussians.avatar_render import binding_faces, render_avatar
from avatar3d.training.trainer import train_gaussians
from conftest import sequence_of

RES = 64
FRAMES = 6


def _backend() -> str:
    from avatar3d.render.rasterize import available_backends

    return "cpu" if "cpu" in available_backends() else "torch"


def _sequence_params(rig, n: int, g: torch.Generator) -> RigParams:
    params = RigParams.zeros(rig, n)
    params.expr = 0.3 * torch.rand(n, rig.num_expr, generator=g)
    params.jaw[:, 0] = 0.15 * torch.rand(n, generator=g)
    params.neck[:, 1] = torch.linspace(-0.15, 0.15, n)
    return params


def make_synthetic_avatar(root, seed: int, n: int = FRAMES):
    """An avatar folder whose frames are rendered from a known, colourful Gaussian set; returns (root, gt params)."""
    from PIL import Image

    rig = load_rig("synthetic")
    g = torch.Generator().manual_seed(seed)
    faces = binding_faces(rig)
    tri_colour = torch.rand(faces.shape[0], 3, generator=g)
    truth = BoundGaussians.on_surface(rig.template, faces, 3000, colours=tri_colour, opacity=0.95, generator=g)
    params = _sequence_params(rig, n, g)
    K = intrinsics(30.0, RES, RES)
    viewmat = orbit_viewmat(0.75, target=(0.0, -0.02, 0.0))
    paths = AvatarPaths(root)
    paths.frames.mkdir(parents=True)
    bg = torch.ones(3)
    for t in range(n):
        with torch.no_grad():
            out = render_avatar(truth, rig, faces, params.slice(slice(t, t + 1)), K, viewmat, RES, RES, bg,
                                backend=_backend())
        Image.fromarray((out.image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(
            paths.frames / f"{t:06d}.png")
    sequence_of(rig, params, K, viewmat, RES).save(paths.tracking)
    write_manifest(root, AvatarManifest(rig_name=rig.name, rig_checksum=rig.checksum()))
    return root, params


def _config(**kw) -> TrainConfig:
    # no pruning after training: these tests count what densification made (tests/test_prune.py prunes)
    base = dict(iterations=150, resolution=RES, init_gaussians=1500, max_gaussians=3000, sh_degree=0,
                densify_from=50, densify_until=120, densify_every=50, opacity_reset_every=0, checkpoint_every=0,
                mouth_eye_weight=2.0, refine_from=50, seed=1, prune_share=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _render_psnr(root, params_file: bool = True) -> float:
    """PSNR of the trained avatar over the training frames, with the tracked parameters."""
    from safetensors.torch import load_file

    from avatar3d.training.trainer import load_frames

    rig = load_rig("synthetic")
    paths = AvatarPaths(root)
    tensors = load_file(paths.gaussians)
    gaussians = BoundGaussians.from_tensors(tensors)
    seq = TrackedSequence.load(paths.tracking)
    frames = load_frames(paths, seq, list(range(seq.num_frames)), RES, [1.0, 1.0, 1.0])
    values = []
    for t in range(seq.num_frames):
        with torch.no_grad():
            out = render_avatar(gaussians, rig, tensors["binding_faces"], seq.params().slice(slice(t, t + 1)),
                                frames.K, frames.viewmat, RES, RES, torch.ones(3), backend=_backend())
        mse = float(((out.image - frames.images[t].float() / 255) ** 2).mean())
        values.append(-10 * math.log10(max(mse, 1e-10)))
    return float(np.mean(values))


def test_training_fits_the_synthetic_subject(tmp_path, seed):
    root, truth = make_synthetic_avatar(tmp_path / "av", seed)
    with pytest.warns(RuntimeWarning, match="no foreground masks"):
        first = train_gaussians(root, _config(iterations=1), progress=False, frames_train=range(FRAMES), rig=None)
    before = _render_psnr(root)
    result = train_gaussians(root, _config(), progress=False, frames_train=range(FRAMES))
    after = _render_psnr(root)
    assert first.num_gaussians == 1500
    assert after > before + 5.0, (before, after)
    assert result.train_psnr > 20.0
    assert 1500 < result.num_gaussians <= 3000  # densified, within the cap
    # refined parameters stay close to the tracked ones (the frames were rendered with exactly those)
    refined, split = load_refined(root / "refined.npz")
    assert split == list(range(FRAMES))
    assert float((refined.expr - truth.expr).abs().max()) < 0.05
    assert float((refined.neck - truth.neck).abs().max()) < 0.01
    assert float((refined.transl - truth.transl).abs().max()) < 1e-3


def test_densify_keeps_binding_and_optimizer_aligned(seed):
    rig = load_rig("synthetic")
    faces = binding_faces(rig)
    g = torch.Generator().manual_seed(seed)
    gs = BoundGaussians.on_surface(rig.template, faces, 400, generator=g)
    opt = torch.optim.Adam([{"name": n, "params": [getattr(gs, n)], "lr": 1e-3}
                            for n in ("local_means", "log_scales", "quats", "opacity_logits", "sh")])
    # give every row a distinct, recognisable Adam moment
    (gs.local_means.sum() + gs.log_scales.sum() + gs.quats.sum() + gs.opacity_logits.sum() + gs.sh.sum()).backward()
    opt.step()
    for n in ("local_means", "opacity_logits"):
        opt.state[getattr(gs, n)]["exp_avg"] = torch.arange(400, dtype=torch.float32).reshape(
            (400,) + (1,) * (getattr(gs, n).dim() - 1)).expand_as(getattr(gs, n)).clone()
    with torch.no_grad():
        gs.opacity_logits[:50] = -10.0  # prunable
        gs.log_scales[100:110] += 3.0  # large: split when their gradient is high
    stats = DensifyStats(400, torch.device("cpu"))
    stats.grad_accum[100:130] = 1.0  # 100..109 large -> split, 110..129 small -> clone
    stats.count[:] = 1
    from avatar3d.gaussians.binding import triangle_frames

    _, _, tri_scale = triangle_frames(rig.template, faces)
    extent = float(rig.template.norm(dim=-1).max())
    with torch.no_grad():
        world_size = tri_scale[gs.parent] * torch.exp(gs.log_scales).amax(-1)
    small_enough = float(world_size[110:].max()) * 1.01  # everything but the enlarged rows counts as small
    new, report = densify_and_prune(gs, opt, stats, tri_scale, extent=extent, max_gaussians=10_000,
                                    percent_dense=small_enough / extent, max_world_scale=1e9, generator=g)
    assert (report.pruned, report.split, report.cloned) == (50, 10, 20)
    assert new.num_gaussians == 400 - 50 - 10 + 20 + 20
    # kept rows first, in order, then clones, then split children: each keeps its parent triangle
    kept = [i for i in range(400) if i >= 50 and not 100 <= i < 110]
    expect_parent = torch.cat([gs.parent[kept], gs.parent[110:130], gs.parent[100:110].repeat(2)])
    assert torch.equal(new.parent, expect_parent)
    m = opt.state[new.local_means]["exp_avg"][:, 0]
    assert torch.equal(m[:len(kept)], torch.tensor(kept, dtype=torch.float32))
    assert bool((m[len(kept):] == 0).all())  # newborn rows start with zero moments
    for n in ("local_means", "log_scales", "quats", "opacity_logits", "sh"):
        p = getattr(new, n)
        assert opt.param_groups[[gr["name"] for gr in opt.param_groups].index(n)]["params"][0] is p
        assert opt.state[p]["exp_avg_sq"].shape == p.shape
    # split children are smaller than their parent
    assert bool((new.log_scales[-20:] < gs.log_scales[100:110].repeat(2, 1)).all())
    assert torch.equal(new.local_means[:len(kept)], gs.local_means[kept])
    # optimisation still runs on the new parameters
    new.local_means.sum().backward()
    opt.step()
    reset_opacity(new, opt, 0.01)
    assert float(torch.sigmoid(new.opacity_logits.detach()).max()) <= 0.0100001


def test_densify_respects_the_cap(seed):
    rig = load_rig("synthetic")
    faces = binding_faces(rig)
    gs = BoundGaussians.on_surface(rig.template, faces, 300, generator=torch.Generator().manual_seed(seed))
    stats = DensifyStats(300, torch.device("cpu"))
    stats.grad_accum[:] = torch.rand(300) + 1.0
    stats.count[:] = 1
    from avatar3d.gaussians.binding import triangle_frames

    _, _, tri_scale = triangle_frames(rig.template, faces)
    new, _ = densify_and_prune(gs, None, stats, tri_scale, extent=0.2, max_gaussians=340)
    assert new.num_gaussians == 340
    sub = rebuild(gs, None, torch.tensor([3, 3, 7]))
    assert torch.equal(sub.parent, gs.parent[[3, 3, 7]])


@pytest.mark.parametrize("components", [0, 2], ids=["plain", "expression"])
def test_resume_continues_identically(tmp_path, seed, components):
    root, _ = make_synthetic_avatar(tmp_path / "av", seed, n=3)
    cfg = _config(iterations=40, checkpoint_every=20, densify_from=10, densify_until=30, densify_every=10,
                  init_gaussians=600, expression_components=components)
    with pytest.warns(RuntimeWarning):
        full = train_gaussians(root, cfg, progress=False, frames_train=[0, 1, 2])
    reference = (root / "gaussians.safetensors").read_bytes()
    records = ckpt_io.list_checkpoints(root / "checkpoints")
    assert [r.stem for r in records] == ["step_000020", "step_000040"]
    for suffix in (".json", ".safetensors", ".optim.pt"):
        records[-1].with_suffix(suffix).unlink()  # as if interrupted after step 20
    with pytest.warns(RuntimeWarning):
        again = train_gaussians(root, cfg, progress=False, frames_train=[0, 1, 2], resume=True)
    assert again.resumed_from == 20 and again.steps == 20
    assert again.num_gaussians == full.num_gaussians
    from safetensors.torch import load

    a, b = load(reference), load((root / "gaussians.safetensors").read_bytes())
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    offsets = a.get("expr_colours")
    assert (offsets is None) == (components == 0)  # three frames span two directions: two components
    assert offsets is None or (offsets.shape[1] == 2 and float(offsets.abs().max()) > 0)  # trained


def test_fresh_run_replaces_an_earlier_runs_checkpoints(tmp_path, seed):
    """A longer earlier run's checkpoints (higher steps) must not outrank a fresh run's: they would prune its
    checkpoints as they are written, and an interrupted fresh run would `--resume` from the stale run."""
    root, _ = make_synthetic_avatar(tmp_path / "av", seed, n=2)
    with pytest.warns(RuntimeWarning):
        train_gaussians(root, _config(iterations=30, checkpoint_every=10, init_gaussians=300, densify_from=1000),
                        progress=False, frames_train=[0, 1])
    assert [r.stem for r in ckpt_io.list_checkpoints(root / "checkpoints")] == ["step_000020", "step_000030"]
    with pytest.warns(RuntimeWarning):
        train_gaussians(root, _config(iterations=10, checkpoint_every=5, init_gaussians=300, densify_from=1000),
                        progress=False, frames_train=[0, 1])
    assert [r.stem for r in ckpt_io.list_checkpoints(root / "checkpoints")] == ["step_000005", "step_000010"]
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == sorted(
        f"step_0000{s}{ext}" for s in ("05", "10") for ext in (".json", ".safetensors", ".optim.pt"))


def test_resume_under_other_settings_is_refused(tmp_path, seed):
    root, _ = make_synthetic_avatar(tmp_path / "av", seed, n=2)
    cfg = _config(iterations=20, checkpoint_every=10, init_gaussians=300, densify_from=1000)
    with pytest.warns(RuntimeWarning):
        train_gaussians(root, cfg, progress=False, frames_train=[0, 1])
    other = _config(iterations=40, checkpoint_every=10, init_gaussians=300, densify_from=1000)
    with pytest.warns(RuntimeWarning), pytest.raises(InputError, match=r"other training settings \(iterations 20 -> 40"):
        train_gaussians(root, other, progress=False, frames_train=[0, 1], resume=True)
    assert len(ckpt_io.list_checkpoints(root / "checkpoints")) == 2  # nothing was lost


def test_truncated_checkpoint_is_refused(tmp_path, seed):
    root, _ = make_synthetic_avatar(tmp_path / "av", seed, n=2)
    cfg = _config(iterations=20, checkpoint_every=10, init_gaussians=300, densify_from=1000)
    with pytest.warns(RuntimeWarning):
        train_gaussians(root, cfg, progress=False, frames_train=[0, 1])
    records = ckpt_io.list_checkpoints(root / "checkpoints")
    newest = records[-1].with_suffix(".safetensors")
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="truncated"):  # the older checkpoint is used instead
        assert ckpt_io.latest_checkpoint(root / "checkpoints").step == 10
    older = records[0].with_suffix(".optim.pt")
    older.write_bytes(older.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated or altered"):
        ckpt_io.latest_checkpoint(root / "checkpoints")
    with pytest.raises(InputError, match="truncated"):
        train_gaussians(root, cfg, progress=False, frames_train=[0, 1], resume=True)


def test_losses_behave(seed):
    a = torch.rand(32, 32, 3)
    assert float(padded_ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert float(padded_ssim(a, b)) < 0.9
    w = torch.ones(32, 32)
    w[:8] = 5.0
    assert float(photometric_loss(b, a, w)) > 0
    assert float(photometric_loss(a, a, w)) == pytest.approx(0.0, abs=1e-5)


def test_surface_regularizer_pulls_gaussians_onto_their_triangle(seed):
    from avatar3d.training.losses import surface_regularizer

    rig = load_rig("synthetic")
    faces = binding_faces(rig)
    gs = BoundGaussians.on_surface(rig.template, faces, 200, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        thick0, needle0 = surface_regularizer(gs)
    assert float(needle0) == 0.0  # flat discs are not needles
    with torch.no_grad():
        gs.local_means[:, 2] += 0.3  # off the plane
        gs.log_scales[:, 0] += 2.0  # in-plane needles
        thick1, needle1 = surface_regularizer(gs)
    assert float(thick1) > float(thick0) + 0.29
    assert float(needle1) > 0.0
    with torch.no_grad():  # turn every disc on edge: its extent along the normal grows, its shape does not change
        gs.log_scales[:, 0] -= 2.0
        gs.quats.copy_(torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0]).expand(200, 4))
    thick2, needle2 = surface_regularizer(gs)
    assert float(thick2.detach()) > float(thick1) + 0.5 * float(torch.exp(gs.log_scales.detach()[:, 1]).mean())
    assert float(needle2.detach()) == 0.0
    (thick2 + needle2).backward()
    assert float(gs.local_means.grad[:, 2].mean()) > 0 and float(gs.quats.grad.abs().sum()) > 0


def test_bad_initialisation_settings_are_refused(tmp_path, seed):
    root, _ = make_synthetic_avatar(tmp_path / "av", seed, n=2)
    for bad in (dict(init_opacity=1.0), dict(init_opacity=0.0), dict(init_views=0)):
        with pytest.raises(InputError, match="init_opacity"):
            train_gaussians(root, _config(iterations=2, **bad), progress=False, frames_train=[0, 1])


def test_unneeded_gaussians_are_dropped_but_never_right_after_a_reset(tmp_path, seed):
    """Gaussians left at the opacity reset's value long after it are not written; a reset at the very end leaves
    every Gaussian there, and then all are written (an empty avatar would be the result otherwise)."""
    from safetensors.torch import load_file

    root, _ = make_synthetic_avatar(tmp_path / "av", seed)
    late = train_gaussians(root, _config(iterations=60, densify_from=10**6, opacity_reset_every=60), progress=False,
                           frames_train=range(FRAMES))
    assert late.num_gaussians == 1500 == len(load_file(AvatarPaths(root).gaussians)["parent"])
    early = train_gaussians(root, _config(iterations=600, densify_from=10**6, opacity_reset_every=60,
                                          densify_until=60), progress=False, frames_train=range(FRAMES))
    written = load_file(AvatarPaths(root).gaussians)
    assert early.num_gaussians == len(written["parent"]) < 1500  # the ones no view raised again are gone
    assert float(torch.sigmoid(written["opacity_logits"]).min()) >= 0.0101
