"""The synthetic subject as a portrait: its layers, its wall against the plate's geometry, the enrollment stages'
torso fit and plate on it, and a tiny training run scored over the plate."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from avatar3d.camera import Camera, orbit_viewmat
from avatar3d.head.synthetic import synthetic_rig
from avatar3d.head.synthetic_portrait import SUBJECT_TORSO
from avatar3d.head.torso import load_torso
from avatar3d.io.avatar_dir import AvatarPaths
from avatar3d.pipeline.synthetic_eval import (PORTRAIT_TARGET, TRAIN_VIEW, VIEW_ORDER, build_avatar_dir, eval_subject,
                                          format_table, run_synthetic_eval)
from avatar3d.render.plate import BackgroundPlate, load_plate
from avatar3d.training.config import TrainConfig

RES = 96


@pytest.fixture(scope="module")
def rig():
    return synthetic_rig()


def _subject(seed, **kw):
    opts = dict(seconds=0.4, fps=10, resolution=RES, seed=seed, texture_size=256, supersample=1, portrait=True)
    opts.update(kw)
    return eval_subject(**opts)


def test_the_portrait_shows_head_over_shirt_over_wall(seed):
    subject = _subject(seed)
    out, head = subject.render_layers(subject.frame_params(1))
    person, head = out.alpha[..., 0].numpy(), head[..., 0].numpy()
    assert np.all(head <= person)  # the head is part of the person
    assert 0.05 < head.mean() < person.mean() < 0.8  # shoulders below the head, room around both
    rows = np.nonzero(person.max(1) > 0)[0]
    assert rows[-1] == RES - 1  # the shoulders run out of the bottom of the frame, as in a portrait video
    below = (person > 0.5) & (head < 0.5)
    assert below[RES // 2:].mean() > 0.2  # the shirt fills much of the lower half
    wall = subject.body.wall.draw(subject.camera).numpy()
    room = person == 0
    assert np.abs(out.image.numpy()[room] - wall[room]).max() < 1e-6  # the room is the wall wherever no one is
    assert wall.std(axis=(0, 1)).max() > 0.05  # and it is painted, not a solid colour


def _plate_error(subject, plate: BackgroundPlate, camera: Camera) -> float:
    """Mean absolute error of the plate against the wall where the training camera saw the wall (2 px inside)."""
    truth = subject.body.wall.draw(camera, 4).reshape(camera.height, 4, camera.width, 4, 3).mean((1, 3)).numpy()
    seen = subject.body.wall.seen(camera, subject.camera).numpy()
    seen[:2], seen[-2:], seen[:, :2], seen[:, -2:] = False, False, False, False
    picture = plate.render(camera.K, camera.viewmat, camera.width, camera.height) / 255.0
    assert seen.mean() > 0.3
    return float(np.abs(picture - truth)[seen].mean())


def test_the_plate_placed_on_the_wall_sees_it_as_a_moved_camera_does(seed):
    # The plate's homography and the wall's ray casting are written independently: a plate made of the wall as the
    # training camera sees it, placed at the wall's depth, must show the wall from other cameras too.
    subject = _subject(seed, seconds=0.1)
    train = subject.camera
    image = subject.body.wall.draw(train, 4).reshape(RES, 4, RES, 4, 3).mean((1, 3)).numpy()
    image = (image * 255 + 0.5).astype(np.uint8)
    right = BackgroundPlate(image, train.K.numpy(), train.viewmat.numpy(), subject.body.wall.depth)
    wrong = BackgroundPlate(image, train.K.numpy(), train.viewmat.numpy(), 0.6 * subject.body.wall.depth)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        yaw, factor = rng.uniform(-12, 12), rng.uniform(0.8, 1.3)
        view = orbit_viewmat(subject.distance * factor, yaw, rng.uniform(-5, 5), PORTRAIT_TARGET)
        camera = Camera(train.K.clone(), view, RES, RES)
        good, bad = _plate_error(subject, right, camera), _plate_error(subject, wrong, camera)
        assert good < 0.02, (seed, yaw, factor, good)
        assert bad > 2 * good, (seed, yaw, factor, good, bad)  # the check can tell a misplaced plate


def test_enrollment_stages_fit_the_subjects_torso_and_recover_its_room(rig, tmp_path, seed):
    subject = _subject(seed)
    root = build_avatar_dir(subject, tmp_path / "av")
    paths = AvatarPaths(root)
    with Image.open(paths.masks / "000001.png") as mask:
        assert mask.mode == "LA"  # the head (grey) and the whole person (alpha), as the segmentation stage writes
        head, person = (np.asarray(mask.getchannel(c), np.float64) / 255.0 for c in ("L", "A"))
    _, truth_head = subject.render_layers(subject.frame_params(1))
    assert np.abs(head - truth_head[..., 0].numpy()).max() <= 1 / 255 + 1e-6 and np.all(head <= person + 1e-6)
    shape = load_torso(root)
    assert abs(shape.shoulder_width - SUBJECT_TORSO.shoulder_width) <= 0.041, shape
    assert abs(shape.shoulder_drop - SUBJECT_TORSO.shoulder_drop) <= 0.041, shape
    info = json.loads((root / "torso.json").read_text())["info"]
    assert info["iou"] > 0.9 and not info["warnings"]
    plate = load_plate(root)
    assert plate is not None and plate.depth == pytest.approx(subject.body.wall.depth, rel=1e-6)
    wall = subject.body.wall.draw(subject.camera).numpy()
    error = np.abs(plate.image / 255.0 - wall).mean(-1)  # [R,R]
    assert np.median(error) < 0.01  # where the room was seen it is the wall...
    assert error[person < 0.01].mean() < 0.03  # ...and what the person always hid is filled in near its colours


def _tiny_train(**kw) -> TrainConfig:
    from conftest import tiny_train_config

    return tiny_train_config(RES, **{"iterations": 200, "densify_until": 150, **kw})


def test_a_portrait_trained_on_the_subject_is_scored_over_its_plate(tmp_path, seed):
    subject = _subject(seed % 1000, seconds=1.0, novel_frames=2)
    report = run_synthetic_eval(tmp_path / "out", _tiny_train(), subject=subject, train_video=False, progress=False)
    assert report["framing"] == "portrait" and report["target_on"] == "psnr_seen"
    assert set(report["views"]) == set(VIEW_ORDER)
    train = report["views"][TRAIN_VIEW]
    assert train["psnr"] > 25.0 and train["psnr_person"] > 22.0  # the picture it trained on, room and all
    for name in VIEW_ORDER:
        v = report["views"][name]
        assert all(math.isfinite(v[key]) for key in ("psnr", "ssim", "psnr_person", "psnr_seen"))
        assert v["psnr_seen"] > 18.0, (name, v)
    # the head alone over white would not be scored this way: the avatar carries the torso it was fitted
    assert load_torso(tmp_path / "out" / "avatar") is not None
    assert "seen dB" in format_table(report)


def test_a_head_subject_is_unchanged_by_the_portrait_option(rig, seed):
    head = eval_subject(seconds=0.2, fps=10, resolution=RES, seed=seed, texture_size=256, supersample=1)
    assert head.body is None
    out, coverage = head.render_layers(head.frame_params(0))
    assert np.array_equal(out.alpha.numpy(), coverage.numpy())
