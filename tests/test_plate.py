"""The background plate: a plane seen by any camera (render/plate.py) and its estimate from a video
(training/background.py), on seeded synthetic scenes and on the development videos."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.render.plate import PLATE_JSON, PLATE_PNG, BackgroundPlate, load_plate
from avatar3d.training.background import BackgroundConfig, estimate_plate, person_free, sample_indices


def _texture(rng, height: int, width: int) -> np.ndarray:  # -> [H,W,3] uint8, smooth random colour blobs
    import cv2

    noise = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def _plate(rng, depth: float = 2.0) -> BackgroundPlate:
    h, w = 120, 160
    f = rng.uniform(150, 250)
    K = np.array([[f, 0, w / 2 + rng.uniform(-5, 5)], [0, f, h / 2 + rng.uniform(-5, 5)], [0, 0, 1]])
    view = np.eye(4)
    view[:3, 3] = rng.uniform(-0.1, 0.1, 3)
    return BackgroundPlate(_texture(rng, h, w), K, view, depth)


def test_the_enrolled_camera_sees_the_plate_itself(seed):
    """The enrolled camera, on a crop of the plate (the training crop's camera), sees exactly that crop."""
    rng = np.random.default_rng(seed)
    plate = _plate(rng)
    x0, y0, size, res = int(rng.integers(0, 40)), int(rng.integers(0, 30)), 80, 80
    S = np.array([[res / size, 0, -res / size * x0], [0, res / size, -res / size * y0], [0, 0, 1]])
    seen = plate.render(S @ plate.K, plate.viewmat, res, res)
    np.testing.assert_array_equal(seen, plate.image[y0:y0 + size, x0:x0 + size])


def test_a_sideways_camera_moves_the_plate_by_its_parallax(seed):
    """A camera moved dx metres sideways sees the plane shift by f·dx/depth pixels (the other way)."""
    rng = np.random.default_rng(seed)
    plate = _plate(rng, depth=float(rng.uniform(1.0, 3.0)))
    shift_px = int(rng.integers(3, 10))
    dx = shift_px * plate.depth / plate.K[0, 0]
    moved = plate.viewmat.copy()
    moved[0, 3] -= dx  # camera centre moves +dx along its x axis
    seen = plate.render(plate.K, moved, 160, 120).astype(int)
    np.testing.assert_allclose(seen[:, :-shift_px], plate.image[:, shift_px:].astype(int), atol=1)


def test_zooming_out_keeps_the_picture_centred_and_filled(seed):
    rng = np.random.default_rng(seed)
    plate = _plate(rng)
    far = plate.viewmat.copy()
    far[2, 3] += float(rng.uniform(0.5, 2.0))  # camera backs away along its axis
    seen = plate.render(plate.K, far, 160, 120)
    assert seen.shape == (120, 160, 3) and seen.std() > 5  # mirrored continuation, no constant band
    # the principal point still sees the same plate pixel
    u, v = int(plate.K[0, 2]), int(plate.K[1, 2])
    np.testing.assert_allclose(seen[v, u].astype(int), plate.image[v, u].astype(int), atol=12)


def test_render_matches_a_ray_cast(seed):
    """Each output pixel centre's ray, met with the plane and projected into the plate (pixel centres at +0.5),
    gives the colour render shows: any camera, any intrinsics."""
    import cv2

    from avatar3d.rotation import axis_angle_to_matrix

    rng = np.random.default_rng(seed)
    plate = _plate(rng, depth=float(rng.uniform(1.5, 3.0)))
    view = np.eye(4)
    view[:3, :3] = axis_angle_to_matrix(torch.as_tensor(rng.normal(0, 0.08, 3))).numpy() @ plate.viewmat[:3, :3]
    view[:3, 3] = plate.viewmat[:3, 3] + rng.uniform(-0.15, 0.15, 3)
    w, h = 70, 50
    f = rng.uniform(80, 160)
    K = np.array([[f, 0, w / 2 + rng.uniform(-4, 4)], [0, f * rng.uniform(0.9, 1.1), h / 2], [0, 0, 1]])
    seen = plate.render(K, view, w, h).astype(np.float64)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([jj, ii, np.ones_like(jj)], -1) @ np.linalg.inv(K).T  # camera frame
    to_e = plate.viewmat @ np.linalg.inv(view)  # camera -> enrolled camera
    o, d = to_e[:3, 3], rays @ to_e[:3, :3].T
    points = o + d * ((plate.depth - o[2]) / d[..., 2])[..., None]
    q = points @ plate.K.T
    u, v = q[..., 0] / q[..., 2] - 0.5, q[..., 1] / q[..., 2] - 0.5
    ref = cv2.remap(plate.image, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101).astype(np.float64)
    inside = (u > 1) & (v > 1) & (u < plate.image.shape[1] - 2) & (v < plate.image.shape[0] - 2)
    assert inside.mean() > 0.2  # enough of the view falls on the plate itself to compare
    assert np.abs(seen - ref)[inside].max() <= 3


def test_plate_camera_undoes_the_crop(seed):
    from avatar3d.training.background import plate_camera

    rng = np.random.default_rng(seed)
    f = rng.uniform(400, 900)
    K_full = np.array([[f, 0, rng.uniform(300, 400)], [0, f, rng.uniform(200, 300)], [0, 0, 1]])
    x0, y0, size, res = int(rng.integers(-50, 200)), int(rng.integers(-50, 100)), int(rng.integers(200, 500)), 512
    s = res / size
    K_crop = np.array([[s, 0, -s * x0], [0, s, -s * y0], [0, 0, 1]]) @ K_full
    seq = type("Seq", (), {"crop_box": np.array([x0, y0, size]), "resolution": res, "K": K_crop})()
    sx, sy = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
    np.testing.assert_allclose(plate_camera(seq, (sx, sy)), np.diag([sx, sy, 1.0]) @ K_full, rtol=1e-9, atol=1e-9)


def test_a_camera_behind_the_plane_sees_its_mean_colour(seed):
    plate = _plate(np.random.default_rng(seed))
    behind = plate.viewmat.copy()
    behind[2, 3] -= plate.depth + 1.0
    seen = plate.render(plate.K, behind, 32, 24)
    assert np.ptp(seen.reshape(-1, 3), axis=0).max() == 0


def test_save_load_round_trip_and_damaged_files(tmp_path, seed):
    plate = _plate(np.random.default_rng(seed))
    plate.info = {"seen_share": 0.5}
    assert load_plate(tmp_path) is None  # an avatar without a plate
    plate.save(tmp_path)
    back = load_plate(tmp_path)
    np.testing.assert_array_equal(back.image, plate.image)
    np.testing.assert_allclose(back.K, plate.K)
    np.testing.assert_allclose(back.viewmat, plate.viewmat)
    assert back.depth == plate.depth and back.info == {"seen_share": 0.5}
    meta = json.loads((tmp_path / PLATE_JSON).read_text())
    meta["width"] += 1
    (tmp_path / PLATE_JSON).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="re-enroll"):
        load_plate(tmp_path)
    (tmp_path / PLATE_PNG).write_bytes(b"not a png")
    with pytest.raises(InputError, match="unreadable") as err:
        load_plate(tmp_path)
    assert str(tmp_path) not in str(err.value)  # names the files, not where they live
    plate.save(tmp_path)
    (tmp_path / PLATE_JSON).write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_plate(tmp_path)


def test_bad_plates_are_refused():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(InputError):
        BackgroundPlate(img, np.eye(3), np.eye(4), 0.0)
    with pytest.raises(InputError):
        BackgroundPlate(img.astype(np.float32), np.eye(3), np.eye(4), 1.0)


# ------------------------------------------------------------------------------------------ estimation
def _scene(rng, count: int, moving: bool = False):
    """A textured background with a person-shaped blob (a disc over a block) swaying in front; per frame
    the frame, its person probability and the background it hides."""
    h, w = 96, 128
    bg = _texture(rng, h, w + 40)
    yy, xx = np.mgrid[0:h, 0:w]
    frames, persons = [], []
    for i in range(count):
        sway = 18 * np.sin(2 * np.pi * i / count + rng.uniform(0, 0.3))
        cx = w / 2 + sway
        person = (((xx - cx) ** 2 + (yy - 35) ** 2) < 18 ** 2) | ((np.abs(xx - cx) < 30) & (yy > 60))
        offset = int(rng.integers(0, 40)) if moving else 20
        frame = bg[:, offset:offset + w].astype(np.int16) + rng.integers(-3, 4, (h, w, 3))
        frame[person] = rng.integers(0, 255, 3)
        frames.append(frame.clip(0, 255).astype(np.uint8))
        persons.append(person.astype(np.float32))
    return np.stack(frames), np.stack(persons), bg[:, 20:20 + w]


def test_the_plate_is_the_background_the_person_uncovers(seed):
    rng = np.random.default_rng(seed)
    frames, persons, truth = _scene(rng, 24)
    cfg = BackgroundConfig(grow=0.02)
    free = np.stack([person_free(p, cfg) for p in persons])
    found = estimate_plate(frames, free, cfg)
    seen = free.sum(0) >= max(2, int(np.ceil(cfg.min_seen * len(frames))))
    err = np.abs(found.image.astype(int) - truth.astype(int)).max(-1)
    assert np.median(err[seen]) <= 2 and np.percentile(err[seen], 99) <= 8
    assert 0.6 < found.seen_share < 1.0 and found.unsteady_share < 0.05 and not found.moving(cfg)
    # what no frame shows is filled from its surroundings, not left black or the person's colour
    hidden = ~seen
    assert hidden.any()
    fill = found.image[hidden].astype(int)
    assert fill.min() >= 0 and np.abs(fill.mean(0) - truth[seen].mean(0)).max() < 60


def test_a_moving_background_is_refused(seed):
    rng = np.random.default_rng(seed)
    frames, persons, _ = _scene(rng, 24, moving=True)
    cfg = BackgroundConfig()
    free = np.stack([person_free(p, cfg) for p in persons])
    found = estimate_plate(frames, free, cfg)
    assert found.moving(cfg), found.unsteady_share


def test_estimate_refuses_mismatched_inputs():
    with pytest.raises(InputError):
        estimate_plate(np.zeros((2, 4, 4, 3), np.uint8), np.ones((2, 4, 5), bool), BackgroundConfig())


def test_sample_indices_spread_over_the_video():
    assert list(sample_indices(5, 48)) == [0, 1, 2, 3, 4]
    idx = sample_indices(1000, 48)
    assert len(idx) == 48 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx) > 0)


@pytest.mark.parametrize("name", ["German_20s", "May_5s"])
def test_plate_of_a_real_video(shared, name, tmp_path):
    """The development videos: still studio backgrounds, so a plate comes out; its seen part matches the
    frames where no person covers them, and the plate file round-trips."""
    pytest.importorskip("mediapipe")
    from avatar3d.io.media import VideoReader
    from avatar3d.tracking.sequence import TrackedSequence
    from avatar3d.training.background import build_plate, head_depth, read_samples
    from avatar3d.training.masks import SelfieSegmenter

    video = shared / "data" / "video" / f"{name}.mp4"
    seg = SelfieSegmenter(0)
    try:
        cfg = BackgroundConfig(samples=12)
        frames, free, scale = read_samples(video, cfg, seg)
        found = estimate_plate(frames, free, cfg)
    finally:
        seg.close()
    with VideoReader(video) as reader:
        assert frames.shape[1:3] == (reader.height, reader.width) and scale == (1.0, 1.0)
    assert not found.moving(cfg) and 0.2 < found.seen_share < 0.9
    first_free = free[0] & (free.sum(0) >= 2)
    err = np.abs(found.image[first_free].astype(int) - frames[0][first_free].astype(int)).max(-1)
    assert np.median(err) <= 6
    # the plate's camera, from a tracking result whose crop is the whole frame with the head 0.8 m away
    side = frames.shape[2]
    seq = type("Seq", (), {"crop_box": np.array([0, 0, side]), "resolution": side, "K": np.diag([500.0, 500.0, 1.0]),
                           "viewmat": np.eye(4), "transl": np.tile([0.0, 0.0, 0.8], (3, 1))})()
    assert head_depth(seq) == pytest.approx(0.8)
    said = []
    seg = SelfieSegmenter(0)
    try:
        plate = build_plate(video, seq, cfg, seg, said.append)
    finally:
        seg.close()
    assert plate.depth == pytest.approx(0.8 + cfg.behind) and np.allclose(plate.K, seq.K) and not said
    plate.save(tmp_path)
    np.testing.assert_array_equal(load_plate(tmp_path).image, plate.image)


def test_a_still_camera_gets_the_same_picture_and_may_draw_on_it(seed):
    """render keeps the last camera's picture (a still camera warps once) and hands out copies."""
    plate = _plate(np.random.default_rng(seed))
    first = plate.render(plate.K, plate.viewmat, 160, 120)
    first[:] = 0  # a caller drawing on its picture (the viewer pastes the avatar in)
    again = plate.render(plate.K, plate.viewmat, 160, 120)
    np.testing.assert_array_equal(again, plate.image)


def test_a_camera_is_worth_keeping_from_its_second_frame(seed):
    """A frame keeps the plate it sees only when the frame before had the same camera: a moving camera never pays
    for sampling the whole plate, a still one pays once."""
    plate = _plate(np.random.default_rng(seed))
    def moved(dx: float) -> np.ndarray:  # the camera moved sideways by dx metres
        view = plate.viewmat.copy()
        view[0, 3] -= dx
        return view

    keys = [plate.view(plate.K, moved(dx), 160, 120)[2] for dx in (0.0, 0.01, 0.02, 0.02, 0.02, 0.0)]
    assert [plate.worth_keeping(key) for key in keys] == [False, False, False, True, True, False]
