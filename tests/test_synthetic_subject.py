"""The synthetic ground-truth subject: texture, known parameters, renders, novel views, files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.head.synthetic_subject import (NOVEL_VIEWS, make_params, make_subject, read_params, synth_voice,
                                             write_subject)
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import RigParams
from avatar3d.head.synthetic import synthetic_rig
from avatar3d.rotation import axis_angle_to_euler, euler_to_axis_angle

RES = 96


@pytest.fixture(scope="module")
def rig():
    return synthetic_rig()


def _subject(rig, seed, **kw):
    opts = dict(seconds=1.0, fps=10, resolution=RES, seed=seed, texture_size=256, supersample=1, rig=rig)
    opts.update(kw)
    return make_subject(**opts)


def _still(subject) -> RigParams:
    """Frame 0's identity with a neutral pose and expression (controlled renders)."""
    p = RigParams.zeros(subject.rig, 1, device="cpu")
    p.shape = subject.params.shape.clone()
    return p


def _luma(img: torch.Tensor) -> torch.Tensor:  # [...,3] -> [...]
    return img @ torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype)


def _mouth_box(subject, params, half=6):
    """Pixel box around the projected centre of the lips."""
    verts = pose_vertices(subject.rig, params)[0]
    lips = subject.rig.region("lips")
    centre = verts[lips].mean(0)
    x, y = subject.camera.project(centre).round().long().tolist()
    return slice(y - half, y + half), slice(x - half, x + half)


def test_the_mouth_darkens_when_the_jaw_opens_and_only_the_lower_face_changes(rig, seed):
    subject = _subject(rig, seed)
    closed = _still(subject)
    opened = _still(subject)
    opened.jaw[0, 0] = 0.22
    a = subject.render_params(closed).image
    b = subject.render_params(opened).image
    box = _mouth_box(subject, closed)
    assert _luma(b[box]).mean() < _luma(a[box]).mean() - 0.05
    # the upper half of the head (above the nose) does not move with the jaw
    top = slice(0, int(subject.camera.project(torch.tensor([0.0, 0.01, 0.1]))[1]))
    assert (a[top] - b[top]).abs().max() < 1e-6
    assert (a - b).abs().sum() > 1.0


def test_frames_change_over_time_with_the_speech(rig, seed):
    subject = _subject(rig, seed, seconds=1.5)
    jaw = subject.params.jaw[:, 0]
    i, j = int(jaw.argmax()), int(jaw.argmin())
    assert float(jaw[i]) > 0.08 and float(jaw[j]) < 0.01
    frames = list(subject.frames())
    assert len(frames) == 15
    image, mask = frames[0]
    assert image.dtype == np.uint8 and image.shape == (RES, RES, 3)
    assert mask.shape == (RES, RES) and 0.2 < mask.mean() < 0.9
    diffs = [np.abs(frames[k][0].astype(int) - frames[k + 1][0].astype(int)).mean() for k in range(len(frames) - 1)]
    assert min(diffs) > 0.0  # something moves in every frame (head, jaw, eyes)
    # the mouth box differs between the most open and the most closed frame, after removing the head motion:
    # render both jaw values with frame i's other parameters
    p_open = subject.frame_params(i)
    p_closed = subject.frame_params(i)
    p_closed.jaw = p_closed.jaw.clone()
    p_closed.jaw[0, 0] = jaw[j]
    box = _mouth_box(subject, p_open)
    d = (subject.render_params(p_open).image[box] - subject.render_params(p_closed).image[box]).abs().mean()
    assert d > 0.02


def test_parameters_talk_blink_look_around_and_turn_the_head(rig, seed):
    params, events = make_params(rig, 6.0, 25.0, seed)
    n = params.batch_size
    assert n == 150
    jaw = params.jaw[:, 0].numpy()
    assert jaw.min() >= 0.0 and 0.1 < jaw.max() <= 0.23
    peaks = np.sum((jaw[1:-1] > jaw[:-2]) & (jaw[1:-1] >= jaw[2:]) & (jaw[1:-1] > 0.03))
    assert peaks >= 2 * 6  # syllables: a few per second
    assert (jaw < 0.005).mean() > 0.05  # pauses between phrases
    names = rig.expr_names
    blink = params.expr[:, names.index("eyeBlink_L")].numpy()
    assert blink.max() > 0.7 and (blink < 0.05).mean() > 0.7  # short blinks
    assert torch.equal(params.expr[:, names.index("eyeBlink_L")], params.expr[:, names.index("eyeBlink_R")])
    assert float(params.expr.min()) >= 0.0 and float(params.expr.max()) <= 1.0
    gaze = axis_angle_to_euler(params.eyes[:, 0])
    assert float(gaze[:, 0].max() - gaze[:, 0].min()) > 5.0  # gaze shifts
    neck = axis_angle_to_euler(params.neck)  # yaw, pitch, roll degrees
    assert 19.0 < float(neck[:, 0].abs().max()) <= 20.01
    assert float(neck[:, 0].max()) > 15 and float(neck[:, 0].min()) < -15  # both ways
    assert 0.5 < float(neck[:, 1].abs().max()) <= 5.01
    assert float(params.global_rot.abs().max()) == 0.0 and float(params.transl.abs().max()) == 0.0
    # the voice is loud where the jaw is open
    audio = synth_voice(events, n / 25.0, seed)
    assert len(audio) == 6 * 16000 and np.abs(audio).max() <= 1.0
    rms = np.sqrt((audio[: n * 640].reshape(n, 640) ** 2).mean(1))
    assert np.corrcoef(rms, jaw)[0, 1] > 0.8


def test_novel_views_differ_from_the_training_view(rig, seed):
    subject = _subject(rig, seed)
    frame = subject.novel_frames[0]
    train_img, train_alpha = subject.render(frame)
    cams = subject.novel_cameras()
    assert set(cams) == set(NOVEL_VIEWS)
    coverage = {}
    for name, cam in cams.items():
        img, alpha = subject.render(frame, cam)
        assert (img - train_img).abs().mean() > 0.02, name
        coverage[name] = float(alpha.mean())
    assert coverage["dist1.5"] < float(train_alpha.mean()) < coverage["dist0.7"]
    centre = subject.camera.centre
    for name, (yaw, factor) in NOVEL_VIEWS.items():
        c = cams[name].centre - torch.tensor(subject.target)
        assert math.isclose(float(c.norm()), subject.distance * factor, rel_tol=1e-5)
        cos = float(c @ (centre - torch.tensor(subject.target))) / (float(c.norm()) * subject.distance)
        assert math.isclose(cos, math.cos(math.radians(yaw)), abs_tol=1e-5)


def test_camera_yaw_plus_30_shows_the_subjects_left_side(rig, seed):
    """DESIGN.md: a positive camera yaw moves the camera towards the subject's left (+x)."""
    subject = _subject(rig, seed)
    still = _still(subject)
    faces = rig.faces
    cx = rig.template[faces].mean(1)[:, 0]  # triangle centroid x in the neutral head
    face = rig.region("face")[faces].all(1)
    left_half, right_half = face & (cx > 0.005), face & (cx < -0.005)  # the subject's left / right
    lips = rig.region("lips")[faces].all(1)
    cams = subject.novel_cameras()
    seen = {}
    for name in ("yaw+30", "yaw-30"):
        ids = subject.render_params(still, cams[name], supersample=1).face_id
        f = ids[ids >= 0]
        xs = torch.nonzero(ids >= 0)[:, 1][lips[f]].float() + 0.5
        seen[name] = (int(left_half[f].sum()), int(right_half[f].sum()), float(xs.mean()))
    l_p, r_p, cx_p = seen["yaw+30"]
    l_m, r_m, cx_m = seen["yaw-30"]
    assert l_p > 1.5 * r_p and r_m > 1.5 * l_m
    # the face points away from the camera's side: seen from the subject's left the lips lie left of centre
    assert cx_p < RES / 2 - 8 and cx_m > RES / 2 + 8
    # a +20 degree head (neck) yaw turns the face towards the subject's left, i.e. towards where a +yaw camera
    # goes: the frontal camera then sees more of the right half and the lips move to the image right
    turned = _still(subject)
    turned.neck[0] = euler_to_axis_angle(20.0, 0.0, 0.0)
    ids = subject.render_params(turned, supersample=1).face_id
    f = ids[ids >= 0]
    assert int(right_half[f].sum()) > 1.3 * int(left_half[f].sum())
    assert float(torch.nonzero(ids >= 0)[:, 1][lips[f]].float().mean()) + 0.5 > RES / 2 + 5


def test_deterministic_for_a_seed(rig, seed):
    a = _subject(rig, seed)
    b = _subject(rig, seed)
    c = _subject(rig, seed + 1)
    for field in ("shape", "expr", "neck", "jaw", "eyes"):
        assert torch.equal(getattr(a.params, field), getattr(b.params, field))
    assert torch.equal(a.texture, b.texture)
    assert np.array_equal(a.audio, b.audio)
    assert torch.equal(a.render(3)[0], b.render(3)[0])
    assert not torch.equal(a.params.jaw, c.params.jaw)


def test_texture_has_the_features(rig):
    subject = _subject(rig, 0, texture_size=512)
    tex = subject.texture
    atlas = rig.meta["uv_atlas"]

    def texel(u, v):
        return tex[int((1 - v) * 512), int(u * 512)]

    u0, v0, u1, v1 = atlas["eyeball_left"]
    pupil = texel(0.5 * (u0 + u1), 0.5 * (v0 + v1))
    sclera = texel(0.5 * (u0 + u1) + 0.35 * (u1 - u0) * 0.5, 0.5 * (v0 + v1))
    assert float(pupil.max()) < 0.1 and float(sclera.min()) > 0.8
    su0, _, su1, _ = atlas["skin"]
    crown = texel(0.5 * (su0 + su1), 0.97)
    chin_neck = texel(0.5 * (su0 + su1), 0.3)
    assert float(_luma(crown)) < 0.5 * float(_luma(chin_neck))  # dark hair on top, skin below
    # lips are redder than the surrounding skin in a frontal render
    img = subject.render_params(_still(subject), supersample=1).image
    ys, xs = _mouth_box(subject, _still(subject), half=2)
    lip = img[ys, xs].reshape(-1, 3).mean(0)
    assert float(lip[0] - lip[1]) > 0.25


def test_write_subject_writes_everything_atomically(rig, seed, tmp_path):
    from avatar3d.io.media import VideoReader

    subject = _subject(rig, seed, seconds=0.8, resolution=64, novel_frame_count=2)
    out = write_subject(tmp_path / "subject", subject)
    assert sorted(p.name for p in out.iterdir()) == [".avatar3d-output", "cameras.json", "masks.npz", "novel", "params.npz",
                                                     "train.mp4"]
    video = VideoReader(out / "train.mp4")
    assert video.num_frames == 8 and (video.width, video.height) == (64, 64) and video.has_audio
    first = next(iter(video))
    expected, _ = next(subject.frames())
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 4.0
    cams = json.loads((out / "cameras.json").read_text())
    assert set(cams["novel"]) == set(NOVEL_VIEWS) and cams["frames"] == 8
    for name, view in cams["novel"].items():
        assert view["frames"] == subject.novel_frames
        assert np.allclose(view["viewmat"], subject.novel_cameras()[name].viewmat.numpy())
        for f in view["images"] + view["masks"]:
            assert (out / f).is_file()
    assert len(list((out / "novel").glob("*.png"))) == 2 * 4 * 2
    params, extra = read_params(out)
    for field in ("shape", "expr", "neck", "jaw", "eyes", "global_rot", "transl"):
        assert torch.equal(getattr(params, field), getattr(subject.params, field))
    assert extra["expr_names"] == rig.expr_names and extra["seed"] == seed
    assert np.allclose(extra["K"], subject.camera.K.numpy())
    with np.load(out / "masks.npz") as m:
        assert m["alpha"].shape == (8, 64, 64) and m["alpha"].dtype == np.uint8
    # a failing second write leaves the first one intact
    subject.params.jaw = subject.params.jaw[:2]  # inconsistent batch: posing fails part way through
    with pytest.raises(Exception):
        write_subject(out, subject)
    assert (out / "train.mp4").is_file() and read_params(out)[0].jaw.shape[0] == 8
    assert not [p for p in tmp_path.iterdir() if p.name != "subject"]


def test_bad_arguments_raise_input_errors(rig, tmp_path):
    with pytest.raises(InputError, match="positive"):
        make_subject(seconds=0, rig=rig)
    with pytest.raises(InputError, match="background"):
        make_subject(seconds=0.2, background=(2.0, 0.0, 0.0), rig=rig)
    subject = _subject(rig, 0, seconds=0.3)
    with pytest.raises(InputError, match="frame"):
        subject.render(99)
    with pytest.raises(InputError, match="params.npz|does not exist"):
        read_params(tmp_path / "missing" / "params.npz")
