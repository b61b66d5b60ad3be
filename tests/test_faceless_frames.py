"""Frames where no face was detected are left out of training and evaluation, and said so."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from avatar3d.errors import InputError
from avatar3d.tracking.sequence import describe_frames
from avatar3d.io.avatar_dir import default_split
from avatar3d.training.trainer import face_split


def _seq(num_frames: int, faceless: list[int]):
    return SimpleNamespace(num_frames=num_frames, faceless_frames=lambda: list(faceless))


def test_faceless_frames_leave_both_splits():
    gap = list(range(50, 100))  # 2 s at 25 fps without a face, in the training part
    tail_gap = [140, 141]  # and two in the held-out tail
    train, held = face_split(_seq(150, gap + tail_gap), 0.2)
    assert train == [i for i in range(120) if i not in gap]
    assert held == [i for i in range(120, 150) if i not in tail_gap]
    assert face_split(_seq(150, []), 0.2) == (default_split(150, 0.2), list(range(120, 150)))


def test_no_face_in_the_training_part_is_an_error():
    with pytest.raises(InputError, match="no face was detected in any of the first 8 frames"):
        face_split(_seq(10, list(range(8))), 0.2)


def test_where_the_face_is_missing_is_said_in_seconds():
    text = describe_frames(list(range(50, 100)) + [140, 141], 150, 25.0)
    assert text == "52 of 150 frames (35 %) at 2.0-4.0 s, 5.6-5.7 s"
    many = describe_frames(list(range(0, 20, 2)), 20, 10.0)
    assert many.endswith("and 6 more spans")


def test_a_damaged_tracking_file_names_the_command_that_repairs_it(tmp_path):
    from avatar3d.tracking.sequence import TrackedSequence

    avatar = tmp_path / "me"
    avatar.mkdir()
    (avatar / "avatar.json").write_text("{}")
    (avatar / "tracking.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"enroll again with `avatar3d enroll VIDEO --out .*me`"):
        TrackedSequence.load(avatar / "tracking.npz")
    track = tmp_path / "track"
    track.mkdir()
    (track / "tracking.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"avatar3d track VIDEO --out .*track`"):
        TrackedSequence.load(track / "tracking.npz")


def test_the_audio_model_never_trains_on_faceless_frames():
    import numpy as np
    import torch

    from avatar3d.audio2expr.clips import Clip

    clip = Clip(np.zeros(16000, np.float32), 25.0, 0.0, torch.zeros(100, 4), val_start=80)
    assert clip.fit_spans() == [(0, 80)]
    faceless = np.zeros(100, bool)
    faceless[[10, 11, 12, 40, 90]] = True
    clip.faceless = faceless
    assert clip.fit_spans() == [(0, 10), (13, 40), (41, 80)]  # frame 90 is in the validation slice
    assert not set(clip.fit_frames()) & {10, 11, 12, 40}
