"""`avatar3d eval synthetic` end to end on a tiny subject: avatar dir from known parameters, train, novel views."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from avatar3d.errors import InputError
from avatar3d.pipeline.synthetic_eval import (TRAIN_VIEW, VIEW_ORDER, _unpremultiply, build_avatar_dir, eval_subject,
                                          format_table, run_synthetic_eval)
from avatar3d.head.synthetic_subject import NOVEL_VIEWS
from avatar3d.head.synthetic import synthetic_rig
from avatar3d.io.avatar_dir import AvatarPaths, read_manifest
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training.config import TrainConfig

RES = 96


@pytest.fixture(scope="module")
def rig():
    return synthetic_rig()


def _subject(rig, seed, **kw):
    opts = dict(seconds=1.0, fps=10, resolution=RES, seed=seed, texture_size=256, supersample=1)
    opts.update(kw)
    subject = eval_subject(**opts)
    assert subject.rig.checksum() == rig.checksum()
    return subject


def _tiny_train(**kw) -> TrainConfig:
    from conftest import tiny_train_config

    return tiny_train_config(RES, **kw)


def test_unpremultiplied_frames_composite_back_to_the_rendered_frame(seed):
    rng = np.random.default_rng(seed)
    bg = rng.uniform(0, 1, 3)
    colour = rng.uniform(0, 1, (16, 16, 3))
    alpha = rng.uniform(0, 1, (16, 16))
    alpha[:4] = 0.0
    alpha[4:8] = 1.0
    image = np.rint((colour * alpha[..., None] + bg * (1 - alpha[..., None])) * 255).astype(np.uint8)
    stored = _unpremultiply(image, alpha, bg).astype(np.float64) / 255.0
    back = stored * alpha[..., None] + bg * (1 - alpha[..., None])  # what the trainer does with frame + mask
    assert np.abs(back * 255 - image).max() <= 1.0
    # compositing the rendered frame itself again would be visibly off at partial coverage
    again = image / 255.0 * alpha[..., None] + bg * (1 - alpha[..., None])
    assert np.abs(again * 255 - image).max() > 5.0


def test_the_avatar_directory_holds_the_known_parameters_frames_and_masks(rig, tmp_path, seed):
    subject = _subject(rig, seed, seconds=0.4)
    root = build_avatar_dir(subject, tmp_path / "av")
    paths = AvatarPaths(root)
    seq = TrackedSequence.load(paths.tracking)
    assert seq.num_frames == subject.num_frames == 4
    assert seq.rig_checksum == rig.checksum() and read_manifest(root).rig_name == rig.name
    assert np.allclose(seq.K, subject.camera.K.numpy()) and np.allclose(seq.viewmat, subject.camera.viewmat.numpy())
    for key in ("expr", "jaw", "neck", "eyes", "shape"):
        assert np.array_equal(getattr(seq, key), getattr(subject.params, key).numpy()), key
    image, alpha = subject.render(2)
    mask = np.asarray(Image.open(paths.masks / "000002.png"), dtype=np.float64) / 255.0
    assert np.abs(mask - alpha[..., 0].numpy()).max() <= 1 / 255 + 1e-6
    assert 0.1 < mask.mean() < 0.9  # a head, not an empty or full frame
    frame = np.asarray(Image.open(paths.frames / "000002.png"), dtype=np.float64) / 255.0
    bg = np.asarray(subject.background)
    composite = frame * mask[..., None] + bg * (1 - mask[..., None])
    assert np.abs(composite - image.numpy()).max() < 3 / 255


def test_training_on_the_subject_beats_an_untrained_baseline_on_novel_views(rig, tmp_path, seed):
    # a closer camera than the real evaluation's: the head fills the tiny frames (the neck is cut, never mind)
    subject = _subject(rig, seed % 1000, novel_frames=2, camera_distance=0.8)
    report = run_synthetic_eval(tmp_path / "out", _tiny_train(iterations=200), subject=subject, train_video=False,
                                progress=False)
    assert set(report["views"]) == set(VIEW_ORDER)
    # the untrained baseline: a uniform render in the frame's mean colour, per view (~10-14 dB here)
    cams = {**subject.novel_cameras(), TRAIN_VIEW: subject.camera}
    for name in VIEW_ORDER:
        base = []
        for t in subject.novel_frames:
            truth = subject.render(t, cams[name])[0]
            flat = truth.mean(dim=(0, 1)).expand_as(truth)
            base.append(-10 * math.log10(float(((flat - truth) ** 2).mean())))
        got = report["views"][name]["psnr"]
        assert math.isfinite(got)
        assert got > float(np.mean(base)) + 6.0, (name, got, base)
        assert 0.5 < report["views"][name]["ssim"] <= 1.0
    assert report["views"][TRAIN_VIEW]["psnr"] > 25.0  # the view it trained on is learned well
    assert report["psnr"] == pytest.approx(np.mean([report["views"][n]["psnr"] for n in NOVEL_VIEWS]))
    assert report["frames_train"] == subject.num_frames
    sheet = np.asarray(Image.open(report["outputs"]["sheet"]))
    assert sheet.shape == (RES * len(VIEW_ORDER), RES * 3, 3)
    table = format_table(report)
    assert all(name in table for name in VIEW_ORDER) and "novel mean" in table


def test_a_subject_on_another_background_is_refused(rig, tmp_path, seed):
    subject = _subject(rig, seed, seconds=0.2, background=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="background"):
        run_synthetic_eval(tmp_path / "out", _tiny_train(), subject=subject, train_video=False, progress=False)
    with pytest.raises(InputError, match="too small"):
        eval_subject(resolution=8)
