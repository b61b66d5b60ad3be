"""`avatar3d track` end to end on a real clip (needs ../shared): outputs, schema, report, overlay."""
from __future__ import annotations

import json

import numpy as np
import pytest

from avatar3d import cli
from avatar3d.io.media import VideoReader
from avatar3d.tracking.sequence import TrackedSequence

FRAMES = 30


@pytest.fixture(scope="module")
def tracked(ict_home, tmp_path_factory):
    from avatar3d.paths import shared_dir

    out = tmp_path_factory.mktemp("track") / "may"
    code = cli.run(["track", str(shared_dir() / "data" / "video" / "May_5s.mp4"), "--out", str(out),
                    "--max-frames", str(FRAMES), "--resolution", "256"])
    assert code == 0
    return out


def test_outputs_and_schema(tracked):
    seq = TrackedSequence.load(tracked / "tracking.npz")
    assert seq.num_frames == FRAMES and seq.rig_name == "ict"
    assert seq.expr.shape[0] == seq.jaw.shape[0] == seq.eyes.shape[0] == FRAMES
    assert seq.eyes.shape[1:] == (2, 3) and seq.landmarks.shape == (FRAMES, 478, 2)
    assert abs(seq.fps - 25.0) < 1e-6 and seq.resolution == 256
    # the audio of the tracked frames only, 16 kHz
    assert abs(len(seq.audio) / 16000 - FRAMES / 25.0) < 1 / 25.0
    assert sorted(p.name for p in (tracked / "frames").iterdir())[-1] == f"{FRAMES - 1:06d}.png"
    with VideoReader(tracked / "overlay.mp4") as reader:
        assert reader.num_frames == FRAMES and reader.width == 256


def test_report_figures_are_sane(tracked):
    report = json.loads((tracked / "track_report.json").read_text())
    for key in ("frames", "seconds", "ms_per_frame", "landmark_rmse_px", "nme", "cv_rmse_px", "mouth_rmse_px",
                "eye_rmse_px", "pose_jitter_deg", "failed_frames"):
        assert key in report
    # at 256 px the 512-px targets halve; allow slack for a 30-frame clip
    assert report["landmark_rmse_px"] < 2.5
    assert report["cv_rmse_px"] < 3.0
    assert report["failed_frames"] == []
    seq = TrackedSequence.load(tracked / "tracking.npz")
    err = np.linalg.norm(seq.landmarks_fit - seq.landmarks, axis=-1)
    assert np.sqrt((err ** 2).mean()) < 3.0


def test_bad_inputs_fail_clearly(tmp_path, capsys):
    fake = tmp_path / "notavideo.mp4"
    fake.write_text("hello")
    assert cli.run(["track", str(fake), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "notavideo.mp4" in err
    assert not (tmp_path / "o").exists()
    assert cli.run(["track", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")]) == 1
