"""Portraits end to end on the synthetic subject: a torso proxy and a background plate in the avatar folder make the
trainer bind Gaussians to the torso and learn over the plate, the held-out evaluation score the picture a user sees,
and the runtime render the person in front of the room; the torso fit recovers known shoulders."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatar3d.gaussians.avatar_render import binding_index
from avatar3d.head.torso import TorsoShape, attach_torso, grid_cells, load_torso, save_torso
from avatar3d.io.avatar_dir import FRAME_PATTERN, AvatarPaths
from avatar3d.render.plate import BackgroundPlate


def _texture(rng, size: int) -> np.ndarray:  # -> [S,S,3] uint8: smooth colour blobs
    import cv2

    noise = rng.uniform(0, 255, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def _make_portrait(folder, seed: int) -> BackgroundPlate:
    """Turn a synthetic avatar folder into a portrait's: a plate behind (the frames composited over it, the masks
    given the whole-person channel) and a torso."""
    from avatar3d.tracking.sequence import TrackedSequence

    paths = AvatarPaths(folder)
    seq = TrackedSequence.load(paths.tracking)
    rng = np.random.default_rng(seed)
    plate = BackgroundPlate(_texture(rng, seq.resolution), seq.K, seq.viewmat, 2.0)
    plate.save(folder)
    for i in range(seq.num_frames):
        name = FRAME_PATTERN.format(i)
        mask = np.asarray(Image.open(paths.masks / name).convert("L"))
        frame = np.asarray(Image.open(paths.frames / name).convert("RGB")).astype(np.float32)
        a = mask.astype(np.float32)[..., None] / 255.0
        real = frame * a + plate.image.astype(np.float32) * (1 - a)
        Image.fromarray(np.clip(real + 0.5, 0, 255).astype(np.uint8)).save(paths.frames / name)
        Image.fromarray(np.stack([mask, mask], -1), mode="LA").save(paths.masks / name)
    save_torso(folder, TorsoShape(), {"iou": 1.0})
    return plate


def _train_portrait(root: Path, torso_prune_share: float, **overrides):
    from avatar3d.pipeline.synthetic_eval import build_avatar_dir, eval_subject
    from avatar3d.training.config import TrainConfig
    from avatar3d.training.trainer import train_gaussians

    subject = eval_subject(seconds=1.0, fps=10, resolution=64, seed=0, texture_size=256, supersample=1)
    folder = build_avatar_dir(subject, root / "avatar")
    plate = _make_portrait(folder, 0)
    cfg = TrainConfig(iterations=40, resolution=64, init_gaussians=1500, max_gaussians=1500, sh_degree=0,
                      densify_from=10**6, densify_until=10**6, densify_every=10**6, opacity_reset_every=0,
                      checkpoint_every=0, refine_params=False, prune_share=0.0, torso_prune_share=torso_prune_share,
                      seed=1)
    cfg = dataclasses.replace(cfg, **overrides)
    train_gaussians(folder, cfg, progress=False, frames_train=list(range(8)), rig=subject.rig)
    return folder, plate, subject.rig


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    """A synthetic portrait trained for a few dozen steps (64 px), and its plate (every Gaussian kept: counts are
    checked)."""
    return _train_portrait(tmp_path_factory.mktemp("portrait"), 0.0)


def _bound_to_torso(folder: Path, rig):
    """(the avatar's Gaussians, [N] bool: bound to its torso)."""
    from avatar3d.gaussians.store import load_gaussians

    gaussians, faces = load_gaussians(AvatarPaths(folder), "cpu")
    return gaussians, attach_torso(rig, load_torso(folder)).region("torso")[faces].all(1)[gaussians.parent]


def _torso_opacities(folder: Path, rig):
    gaussians, on_torso = _bound_to_torso(folder, rig)
    return torch.sigmoid(gaussians.opacity_logits.detach()[on_torso])


def test_the_torso_opacity_term_makes_its_gaussians_opaque_or_clear(portrait, tmp_path):
    """--train.lambda-torso-opacity, after densification: the torso's opacities move towards 0 or 1."""
    plain = _torso_opacities(portrait[0], portrait[2])
    folder, _, rig = _train_portrait(tmp_path, 0.0, densify_until=0, lambda_torso_opacity=10.0)
    pushed = _torso_opacities(folder, rig)
    assert len(pushed) == len(plain) > 100
    assert float((pushed * (1 - pushed)).mean()) < 0.8 * float((plain * (1 - plain)).mean())


def test_training_thins_the_torso_it_shows(portrait, tmp_path):
    """--train.torso-prune-share drops that share of the torso's Gaussians the pictures show when densification ends
    (here half-way: the steps after it train what is left); the head's stay."""
    def counts(folder, rig):
        on_torso = _bound_to_torso(folder, rig)[1]
        return int((~on_torso).sum()), int(on_torso.sum())

    head, torso = counts(portrait[0], portrait[2])
    thinned, _, rig = _train_portrait(tmp_path, 0.5, densify_until=20)
    head_thinned, torso_thinned = counts(thinned, rig)
    assert head_thinned == head and torso_thinned < torso
    assert torso - torso_thinned <= torso // 2  # only the shown ones are candidates


def test_thinning_spares_the_triangles_a_side_view_sees():
    """The torso's thinning takes only triangles facing the camera within 72.5 degrees (either side): a flank, near
    edge-on in the frames, stays for the side views."""
    from avatar3d.training.trainer import _facing

    camera_at_origin = torch.eye(4)  # looking down +z
    # facing (in the xy-plane), facing from behind, turned 60 degrees, turned 80 degrees (near edge-on), edge-on
    turns = [0.0, 180.0, 60.0, 80.0, 90.0]
    vertices, faces = [], []
    for k, degrees in enumerate(turns):
        c, s_ = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        corners = [(0.0, 0.0), (0.1, 0.0), (0.0, 0.1)]  # (u, v) in the triangle's plane: u turned about y
        vertices += [(u * c - 0.05 * c, v - 0.03, 2.0 + k + u * s_) for u, v in corners]  # on the optical axis
        faces.append((3 * k, 3 * k + 1, 3 * k + 2))
    facing = _facing((torch.tensor(vertices), torch.eye(3), camera_at_origin), torch.tensor(faces))
    assert facing.tolist() == [True, True, True, False, False]


def test_gaussians_cover_the_torso_sparser_than_the_head(portrait):
    from avatar3d.gaussians.store import load_gaussians

    folder, _, rig = portrait
    gaussians, faces = load_gaussians(AvatarPaths(folder), "cpu")
    with_torso = attach_torso(rig, load_torso(folder))
    on_torso = with_torso.region("torso")[faces].all(1)  # [F'] binding triangles of the torso
    assert int(faces.max()) >= rig.num_vertices  # the binding reaches the torso's vertices
    # the straight part below the shoulders is left out: below the frame the continuation fills it in its own way
    straight = grid_cells(with_torso, binding_index(with_torso))[:, 0] >= with_torso.meta["torso_grid"]["slope_bands"]
    counted = ~straight[gaussians.parent]
    share = float(on_torso[gaussians.parent][counted].double().mean())
    # by area the torso would take most of them; at a quarter of the density, a clear minority
    v = with_torso.template.double()
    area = 0.5 * torch.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]], dim=1).norm(dim=1)
    area = torch.where(straight, torch.zeros_like(area), area)
    by_area = float(area[on_torso].sum() / area.sum())
    expected = 0.25 * by_area / (0.25 * by_area + (1 - by_area))
    assert share == pytest.approx(expected, abs=0.03) and share < by_area


def test_holdout_scores_the_portrait_over_its_plate(portrait):
    from avatar3d.pipeline.holdout import HoldoutConfig, evaluate_holdout

    folder, _, rig = portrait
    m = evaluate_holdout(folder, rig, frames_eval=[8, 9], config=HoldoutConfig(refine_steps=1, refine_resolution=32),
                         video=False)
    for key in ("psnr_full", "ssim_full", "psnr_head", "psnr", "psnr_refined"):
        assert m[key] is not None and np.isfinite(m[key]), key
    assert m["psnr_torso"] is None  # this subject has no shoulders to score
    assert m["psnr_full"] > 18.0  # the plate is exact where the person is not; the head is 40 steps old


def test_the_runtime_renders_the_person_in_front_of_the_room(portrait):
    from avatar3d.api import Avatar

    folder, plate, _ = portrait
    avatar = Avatar.load(folder, device="cpu")
    assert avatar.is_portrait and avatar.plate is not None
    params = avatar.tracked(refined=False)
    frame = avatar.render_frame(params, 0, resolution=64)  # background "auto": the plate
    clear = frame.alpha == 0
    assert clear.mean() > 0.2
    expected = plate.render(frame.camera.K, frame.camera.viewmat, 64, 64)
    assert np.abs(frame.image[clear].astype(int) - expected[clear].astype(int)).max() <= 1
    white = avatar.render_frame(params, 0, resolution=64, background=(1.0, 1.0, 1.0))
    assert (white.image[clear] == 255).all()


def test_the_torso_fit_finds_known_shoulders(tmp_path, seed):
    """Person masks drawn from a known torso on the synthetic rig, seen far enough to show the shoulders: the fit
    lands within one grid step of the truth."""
    from avatar3d.camera import intrinsics, orbit_viewmat
    from avatar3d.head.lbs import pose_vertices
    from avatar3d.head.registry import load_rig
    from avatar3d.head.rig import RigParams
    from avatar3d.render.mesh_raster import rasterize_triangles
    from avatar3d.training.torso_fit import fit_torso
    from conftest import sequence_of

    rng = np.random.default_rng(seed)
    rig = load_rig("synthetic")
    truth = TorsoShape(shoulder_width=float(rng.choice([0.34, 0.40, 0.46])),
                       shoulder_drop=float(rng.choice([0.04, 0.08])), chest_depth=0.2, length=0.5)
    n, R = 4, 96
    p = RigParams.zeros(rig, n)
    p.neck[:, 1] = torch.as_tensor(rng.uniform(-0.2, 0.2, n), dtype=torch.float32)
    K, viewmat = intrinsics(40.0, R, R), orbit_viewmat(1.2, target=(0.0, -0.15, 0.0))
    body = attach_torso(rig, truth)
    masks = tmp_path / "masks"
    masks.mkdir()
    with torch.no_grad():
        verts = pose_vertices(body, p)
    for t in range(n):
        sil = rasterize_triangles(verts[t], body.faces[body.renderable_faces()], K, viewmat, R, R,
                                  backfaces="draw").mask.numpy()
        m = (sil * 255).astype(np.uint8)
        Image.fromarray(np.stack([m, m], -1), mode="LA").save(masks / FRAME_PATTERN.format(t))
    seq = sequence_of(rig, p, K, viewmat, R)
    shape, info = fit_torso(seq, rig, masks, list(range(n)))
    assert abs(shape.shoulder_width - truth.shoulder_width) <= 0.021
    assert abs(shape.shoulder_drop - truth.shoulder_drop) <= 0.021
    assert info["iou"] > 0.9


def test_bench_portrait_compares_with_the_head_alone(portrait, tmp_path):
    import json

    from avatar3d.benchmarks.portrait import BenchPortraitConfig, main

    folder, _, _ = portrait
    out = tmp_path / "bench.json"
    assert main(BenchPortraitConfig(folder, frames=3, resolution=32, repeats=1, json=out)) == 0
    result = json.loads(out.read_text())
    portrait_mode, head_mode = result["modes"].values()
    assert result["frames"] == 3 and portrait_mode["gaussians"] > head_mode["gaussians"] > 0
    assert result["ratio"] == pytest.approx(portrait_mode["fps"] / head_mode["fps"], rel=0.01)


def test_bench_render_splits_a_clip_into_its_stages(portrait, tmp_path):
    import json

    from avatar3d.benchmarks.render import STAGES, BenchRenderConfig, main
    from avatar3d.render import native

    folder, _, _ = portrait
    out = tmp_path / "bench.json"
    assert main(BenchRenderConfig(folder, frames=3, resolution=32, repeats=1, orbit=20.0, json=out)) == 0
    result = json.loads(out.read_text())
    stages = result["stages_ms"]
    expected = set(STAGES) if native.is_available() else set(STAGES) - {"project", "intersect", "sort", "blend"}
    assert set(stages) == expected and all(ms >= 0 for ms in stages.values())
    assert result["frames"] == 3 and result["fps"] > 0
    assert result["frame_ms"] == pytest.approx(sum(v for k, v in stages.items() if k != "encode"), abs=0.01)


def test_exports_carry_the_torso(portrait, tmp_path):
    """The splat PLY holds every Gaussian, torso included; the rigged bundle's rig has the torso's vertices."""
    import json

    from avatar3d import cli
    from avatar3d.gaussians.store import load_gaussians
    from avatar3d.io.ply import read_ply

    folder, _, rig = portrait
    gaussians, _ = load_gaussians(AvatarPaths(folder), "cpu")
    assert cli.run(["export", str(folder), "--ply", str(tmp_path / "a.ply"), "--rig", str(tmp_path / "b")]) == 0
    assert len(read_ply(tmp_path / "a.ply").means) == gaussians.num_gaussians
    bundle = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert bundle["num_vertices"] == attach_torso(rig, load_torso(folder)).num_vertices > rig.num_vertices


def test_framing_warnings_name_a_second_person_and_cut_shoulders(seed):
    from avatar3d.training.torso_fit import framing_warnings

    rng = np.random.default_rng(seed)
    W = 64
    yy, xx = np.mgrid[0:W, 0:W]
    cx = W / 2 + rng.uniform(-3, 3)
    head = ((xx - cx) ** 2 + (yy - 20) ** 2) < 100
    narrow = head | ((np.abs(xx - cx) < 14) & (yy > 30))  # shoulders inside the frame
    wide = head | (yy > 40)  # shoulders cut by both sides
    stranger = narrow | (((xx - 8) ** 2 + (yy - 20) ** 2) < 64)  # a head beside: 4.9 % of the picture
    stack = lambda m: np.repeat(m[None], 4, 0)  # noqa: E731
    assert framing_warnings(stack(narrow), stack(head)) == []
    assert any("leave the frame" in w for w in framing_warnings(stack(wide), stack(head)))
    assert any("someone else" in w for w in framing_warnings(stack(stranger), stack(head)))


def test_the_neck_band_spans_where_head_and_torso_meet(seed):
    from avatar3d.pipeline.holdout import NECK_BAND, neck_band

    rng = np.random.default_rng(seed)
    W = 80
    top, bottom = int(rng.integers(5, 15)), int(rng.integers(40, 50))
    head = torch.zeros(W, W)
    head[top:bottom + 1, 25:55] = 1
    person = head.clone()
    person[bottom:, 10:70] = 1  # the shoulders below
    band = neck_band(head, person)
    rows = torch.nonzero(band.any(1)).flatten()
    height = bottom - top
    assert int(rows[0]) == int(bottom - NECK_BAND[0] * height)
    assert int(rows[-1]) == int(bottom + NECK_BAND[1] * height)
    assert bool((band <= person).all())  # only the person's pixels
    assert neck_band(torch.zeros(W, W), person) is None


def test_a_portrait_without_its_torso_is_refused_clearly(portrait, tmp_path):
    import shutil

    from avatar3d.api import Avatar
    from avatar3d.errors import InputError
    from avatar3d.head.torso import TORSO_JSON

    folder, _, _ = portrait
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / TORSO_JSON).unlink()
    with pytest.raises(InputError, match="torso.json"):
        Avatar.load(copy, device="cpu")
