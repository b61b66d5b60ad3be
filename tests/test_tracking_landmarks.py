"""Tracking stage 1: crop maths, subject choice, failed-frame interpolation, and MediaPipe on a real face."""
import warnings

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.head.embedding import NUM_LANDMARKS
from avatar3d.tracking.crop import (CropBox, apply_crop, compute_crop, crop_intrinsics, crop_landmarks,
                                    default_intrinsics, uncrop_landmarks)
from avatar3d.tracking.faces import EYE_OUTER, FaceObservation
from avatar3d.tracking.landmarks import LandmarkTrack, TrackingWarning, detect_video
from avatar3d.tracking.subject import interpolate_missing, select_subject

# ----------------------------------------------------------------------------------------- helpers


def _face(rng, centre, size):
    """A fake face: 478 points in a square of side `size` around `centre`, eyes at fixed places."""
    pts = (rng.uniform(-0.5, 0.5, (NUM_LANDMARKS, 2)) * size + centre).astype(np.float32)
    pts[EYE_OUTER[0]] = centre + np.array([-0.3, -0.1]) * size
    pts[EYE_OUTER[1]] = centre + np.array([0.3, -0.1]) * size
    return pts


class FakeDetector:
    """Replays prepared per-frame face lists (so the tracking logic runs without MediaPipe)."""

    def __init__(self, per_frame):
        self.per_frame = list(per_frame)
        self.calls = 0

    def __call__(self, frame):
        faces = self.per_frame[self.calls]
        self.calls += 1
        return faces

    def close(self):
        pass


def _frames(n, size=(48, 64)):
    for _ in range(n):
        yield np.zeros((size[0], size[1], 3), np.uint8)


def _moving_faces(rng, T, size=100.0):
    """Subject faces on a straight-line path: (per-frame observations, the true points [T,478,2])."""
    base = _face(rng, np.zeros(2), size)
    start, velocity = rng.uniform(150, 250, 2), rng.uniform(-2, 2, 2)
    truth = np.stack([base + start + t * velocity for t in range(T)]).astype(np.float32)
    depth = rng.normal(size=(T, NUM_LANDMARKS)).astype(np.float32)
    faces = [[FaceObservation(truth[t], depth[t], score=0.9)] for t in range(T)]
    return faces, truth


def _blob(h, w, u, v, sigma):
    """A Gaussian dot centred at continuous (u, v) (pixel centres at +0.5), uint8 [H,W,3]."""
    y, x = np.mgrid[0:h, 0:w] + 0.5
    img = 255.0 * np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.round(img).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(img):
    g = img[..., 0].astype(np.float64)
    g = np.where(g > 0.1 * g.max(), g, 0.0)  # ignore Lanczos ringing far from the dot
    y, x = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
    return np.array([(g * x).sum() / g.sum(), (g * y).sum() / g.sum()])


# ----------------------------------------------------------------------------------------- crop


def test_crop_maps_a_dot_to_where_crop_landmarks_says(seed):
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    for _ in range(6):
        size = int(rng.integers(60, 300))
        # anywhere from a third outside the frame on the left/top to a third outside on the right/bottom
        box = CropBox(int(rng.integers(-size // 3, w - 2 * size // 3)),
                      int(rng.integers(-size // 3, h - 2 * size // 3)), size)
        sigma = 0.03 * size + 1.0
        # the dot lies in the part of the crop that is also inside the frame, away from its edges
        lo = np.maximum([box.x0, box.y0], 0) + 3 * sigma
        hi = np.minimum([box.x1, box.y1], [w, h]) - 3 * sigma
        if np.any(hi <= lo):
            continue
        u, v = rng.uniform(lo, hi)
        res = int(rng.choice([64, 128, 256, 512]))
        out = apply_crop(_blob(h, w, u, v, sigma), box, res)
        assert out.shape == (res, res, 3) and out.dtype == np.uint8
        expected = crop_landmarks(np.array([u, v]), box, res)
        # a half-pixel slip in the convention would be off by 0.5 * |1 - res / size| crop pixels
        np.testing.assert_allclose(_centroid(out), expected, atol=0.12)
        np.testing.assert_allclose(uncrop_landmarks(expected, box, res), [u, v], atol=1e-9)


def test_crop_outside_the_frame_repeats_the_border(seed):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    box = CropBox(-7, -5, 90)  # leaves the frame on every side
    out = apply_crop(frame, box, 90)  # same size: no resampling, exact pixels
    np.testing.assert_array_equal(out[5:55, 7:77], frame)
    np.testing.assert_array_equal(out[5:55, :7], np.repeat(frame[:, :1], 7, axis=1))
    np.testing.assert_array_equal(out[:5, 7:77], np.repeat(frame[:1], 5, axis=0))
    np.testing.assert_array_equal(out[55:, 77:], np.broadcast_to(frame[-1, -1], (35, 13, 3)))
    inside = CropBox(10, 3, 40)
    np.testing.assert_array_equal(apply_crop(frame, inside, 40), frame[3:43, 10:50])
    # a flat frame stays flat through padding and resampling (no dark band, no ringing)
    flat = np.full((50, 70, 3), 123, np.uint8)
    np.testing.assert_array_equal(apply_crop(flat, box, 64), 123)


def test_compute_crop_contains_every_frame_with_margin(seed):
    rng = np.random.default_rng(seed)
    faces, truth = _moving_faces(rng, 40)
    box = compute_crop(truth, 640, 480, margin=1.7, percentile=100.0)
    lo, hi = truth.min(axis=1), truth.max(axis=1)  # [T,2]
    union = np.r_[lo.min(0), hi.max(0)]
    face = max(union[2] - union[0], union[3] - union[1])
    assert abs(box.size - 1.7 * face) <= 1.0
    assert (lo[:, 0] >= box.x0).all() and (hi[:, 0] <= box.x1).all()
    assert (lo[:, 1] >= box.y0).all() and (hi[:, 1] <= box.y1).all()
    # centred above the face centre (room for hair and forehead)
    assert box.y0 + box.size / 2 < (union[1] + union[3]) / 2
    # one outlier frame does not blow up the robust crop
    spiky = truth.copy()
    spiky[7] += 300.0
    clean = compute_crop(truth, 640, 480, percentile=95.0).size
    assert compute_crop(spiky, 640, 480, percentile=95.0).size <= 1.03 * clean
    assert compute_crop(spiky, 640, 480, percentile=100.0).size > 1.5 * clean
    with pytest.raises(InputError, match="margin"):
        compute_crop(truth, 640, 480, margin=0.5)


def test_crop_intrinsics_match_crop_landmarks(seed):
    rng = np.random.default_rng(seed)
    K = default_intrinsics(640, 480, fov_deg=rng.uniform(15, 60))
    K[0, 2] += rng.normal(0, 5)
    box = CropBox(int(rng.integers(-50, 300)), int(rng.integers(-50, 200)), int(rng.integers(100, 500)))
    X = rng.normal(0, 0.1, (20, 3)) + [0, 0, 1.0]  # camera coordinates, in front of the camera
    def project(KK):
        p = X @ np.asarray(KK).T
        return p[:, :2] / p[:, 2:]
    Kc = crop_intrinsics(K, box, 256)
    np.testing.assert_allclose(project(Kc), crop_landmarks(project(K), box, 256), atol=1e-9)
    Kt = crop_intrinsics(torch.tensor(K), box, 256)
    assert isinstance(Kt, torch.Tensor)
    np.testing.assert_allclose(Kt.numpy(), Kc, atol=1e-9)
    pts_t = torch.tensor(project(K), dtype=torch.float32)
    np.testing.assert_allclose(crop_landmarks(pts_t, box, 256).numpy(), crop_landmarks(project(K), box, 256),
                               atol=1e-3)
    # no K: a nominal camera of the frame, or of the crop (principal point at its centre)
    K0 = crop_intrinsics(None, box, 256)
    assert K0[0, 2] == 128 and K0[1, 2] == 128
    np.testing.assert_allclose(crop_intrinsics(None, box, 256, image_size=(640, 480)),
                               crop_intrinsics(default_intrinsics(640, 480), box, 256))


# ----------------------------------------------------------------------------------------- subject logic


def test_failed_frames_are_interpolated_and_marked(seed):
    rng = np.random.default_rng(seed)
    T = 30
    faces, truth = _moving_faces(rng, T)
    failed = np.array([0, 1, 9, 10, 11, 20, 29])
    for t in failed:
        faces[t] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one face only: no warning
        track = detect_video(_frames(T), FakeDetector(faces))
    assert isinstance(track, LandmarkTrack)
    assert track.points.shape == (T, NUM_LANDMARKS, 2) and track.depth.shape == (T, NUM_LANDMARKS)
    assert track.image_size == (64, 48)
    np.testing.assert_array_equal(track.failed_frames, failed)
    assert track.detected.sum() == T - len(failed)
    # straight-line motion: interior gaps are filled exactly, the ends are held
    np.testing.assert_allclose(track.points[9:12], truth[9:12], atol=1e-3)
    np.testing.assert_allclose(track.points[20], truth[20], atol=1e-3)
    np.testing.assert_allclose(track.points[0], truth[2], atol=1e-4)
    np.testing.assert_allclose(track.points[1], truth[2], atol=1e-4)
    np.testing.assert_allclose(track.points[29], truth[28], atol=1e-4)
    assert (track.confidence[failed] == 0).all()
    ok = track.detected
    assert (track.confidence[ok] > 0.8).all() and (track.confidence[ok] <= 0.9 + 1e-6).all()
    np.testing.assert_array_equal(track.num_faces, [0 if t in failed else 1 for t in range(T)])


def test_confidence_drops_on_a_landmark_glitch(seed):
    rng = np.random.default_rng(seed)
    T = 20
    faces, truth = _moving_faces(rng, T)
    glitch = int(rng.integers(3, T - 3))
    jumped = truth[glitch] + rng.normal(0, 15.0, truth[glitch].shape).astype(np.float32)  # landmarks scatter
    faces[glitch] = [FaceObservation(jumped, faces[glitch][0].depth, score=0.9)]
    track = detect_video(_frames(T), FakeDetector(faces))
    assert track.detected.all()
    assert track.confidence[glitch] < 0.2
    far = np.abs(np.arange(T) - glitch) > 1
    np.testing.assert_allclose(track.confidence[far], 0.9, atol=1e-4)  # steady motion costs nothing


def test_interpolate_missing_general(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(12, 3))
    detected = np.zeros(12, bool)
    detected[[3, 7]] = True
    out = interpolate_missing(values, detected)
    np.testing.assert_allclose(out[:4], np.repeat(values[3:4], 4, axis=0))
    np.testing.assert_allclose(out[5], 0.5 * (values[3] + values[7]))
    np.testing.assert_allclose(out[7:], np.repeat(values[7:8], 5, axis=0))
    np.testing.assert_array_equal(interpolate_missing(values, np.ones(12, bool)), values)


def test_no_face_in_most_frames_is_a_clear_error(seed):
    rng = np.random.default_rng(seed)
    T = 20
    faces, _ = _moving_faces(rng, T)
    for t in range(11):
        faces[t] = []
    with pytest.raises(InputError, match=r"no face was found in 11 of 20 frames; film the face frontally"):
        detect_video(_frames(T), FakeDetector(faces))
    faces[10] = _moving_faces(rng, T)[0][10]  # 10 of 20 missing: still tracked
    assert detect_video(_frames(T), FakeDetector(faces)).detected.sum() == 10
    with pytest.raises(InputError, match="no face"):
        detect_video(_frames(3), FakeDetector([[], [], []]), max_missing_fraction=1.0)


def test_second_face_of_similar_size_warns_and_largest_is_subject(seed):
    rng = np.random.default_rng(seed)
    T = 25
    faces, truth = _moving_faces(rng, T, size=100.0)
    other = _face(rng, np.array([600.0, 300.0]), 90.0)  # area ratio ~0.8
    with_other = [list(f) for f in faces]
    for t in range(5, 15):
        with_other[t].insert(0, FaceObservation(other, np.zeros(NUM_LANDMARKS, np.float32)))
    with pytest.warns(TrackingWarning, match=r"second face of similar size .* in 10 of 25 frames"):
        track = detect_video(_frames(T), FakeDetector(with_other))
    np.testing.assert_allclose(track.points, truth, atol=1e-4)  # the larger face is the subject
    assert len(track.warnings) == 1 and track.num_faces[5] == 2

    # a small face in the background, or a similar one in only a few frames: no warning
    for extra, frames in ((_face(rng, np.array([600.0, 300.0]), 40.0), range(T)), (other, range(3))):
        mixed = [list(f) for f in faces]
        for t in frames:
            mixed[t].append(FaceObservation(extra, np.zeros(NUM_LANDMARKS, np.float32)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert detect_video(_frames(T), FakeDetector(mixed)).warnings == []


def test_subject_does_not_flip_between_similar_faces(seed):
    rng = np.random.default_rng(seed)
    T = 12
    a = [_face(rng, np.array([150.0, 200.0]), 100.0 + (5.0 if t % 2 else 0.0)) for t in range(T)]
    b = [_face(rng, np.array([450.0, 200.0]), 102.5) for t in range(T)]
    z = np.zeros(NUM_LANDMARKS, np.float32)
    per_frame = [[FaceObservation(b[t], z), FaceObservation(a[t], z)] for t in range(T)]
    per_frame[0] = [FaceObservation(a[0], z), FaceObservation(_face(rng, np.array([450.0, 200.0]), 90.0), z)]
    sel = select_subject(per_frame)
    np.testing.assert_allclose(sel.points, np.stack(a))  # follows face a although b is sometimes larger
    assert len(sel.warnings) == 1


# ----------------------------------------------------------------------------------------- MediaPipe


@pytest.fixture(scope="module")
def may_frames():
    from avatar3d.paths import shared_dir

    root = shared_dir()
    if root is None:
        pytest.skip("../shared (development videos) is not present on this machine")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed (the tracking extra)")
    from avatar3d.io.media import VideoReader

    frames = []
    for frame in VideoReader(root / "data" / "video" / "May_5s.mp4"):
        frames.append(frame)
        if len(frames) == 8:
            break
    return frames


def test_mediapipe_finds_478_landmarks_with_iris_on_a_real_face(shared, may_frames):
    from avatar3d.tracking.landmarks import MediaPipeFaceMesh

    frame = may_frames[0]
    with MediaPipeFaceMesh() as detector:
        faces = detector(frame)
    assert len(faces) == 1
    face = faces[0]
    assert face.points.shape == (478, 2) and face.depth.shape == (478,)
    assert 0.5 < face.score <= 1.0
    p = face.points
    for iris, (c0, c1) in ((range(468, 473), (33, 133)), (range(473, 478), (362, 263))):
        x0, x1 = sorted((p[c0, 0], p[c1, 0]))
        eye_y, eye_w = 0.5 * (p[c0, 1] + p[c1, 1]), x1 - x0
        for i in iris:
            assert x0 < p[i, 0] < x1, f"iris point {i} is not between the eye corners {c0}/{c1}"
            assert abs(p[i, 1] - eye_y) < 0.5 * eye_w
    x0, y0, x1, y1 = face.box
    centre, extent = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0)
    assert np.linalg.norm(p[4] - centre) < 0.15 * extent  # nose tip near the face centre
    assert p[4, 1] > p[468, 1]  # below the eyes
    assert face.depth[4] < np.median(face.depth)  # the nose is nearer the camera than most of the face


def test_mediapipe_sees_no_face_in_noise_or_flat_colour(seed, shared, may_frames):
    from avatar3d.tracking.landmarks import MediaPipeFaceMesh

    rng = np.random.default_rng(seed)
    with MediaPipeFaceMesh() as detector:
        assert detector(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) == []
        assert detector(np.full((256, 256, 3), 128, np.uint8)) == []


def test_detect_video_with_mediapipe(shared, may_frames):
    frames = list(may_frames) + [np.zeros_like(may_frames[0])]  # a black frame: failed, interpolated
    track = detect_video(iter(frames))
    assert track.detected[:-1].all() and not track.detected[-1]
    assert (track.confidence[:-1] > 0.5).all() and track.confidence[-1] == 0
    np.testing.assert_allclose(track.points[-1], track.points[-2])
    box = compute_crop(track, *track.image_size)
    assert box.size > 0.3 * max(track.image_size)


def test_mediapipe_two_faces_side_by_side_warn_and_keep_one_subject(shared, may_frames):
    # the same person twice (the copy mirrored), similar size: warned about, and the subject never flips
    frames = [np.concatenate([f, f[:, ::-1]], axis=1) for f in may_frames]
    with pytest.warns(TrackingWarning, match="second face of similar size"):
        track = detect_video(iter(frames))
    assert (track.num_faces == 2).all() and track.detected.all()
    half = track.image_size[0] / 2
    side = track.points[:, 4, 0] > half  # which copy the nose tip is on
    assert side.all() or (~side).all()


def test_portrait_framing_holds_head_and_shoulders_inside_the_frame(seed):
    from avatar3d.tracking.crop import framed_crop

    rng = np.random.default_rng(seed)
    W, H = int(rng.integers(640, 1920)), int(rng.integers(480, 1080))
    face = float(rng.uniform(80, 0.35 * min(W, H)))
    cx, cy = rng.uniform(0.3, 0.7) * W, rng.uniform(0.25, 0.5) * H
    pts = np.stack([rng.uniform(cx - face / 2, cx + face / 2, (4, 478)),
                    rng.uniform(cy - face / 2, cy + face / 2, (4, 478))], -1)
    head, portrait = framed_crop(pts, W, H, "head"), framed_crop(pts, W, H, "portrait")
    assert portrait.inside(W, H) and portrait.size >= min(head.size, W, H) - 1
    lo, hi = pts.reshape(-1, 2).min(0), pts.reshape(-1, 2).max(0)
    assert portrait.x0 <= lo[0] and portrait.x1 >= hi[0] and portrait.y0 <= lo[1] + 1  # the face is in it
    assert (lo[1] + hi[1]) / 2 < portrait.y0 + portrait.size / 2  # in its upper half: room for the shoulders
    with pytest.raises(InputError):
        framed_crop(pts, W, H, "landscape")
