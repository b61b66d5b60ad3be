"""The Python API and the drive controls, checked by what they mean on a tiny synthetic avatar.

The avatar is the synthetic subject (known parameters, built-in rig) trained for a few dozen steps: its
Gaussians sit on the rig's surface, which is all these checks need. Directions follow DESIGN.md: rig x is
the subject's left, which a frontal camera shows on the image's right.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar3d.api import Avatar
from avatar3d.drive import Controls
from avatar3d.drive.controls import parse_expression_edits
from avatar3d.errors import InputError
from avatar3d.head.lbs import landmarks
from conftest import SYNTHETIC_SUBJECT

RES = 64  # the avatar's training frames
VIEW = 96  # rendered views in these tests
NOSE_TIP, RIGHT_IRIS, LEFT_IRIS = 1, 468, 473  # MediaPipe-478 indices (iris centres: subject's right, left)
UPPER_LIP, LOWER_LIP = 13, 14  # inner lip midpoints
@pytest.fixture(scope="module")
def avatar(synthetic_avatar_dir) -> Avatar:
    return Avatar.load(synthetic_avatar_dir, device="cpu")


def _marks(avatar: Avatar, frame) -> torch.Tensor:  # -> [478,2] pixels of the posed mesh's landmarks
    verts = torch.as_tensor(frame.vertices)[None]
    return frame.camera.project(landmarks(avatar.rig, verts)[0])


def _head_centre_px(avatar: Avatar, frame) -> torch.Tensor:  # -> [2]
    return frame.camera.project(avatar.enrolled.head_centre.to(frame.camera.K.dtype))


def _still(avatar: Avatar, **kw) -> Controls:
    return Controls(still_head=True, **kw)


def test_tracked_params_replay_the_enrollment(avatar, synthetic_avatar_dir):
    from avatar3d.tracking.sequence import TrackedSequence

    params = avatar.tracked(refined=False)
    seq = TrackedSequence.load(Path(synthetic_avatar_dir) / "tracking.npz")
    assert len(params) == seq.num_frames and params.fps == seq.fps
    assert np.array_equal(params.jaw, seq.jaw) and np.array_equal(params.shape, seq.shape)
    assert params.audio is not None and abs(params.duration - seq.num_frames / seq.fps) < 1 / seq.fps
    # neutral controls: exactly the enrolled camera, so a self-reenactment lines up with the real frames
    cam = avatar.camera(Controls(), resolution=RES)
    assert torch.allclose(cam.viewmat, torch.as_tensor(seq.viewmat), atol=1e-5)
    assert torch.allclose(cam.K, torch.as_tensor(seq.K), atol=1e-4)


def test_render_is_a_lazy_iterator_of_frames(avatar):
    params = avatar.neutral(3)
    frames = avatar.render(params, Controls(), VIEW, (0.0, 0.0, 0.0))
    assert not isinstance(frames, (list, tuple))
    first = next(frames)
    assert first.image.shape == (VIEW, VIEW, 3) and first.image.dtype == np.uint8
    assert first.alpha.shape == (VIEW, VIEW) and 0.05 < (first.alpha > 128).mean() < 0.8
    assert len(list(frames)) == 2
    # black background: where the avatar is absent, the image is black; where it is, not
    assert first.image[first.alpha < 3].max() <= 3 and first.image[first.alpha > 250].mean() > 40


def test_distance_scales_the_face_about_as_one_over_d(avatar):
    params = avatar.neutral()
    sizes = {}
    for scale in (1.0, 2.0):
        frame = avatar.render_frame(params, 0, _still(avatar, distance_scale=scale), VIEW)
        marks = _marks(avatar, frame)
        sizes[scale] = (float(marks.std(0).norm()), math.sqrt(float((frame.alpha > 128).sum())))
        assert float((frame.camera.centre - avatar.enrolled.head_centre).norm()) == pytest.approx(
            avatar.enrolled_distance * scale, rel=1e-4)
    landmark_ratio = sizes[2.0][0] / sizes[1.0][0]
    silhouette_ratio = sizes[2.0][1] / sizes[1.0][1]
    assert landmark_ratio == pytest.approx(0.5, abs=0.06)  # 1/d, up to perspective
    assert 0.4 < silhouette_ratio < 0.65  # the rasterizer's pixel-size blur widens small silhouettes a little
    # metres mean the same as the relative form
    metres = avatar.camera(Controls(distance=2.0 * avatar.enrolled_distance), VIEW)
    assert torch.allclose(metres.viewmat, avatar.camera(Controls(distance_scale=2.0), VIEW).viewmat, atol=1e-5)


def test_camera_yaw_goes_to_the_subjects_left(avatar):
    params = avatar.neutral()
    offsets, silhouettes = {}, {}
    for yaw in (-35.0, 0.0, 35.0):
        frame = avatar.render_frame(params, 0, _still(avatar, yaw=yaw), VIEW)
        # the camera moved to the subject's left (+x of the head's frame), at the same distance
        local = avatar.enrolled.head_rot.T @ (frame.camera.centre - avatar.enrolled.head_centre)
        assert float(local[0]) * yaw >= 0.0 and abs(float(local[0])) > 0.3 * avatar.enrolled_distance * (yaw != 0)
        centre = _head_centre_px(avatar, frame)
        offsets[yaw] = float(_marks(avatar, frame)[NOSE_TIP, 0] - centre[0])
        ys, xs = np.nonzero(frame.alpha > 128)
        silhouettes[yaw] = float(xs.mean()) - float(centre[0])
    # seen from the subject's left, the nose points to the image's left of the head centre
    assert offsets[35.0] < offsets[0.0] - 4 and offsets[-35.0] > offsets[0.0] + 4
    # and the rendered silhouette (the back of the head) swings the other way
    assert silhouettes[35.0] > silhouettes[0.0] > silhouettes[-35.0]


def test_camera_pitch_rises_above_the_head(avatar):
    params = avatar.neutral()
    above = avatar.render_frame(params, 0, _still(avatar, pitch=30.0), VIEW)
    local = avatar.enrolled.head_rot.T @ (above.camera.centre - avatar.enrolled.head_centre)
    assert float(local[1]) > 0.3 * avatar.enrolled_distance  # +y of the head: above


def test_head_pose_turns_the_head_not_the_camera(avatar):
    params = avatar.neutral()
    frames = {yaw: avatar.render_frame(params, 0, Controls(head_pose=(yaw, 0.0, 0.0)), VIEW)
              for yaw in (-25.0, 0.0, 25.0)}
    for frame in frames.values():
        assert torch.equal(frame.camera.viewmat, frames[0.0].camera.viewmat)
    nose = {yaw: float(_marks(avatar, f)[NOSE_TIP, 0]) for yaw, f in frames.items()}
    # the face turns to the subject's left, which the camera shows on the image's right
    assert nose[25.0] > nose[0.0] + 3 and nose[-25.0] < nose[0.0] - 3
    assert not np.array_equal(frames[25.0].alpha, frames[0.0].alpha)
    # an offset adds to the driven head motion; absolute replaces it
    driven = avatar.tracked(refined=False)
    base = avatar.rig_params(driven, 5, Controls(), frames[0.0].camera)
    moved = avatar.rig_params(driven, 5, Controls(head_offset=(10.0, 0.0, 0.0)), frames[0.0].camera)
    from avatar3d.rotation import axis_angle_to_matrix, matrix_to_euler

    rel = axis_angle_to_matrix(moved.neck[0]) @ axis_angle_to_matrix(base.neck[0]).T
    assert float(matrix_to_euler(rel)[0]) == pytest.approx(10.0, abs=0.5)


def test_gaze_moves_the_pupils(avatar):
    params = avatar.neutral()
    pupils = {}
    for gaze in ((0.0, 0.0), (25.0, 0.0), (-25.0, 0.0), (0.0, 20.0)):
        frame = avatar.render_frame(params, 0, _still(avatar, gaze=gaze), VIEW)
        marks = _marks(avatar, frame)
        pupils[gaze] = (marks[LEFT_IRIS] + marks[RIGHT_IRIS]) / 2
    dx = float(pupils[(25.0, 0.0)][0] - pupils[(0.0, 0.0)][0])
    # positive yaw: the eyes turn to the subject's left (image right); positive pitch: they look down
    assert dx > 0.5 and float(pupils[(-25.0, 0.0)][0] - pupils[(0.0, 0.0)][0]) < -0.5
    assert float(pupils[(0.0, 20.0)][1] - pupils[(0.0, 0.0)][1]) > 0.3


def _eye_direction_error(avatar: Avatar, frame) -> float:
    """Degrees between each eye's gaze (eyeball centre -> iris) and the direction to the camera, worst eye."""
    verts = torch.as_tensor(frame.vertices)
    marks = landmarks(avatar.rig, verts[None])[0]
    worst = 0.0
    for region, iris in (("eyeball_left", LEFT_IRIS), ("eyeball_right", RIGHT_IRIS)):
        centre = verts[avatar.rig.region(region)].mean(0)
        look = marks[iris] - centre
        to_cam = frame.camera.centre.to(verts.dtype) - centre
        cos = float(torch.dot(look, to_cam) / (look.norm() * to_cam.norm()))
        worst = max(worst, math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return worst


def test_gaze_camera_follows_the_orbiting_camera(avatar):
    params = avatar.neutral(5)
    on = list(avatar.render(params, Controls(gaze="camera", orbit=60.0), VIEW))
    off = list(avatar.render(params, Controls(gaze=(0.0, 0.0), orbit=60.0), VIEW))
    yaws = [float((avatar.enrolled.head_rot.T @ (f.camera.centre - avatar.enrolled.head_centre))[0]) for f in on]
    assert yaws[0] < yaws[2] < yaws[-1]  # the camera really orbits
    assert max(_eye_direction_error(avatar, f) for f in on) < 4.0
    assert _eye_direction_error(avatar, off[-1]) > 20.0  # eyes straight ahead miss a camera 60 degrees away


def test_cross_reenactment_keeps_identity_and_copies_the_jaw(avatar, tmp_path):
    from avatar3d.pipeline.synthetic_eval import eval_subject, tracked_sequence
    from avatar3d.head.lbs import pose_vertices

    driver = eval_subject(**{**SYNTHETIC_SUBJECT, "seed": 11, "seconds": 1.5})
    seq = tracked_sequence(driver)
    assert not np.allclose(seq.shape, avatar.sequence.shape)  # a differently shaped person
    seq.save(tmp_path / "tracking.npz")
    params = avatar.from_tracking(tmp_path)
    assert len(params) == driver.num_frames and params.source == "video"
    assert np.array_equal(params.shape, avatar.sequence.shape)
    assert np.allclose(params.jaw, seq.jaw)
    # the rendered mesh: the avatar's face proportions, the driver's mouth opening frame by frame
    gap, width = [], []
    for frame in avatar.render(params, Controls(still_head=True), VIEW, stop=len(params)):
        marks = landmarks(avatar.rig, torch.as_tensor(frame.vertices)[None])[0]
        gap.append(float((marks[UPPER_LIP] - marks[LOWER_LIP]).norm()))
        width.append(float((marks[LEFT_IRIS] - marks[RIGHT_IRIS]).norm()))
    assert np.corrcoef(gap, seq.jaw[:, 0])[0, 1] > 0.8
    with torch.no_grad():
        own = landmarks(avatar.rig, pose_vertices(avatar.rig, avatar.neutral().rig_params(0)))[0]
        theirs = driver.params.slice(slice(0, 1))
        theirs.expr[:] = 0
        other = landmarks(avatar.rig, pose_vertices(avatar.rig, theirs))[0]
    own_width = float((own[LEFT_IRIS] - own[RIGHT_IRIS]).norm())
    other_width = float((other[LEFT_IRIS] - other[RIGHT_IRIS]).norm())
    assert abs(np.median(width) - own_width) < 0.25 * abs(other_width - own_width) + 1e-4


def test_expression_edits_by_name(avatar):
    params = avatar.neutral()
    names = avatar.expr_names
    smile = next(n for n in names if "Smile" in n)
    base = avatar.render_frame(params, 0, Controls(), VIEW)
    edited = avatar.render_frame(params, 0, Controls(expression={smile: 0.8}), VIEW)
    moved = np.linalg.norm(edited.vertices - base.vertices, axis=1)
    lips = avatar.rig.region("lips").cpu().numpy() if "lips" in avatar.rig.regions else moved > 0
    assert moved[lips].max() > 1e-3 and moved.max() > 1e-3
    assert parse_expression_edits([f"{smile}=0.8"], names) == {smile: 0.8}
    with pytest.raises(InputError, match="unknown expression 'mouthSmyle_L'.*did you mean"):
        parse_expression_edits(["mouthSmyle_L=1"], names)
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_expression_edits([smile], names)
    with pytest.raises(InputError, match="unknown expression"):
        avatar.render_frame(params, 0, Controls(expression={"noSuchShape": 1.0}), VIEW)


def test_expressiveness_zero_is_the_resting_face_and_blink_off_opens_the_eyes(avatar):
    params = avatar.tracked(refined=False)
    still = Controls(still_head=True, gaze=(0.0, 0.0))
    rest = avatar.render_frame(avatar.neutral(), 0, still, VIEW).vertices
    flat = [avatar.render_frame(params, t, still.with_(expressiveness=0.0), VIEW).vertices for t in (2, 7)]
    transl = params.transl[[2, 7]] - avatar.stats.transl  # the driven translation still applies
    for verts, shift in zip(flat, transl):
        assert np.abs(verts - shift - rest).max() < 1e-4
    blink = [i for i, n in enumerate(avatar.expr_names) if n in ("eyeBlink_L", "eyeBlink_R")]
    t = int(np.argmax(params.expr[:, blink].sum(1)))
    frame = avatar.rig_params(params, t, Controls(blink="off"), avatar.camera())
    assert float(frame.expr[0, blink].max()) <= float(avatar.stats.expr[blink].max()) + 1e-6


def test_bad_controls_say_how_to_fix_them():
    from avatar3d.drive.controls import parse_distance, parse_gaze, parse_head_pose

    assert parse_distance("x1.5") == (None, 1.5) and parse_distance("0.8") == (0.8, 1.0)
    assert parse_head_pose("+10,0,0") == (None, (10.0, 0.0, 0.0))
    assert parse_gaze("camera") == "camera" and parse_gaze("10,-5") == (10.0, -5.0)
    with pytest.raises(InputError, match="x1.5"):
        parse_distance("far")
    with pytest.raises(InputError, match="yaw,pitch"):
        parse_gaze("left")
    with pytest.raises(InputError, match="20,-5,0"):
        parse_head_pose("10,0")
    with pytest.raises(InputError, match="blink"):
        Controls(blink="sometimes")


def test_write_clip_from_python(avatar, tmp_path):
    import av

    params = avatar.tracked(refined=False).slice(0, 4)  # 0.4 s with its stretch of the voice
    result = avatar.write_clip(params, tmp_path / "clip.mp4", Controls(orbit=20), resolution=48, progress=False)
    assert result.frames == 4 and result.path.is_file()
    with av.open(str(result.path)) as c:
        assert c.streams.audio and c.streams.video[0].codec_context.width == 48
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 0.4) <= 0.1


def test_the_plate_background_follows_the_camera(avatar, synthetic_avatar_dir, tmp_path):
    """`background="plate"` puts the room behind the person: where the avatar leaves the frame clear, the pixels
    are the plate as the frame's own camera sees it, so an orbiting camera sees it move (parallax)."""
    import shutil

    from avatar3d.render.plate import BackgroundPlate
    from avatar3d.render.reference.finish import plate_seen, to_u8

    params = avatar.tracked(refined=False)
    with pytest.raises(InputError, match="no background plate"):
        avatar.render_frame(params, 0, resolution=VIEW, background="plate")
    folder = tmp_path / "with_plate"
    shutil.copytree(synthetic_avatar_dir, folder)
    seq = avatar.sequence
    rng = np.random.default_rng(0)
    picture = np.kron(rng.integers(0, 255, (seq.resolution // 4, seq.resolution // 4, 3)), np.ones((4, 4, 1)))
    BackgroundPlate(picture.astype(np.uint8), seq.K, seq.viewmat, 2.0).save(folder)
    with_plate = Avatar.load(folder, device="cpu")
    seen = []
    for orbit in (0.0, 25.0):
        frame = with_plate.render_frame(params, 0, Controls(yaw=orbit), VIEW, background="plate")
        cam = frame.camera
        to_plate = torch.as_tensor(with_plate.plate.pixel_map(cam.K, cam.viewmat, cam.width, cam.height))
        expected = to_u8(plate_seen(torch.from_numpy(with_plate.plate.image), to_plate, cam.width, cam.height)).numpy()
        clear = frame.alpha == 0
        assert clear.mean() > 0.2
        assert np.abs(frame.image[clear].astype(int) - expected[clear].astype(int)).max() <= 1
        seen.append(expected)
        # the same camera again: its second frame keeps the plate it saw, the third composites over that; the very
        # same picture each time
        for _ in range(2):
            again = with_plate.render_frame(params, 0, Controls(yaw=orbit), VIEW, background="plate")
            np.testing.assert_array_equal(again.image, frame.image)
        assert with_plate.plate.view(cam.K, cam.viewmat, cam.width, cam.height)[0] is not with_plate.plate.image
        # the plate alone (plate.render, which training uses) is sampled as the frame samples it
        warped = with_plate.plate.render(cam.K, cam.viewmat, cam.width, cam.height)
        assert np.abs(warped.astype(int) - expected.astype(int)).mean() < 0.5
    assert np.abs(seen[0].astype(int) - seen[1].astype(int)).mean() > 10
