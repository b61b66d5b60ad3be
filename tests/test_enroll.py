"""`avatar3d enroll` end to end on a real clip with a tiny training budget (needs ../shared).

Checks the avatar directory (with its audio-to-expression model), eval.json keys, that held-out frames
were never trained on, and that a failed re-run leaves the existing avatar intact.
"""
from __future__ import annotations

import json

import pytest

from avatar3d import cli
from avatar3d.pipeline.config import from_preset, load_config

EVAL_KEYS = {"psnr", "ssim", "psnr_refined", "ssim_refined", "psnr_masked", "lpips", "frames_train", "frames_eval",
             "resolution", "num_gaussians", "seconds", "device"}


# A tiny budget, set from the command line as a user would: this test is about the pipeline, not the quality.
# min-speech-s low: 4 s of training audio must reach a learnt model, not the energy fallback; the closed-form
# regressor alone keeps the stage to seconds (the network is tested elsewhere).
TINY = ["--train.iterations", "40", "--train.resolution", "128", "--train.init-gaussians", "4000",
        "--train.max-gaussians", "5000", "--train.sh-degree", "0", "--train.densify-from", "20",
        "--train.densify-until", "30", "--train.densify-every", "10", "--train.opacity-reset-every", "1000000",
        "--train.refine-from", "10", "--train.checkpoint-every", "20", "--a2e.min-speech-s", "1.0",
        "--a2e.no-network"]


@pytest.fixture(scope="module")
def enrolled(ict_home, tmp_path_factory):
    from avatar3d.paths import shared_dir

    out = tmp_path_factory.mktemp("avatars") / "may"
    video = shared_dir() / "data" / "video" / "May_5s.mp4"
    assert cli.run(["enroll", str(video), "--out", str(out), "--preset", "fast", *TINY]) == 0
    yield out, video


def test_the_resolved_config_is_saved(enrolled):
    """enroll.yaml holds the preset's settings with the command line's overrides, and loads back."""
    out, video = enrolled
    saved = load_config(out / "enroll.yaml")
    fast = from_preset(video, "fast")
    assert saved.preset == "fast" and saved.video == video and saved.out == out
    assert saved.train.iterations == 40 and saved.train.resolution == 128 and not saved.a2e.network
    assert saved.a2e.max_steps == fast.a2e.max_steps != from_preset(video, "default").a2e.max_steps  # the preset's
    assert json.loads((out / "avatar.json").read_text())["settings"]["train"]["iterations"] == 40


def test_avatar_directory(enrolled):
    out, _ = enrolled
    for name in ("avatar.json", "gaussians.safetensors", "tracking.npz", "refined.npz", "eval.json", "eval.mp4",
                 "overlay.mp4", "track_report.json"):
        assert (out / name).is_file(), name
    for name in ("model.safetensors", "config.json"):
        assert (out / "audio2expr" / name).is_file(), name
    assert json.loads((out / "audio2expr" / "config.json").read_text())["kind"] == "ridge"
    assert len(list((out / "data" / "frames").glob("*.png"))) == 125
    assert len(list((out / "data" / "masks").glob("*.png"))) == 125
    assert not (out.parent / f".{out.name}.staging").exists()


def test_eval_json_and_split(enrolled):
    import numpy as np

    out, _ = enrolled
    summary = json.loads((out / "eval.json").read_text())
    assert EVAL_KEYS <= set(summary)
    assert summary["frames_train"] + summary["frames_eval"] == 125 and summary["frames_eval"] == 25
    assert 10.0 < summary["psnr"] < 60.0 and 0.0 < summary["ssim"] <= 1.0
    assert summary["psnr_refined"] >= summary["psnr"] - 0.5  # refining the held-out pose cannot hurt much
    with np.load(out / "refined.npz") as refined:
        assert int(refined["frames_train"].max()) < 100  # the held-out tail was never trained on
    manifest = json.loads((out / "avatar.json").read_text())
    assert manifest["stages"]["eval"] == "done" and manifest["rig_name"] == "ict"
    assert manifest["stages"]["audio2expr"] == "done" and manifest["stages"]["background"] == "done"
    from avatar3d.render.plate import load_plate

    # the default framing is the portrait: a torso fitted to her shoulders, scored over her room
    from avatar3d.head.torso import load_torso

    assert summary["framing"] == "portrait" and load_torso(out) is not None
    assert manifest["metrics"]["torso"]["iou"] > 0.7 and 0.26 <= manifest["metrics"]["torso"]["shoulder_width"] <= 0.56
    for key in ("psnr_full", "ssim_full", "psnr_head", "psnr_torso"):
        assert summary[key] is not None and 10.0 < summary[key] < 60.0 or key == "ssim_full", key
    plate = load_plate(out)  # May_5s: a still room, half of it hidden by the person all along
    assert plate is not None and plate.image.shape == (512, 512, 3) and plate.depth > 1.0
    assert 0.2 < manifest["metrics"]["plate"]["seen_share"] < 0.9
    a2e = json.loads((out / "audio2expr" / "config.json").read_text())
    assert a2e["frames_train"] == summary["frames_train"]  # trained on the same split, tail unseen


def test_phonetic_path_is_fitted_and_scored_across_speakers(enrolled, tmp_path):
    out, _ = enrolled
    a2e = json.loads((out / "audio2expr" / "config.json").read_text())
    assert "visemes" in a2e and a2e["phonetic"]["phones"]["reliable"]
    assert 0.0 <= a2e["phonetic_share"] <= 1.0 and 0.0 <= a2e["phonetic_share_other_voice"] <= 1.0
    assert 100.0 < a2e["voice_f0_hz"] < 300.0
    report = tmp_path / "lipsync.json"
    # the avatar's own folder is a tracked video too: its audio drives it, its tracked mouth is the reference
    assert cli.run(["eval", "lipsync", str(out), "--drive-video", str(out), "--json", str(report)]) == 0
    cross = json.loads(report.read_text())["cross_speaker"]
    assert cross["frames"] == 125 and cross["mouth_open_corr"] is not None and cross["mouth_open_corr"] > 0.2
    assert cross["silence"]["rest_mm"] > 0.0 and cross["lve_mm"] > 0.0


def test_lipsync_benchmark_times_each_stage(enrolled, tmp_path):
    from avatar3d.paths import shared_dir

    out, _ = enrolled
    report = tmp_path / "bench.json"
    audio = shared_dir() / "data" / "audio" / "RD_Radio31_000.wav"
    assert cli.run(["bench", "lipsync", str(out), "--audio", str(audio), "--repeats", "1", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["threads"] == 1 and abs(result["audio_s"] - 8.0) < 0.1
    stages = result["stages"]
    assert {"phone decoding (one decode)", "phonetic front-end (all decodes)", "animate (everything)"} <= set(stages)
    assert all(r["median_s"] > 0 and r["realtime"] > 0 for r in stages.values())


def test_dubbing_keeps_the_motion_and_takes_the_mouth_and_sound_of_new_speech(enrolled, tmp_path):
    """May_5s re-voiced with another speaker: the clip lasts as long as the speech (7 s against her 5 s, so her
    motion plays back and forth), the jaw is the speech's, the head motion hers."""
    import numpy as np

    from avatar3d.api import Avatar
    from avatar3d.drive.dub import ping_pong
    from avatar3d.io.media import VideoReader, read_audio
    from avatar3d.paths import shared_dir

    out, _ = enrolled
    speech = shared_dir() / "data" / "audio" / "RD_Radio31_000.wav"
    avatar = Avatar.load(out, backend="cpu")
    dubbed, motion = avatar.dub(speech), avatar.tracked()
    alone = avatar.animate(speech, fps=motion.fps)
    assert len(dubbed) == len(alone) > len(motion) and dubbed.source == "dub"
    np.testing.assert_array_equal(dubbed.jaw, alone.jaw)
    np.testing.assert_array_equal(dubbed.neck, motion.neck[ping_pong(len(dubbed), len(motion), motion.fps, motion.fps)])
    clip = tmp_path / "dub.mp4"
    assert cli.run(["render", str(out), "--tracking", "--audio", str(speech), "--seconds", "7", "--resolution", "64",
                    "--out", str(clip), "--no-progress", "--emotion", "happy:0.5"]) == 0
    with VideoReader(clip) as video:
        assert abs(video.duration - 7.0) < 0.1
    assert abs(read_audio(clip).size / 16000 - 7.0) < 0.1


def test_identity_is_scored_held_out_and_under_changed_controls(enrolled, tmp_path):
    """eval.json's render-vs-real identity distance, and `eval identity` over cameras, emotions and another voice;
    a face not found is counted (this tiny avatar is blurry), so every render is accounted for."""
    pytest.importorskip("dlib")
    from avatar3d.paths import shared_dir

    out, _ = enrolled
    summary = json.loads((out / "eval.json").read_text())
    missed, frames = summary["identity_no_face_real"] + summary["identity_no_face_render"], summary["frames_eval"]
    assert frames - missed <= summary["identity_pairs"] <= frames
    assert (summary["identity_distance"] is None) == (summary["identity_pairs"] == 0)
    report_path, sheet = tmp_path / "identity.json", tmp_path / "sheet.png"
    speech = shared_dir() / "data" / "audio" / "RD_Radio31_000.wav"
    assert cli.run(["eval", "identity", str(out), "--frames", "2", "--audio", str(speech), "--json",
                    str(report_path), "--sheet", str(sheet), "--backend", "cpu"]) == 0
    report = json.loads(report_path.read_text())
    labels = set(report["controls"])
    assert {"camera yaw +30", "distance x1.5", "emotion happy", "emotion contempt", "voice RD_Radio31_000.wav"} <= labels
    assert all(c["renders"] == 2 for c in report["controls"].values()) and sheet.stat().st_size > 10_000


def test_failed_rerun_keeps_the_avatar(enrolled, tmp_path):
    out, _ = enrolled
    before = (out / "gaussians.safetensors").read_bytes()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert cli.run(["enroll", str(bad), "--out", str(out)]) == 1
    assert (out / "gaussians.safetensors").read_bytes() == before
