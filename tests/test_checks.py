"""Enrollment input checks: length, face presence and size, head turn, mouth motion, sound.

Synthetic clips (tiny mp4s) with an injected fake landmark detector, so no real video is needed; one
real check on May_5s through the `shared` fixture.
"""
from __future__ import annotations

import numpy as np
import pytest

from avatar3d.pipeline.checks import HAND_OVER_FACE, canonical_face, check_video, hand_over_face, head_angles
from avatar3d.tracking.faces import FaceObservation


def _rot(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return Ry @ Rx


def _landmarks(yaw=0.0, pitch=0.0, mouth=0.0, scale=2000.0, centre=(320.0, 240.0), depth=0.6):
    """478 image landmarks of the canonical face turned by (yaw, pitch), seen by a pinhole camera."""
    X = canonical_face().copy()
    X[14, 1] -= mouth * 0.06  # open the mouth: move the lower inner lip down (metres)
    P = X @ _rot(yaw, pitch).T
    z = depth - P[:, 2]  # camera on +z looking at the face
    uv = np.stack([P[:, 0] / z, -P[:, 1] / z], axis=1) * scale * depth + np.asarray(centre)
    iris = np.repeat(uv[[468 - 1]], 10, axis=0)  # iris points are not used by the checks
    return np.concatenate([uv, iris]).astype(np.float32)


class FakeDetector:
    """Returns landmarks from a schedule (one entry per call); None = no face."""

    def __init__(self, schedule):
        self.schedule, self.calls = schedule, 0

    def __call__(self, frame):
        item = self.schedule(self.calls)
        self.calls += 1
        if item is None:
            return []
        return [FaceObservation(points=item, depth=np.zeros(478, np.float32))]


def _clip(path, seconds: float, fps: int = 25, audio: bool = True, size: int = 64):
    from avatar3d.io.media import write_mp4

    n = int(round(seconds * fps))
    frames = (np.full((size, size, 3), 40 + (i % 50), np.uint8) for i in range(n))
    wave = None
    if audio:
        t = np.arange(int(seconds * 16000)) / 16000.0
        wave = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    write_mp4(path, frames, fps, audio=wave, preset="ultrafast")
    return path


def test_head_angles_recover_known_rotations(seed):
    yaws = np.random.uniform(-30, 30, size=6)
    pitches = np.random.uniform(-15, 15, size=6)
    # a distant camera (nearly orthographic): the weak-perspective fit is almost exact
    yaw, pitch = head_angles(np.stack([_landmarks(y, p, depth=5.0) for y, p in zip(yaws, pitches)]))
    np.testing.assert_allclose(yaw, yaws, atol=1.0)
    np.testing.assert_allclose(pitch, pitches, atol=1.0)
    # a webcam at 60 cm: perspective inflates the angles a little; signs and sizes still right
    yaw, pitch = head_angles(np.stack([_landmarks(y, p, depth=0.6) for y, p in zip(yaws, pitches)]))
    np.testing.assert_allclose(yaw, yaws, rtol=0.25, atol=1.0)
    np.testing.assert_allclose(pitch, pitches, rtol=0.25, atol=1.0)


def test_short_clip_is_an_error(tmp_path, seed):
    clip = _clip(tmp_path / "short.mp4", 1.2)
    report = check_video(clip, detector=FakeDetector(lambda i: _landmarks(20 * np.sin(i), 0, i % 2)))
    assert any("only 1.2 s" in e for e in report.errors)
    with pytest.raises(Exception, match="cannot be enrolled"):
        report.raise_for_errors()


def test_clip_without_a_face_is_an_error(tmp_path, seed):
    clip = _clip(tmp_path / "empty.mp4", 3.0)
    report = check_video(clip, detector=FakeDetector(lambda i: None))
    assert not report.ok
    assert any("no face" in e for e in report.errors)


def test_still_head_gets_the_turn_your_head_warning(tmp_path, seed):
    clip = _clip(tmp_path / "still.mp4", 6.0)
    wobble = np.random.uniform(0.5, 2.0)
    report = check_video(clip, sample_every=3,
                         detector=FakeDetector(lambda i: _landmarks(wobble * np.sin(i), 8 * np.sin(0.7 * i),
                                                                    0.5 + 0.5 * np.sin(1.3 * i))))
    assert report.ok, report.errors
    assert report.stats["yaw_range_deg"] < 5
    assert any("turn your head left and right" in w for w in report.warnings)
    assert not any("mouth" in w for w in report.warnings)
    assert report.stats["sampled_frames"] == 50


def test_turning_talking_head_with_sound_passes_clean(tmp_path, seed):
    clip = _clip(tmp_path / "good.mp4", 6.0)
    report = check_video(clip, detector=FakeDetector(lambda i: _landmarks(25 * np.sin(0.4 * i), 8 * np.sin(0.7 * i),
                                                                          0.5 + 0.5 * np.sin(1.3 * i))))
    assert report.ok and report.warnings == [], report.warnings
    assert report.stats["yaw_range_deg"] > 30


def test_closed_mouth_small_face_and_no_sound_warn(tmp_path, seed):
    clip = _clip(tmp_path / "silent.mp4", 6.0, audio=False)
    report = check_video(clip, detector=FakeDetector(lambda i: _landmarks(25 * np.sin(0.4 * i), 8 * np.sin(0.7 * i),
                                                                          0.0, scale=400.0)))
    text = " | ".join(report.warnings)
    assert report.ok
    assert "speak throughout the clip" in text
    assert "no sound track" in text
    assert "move closer" in text and f"{report.stats['face_width_px']:.0f} px wide" in text


class FakeHands:
    """Hands from a schedule: call i -> a list of [21,2] landmark sets."""

    def __init__(self, schedule):
        self.schedule, self.calls = schedule, 0

    def __call__(self, frame):
        hands = self.schedule(self.calls)
        self.calls += 1
        return hands


def _hand(centre, size=60.0, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.5, 0.5, (21, 2)) * size
    points[:2] = [[-0.5 * size, -0.5 * size], [0.5 * size, 0.5 * size]]  # the box is exactly `size` wide
    return (points + np.asarray(centre)).astype(np.float32)


def test_hand_over_face_is_the_share_of_the_face_box_covered(seed):
    rng = np.random.default_rng(seed)
    face = _landmarks()
    lo, hi = face.min(0), face.max(0)
    for _ in range(20):
        centre = rng.uniform(lo - 40, hi + 40)
        size = rng.uniform(10, 120)
        box_lo, box_hi = centre - size / 2, centre + size / 2
        overlap = np.prod(np.clip(np.minimum(box_hi, hi) - np.maximum(box_lo, lo), 0, None)) / np.prod(hi - lo)
        assert hand_over_face(_hand(centre, size, seed), face) == pytest.approx(overlap, abs=1e-4)


def test_a_hand_in_front_of_the_face_is_warned_one_beside_it_is_not(tmp_path, seed):
    clip = _clip(tmp_path / "hand.mp4", 6.0)
    face = _landmarks(25, 8, 0.5)
    talk = FakeDetector(lambda i: _landmarks(25 * np.sin(0.4 * i), 8 * np.sin(0.7 * i), 0.5 + 0.5 * np.sin(1.3 * i)))
    centre = face.mean(0)
    width = float((face.max(0) - face.min(0))[0])
    over = FakeHands(lambda i: [_hand(centre, 0.8 * width, seed)] if 10 <= i < 14 else [])
    report = check_video(clip, sample_every=3, detector=talk, hands=over)
    assert report.ok and report.stats["hand_over_face_frames"] == 4
    text = " | ".join(report.warnings)
    assert "a hand passes in front of the face in 4 of 50 sampled frames (at 1.2 s, 1.3 s, 1.4 s, 1.6 s)" in text
    once = FakeHands(lambda i: [_hand(centre, 0.8 * width, seed)] if i == 20 else [])  # one detection: no warning
    talk.calls = 0
    report = check_video(clip, sample_every=3, detector=talk, hands=once)
    assert report.stats["hand_over_face_frames"] == 1 and report.warnings == [], report.warnings
    beside = FakeHands(lambda i: [_hand(centre + [1.2 * width, 0.0], 0.8 * width, seed)])  # gesturing to the side
    talk.calls = 0
    report = check_video(clip, sample_every=3, detector=talk, hands=beside)
    assert report.stats["hand_over_face_frames"] == 0 and report.warnings == [], report.warnings
    assert HAND_OVER_FACE < 0.5


def test_real_clip_may(shared):
    pytest.importorskip("mediapipe")
    report = check_video(shared / "data" / "video" / "May_5s.mp4")
    assert report.ok, report.errors
    s = report.stats
    assert s["face_fraction"] > 0.95 and s["has_audio"]
    assert 100 < s["inter_ocular_px"] < 250  # a 512 px frame filled by the face
    assert s["mouth_open_range"] > 0.1  # she speaks throughout
    assert any("turn your head" in w for w in report.warnings)  # this clip is nearly frontal
    assert s["hand_over_face_frames"] == 0  # her hands stay out of the picture


def test_real_clip_german_has_no_hand_over_the_face(shared):
    pytest.importorskip("mediapipe")
    report = check_video(shared / "data" / "video" / "German_20s.mp4")
    assert report.stats["hand_over_face_frames"] == 0  # a talking mouth is not a hand
    assert not any("hand" in w for w in report.warnings)
