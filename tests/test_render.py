"""`avatar3d render` end to end on the tiny synthetic avatar: clip timing, audio sync, provenance, the output
options and the errors a user meets first."""
from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avatar3d import cli
from avatar3d.commands.render import RenderConfig, main
from avatar3d.drive.params import DriveParams
from avatar3d.errors import InputError, MediaError
from avatar3d.export.clip import clip_frame_count, parse_background, resample
from avatar3d.io.media import AUDIO_RATE, read_audio

RES = 64


@pytest.fixture(scope="session")
def avatar_dir(synthetic_avatar_dir) -> Path:
    return synthetic_avatar_dir


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        frames = sum(1 for _ in c.decode(v))
        return {"frames": frames, "fps": Fraction(v.average_rate), "width": v.codec_context.width,
                "height": v.codec_context.height, "video_codec": v.codec_context.name,
                "video_seconds": float(v.duration * v.time_base),
                "audio_codec": a.codec_context.name if a else None,
                "audio_seconds": float(a.duration * a.time_base) if a else None,
                "audio_start": float(a.start_time * a.time_base) if a else None,
                "video_start": float(v.start_time * v.time_base), "metadata": dict(c.metadata)}


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def _envelope(wave: np.ndarray, hop: int = 160) -> np.ndarray:  # 10 ms RMS frames
    n = len(wave) // hop
    return np.sqrt((wave[: n * hop].reshape(n, hop) ** 2).mean(1))


def _render(avatar_dir, out, **kw) -> int:
    return main(RenderConfig(avatar=avatar_dir, out=out, resolution=RES, progress=False, **kw))


def test_tracking_clip_lasts_as_long_as_its_audio_and_stays_in_sync(avatar_dir, tmp_path, capsys):
    from avatar3d.tracking.sequence import TrackedSequence

    seq = TrackedSequence.load(avatar_dir / "tracking.npz")
    out = tmp_path / "clip.mp4"
    assert _render(avatar_dir, out, tracking=True, fps=10) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"\d+(\.\d+)? fps", lines[-1]), lines[-1]  # the last line reports the speed
    info = _probe(out)
    audio_seconds = len(seq.audio) / AUDIO_RATE
    assert info["fps"] == 10 and info["width"] == info["height"] == RES
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["frames"] == round(audio_seconds * 10)
    assert abs(info["frames"] / 10 - audio_seconds) <= 1 / 10  # duration = the audio's, within one frame
    assert abs(info["audio_seconds"] - info["frames"] / 10) <= 1 / 10
    assert abs(info["audio_start"] - info["video_start"]) < 0.01
    # the sound in the clip is the enrollment's own, at the same moments (lag of the envelopes ~ 0)
    got = _envelope(read_audio(out))
    want = _envelope(seq.audio)
    n = min(len(got), len(want))
    lags = range(-20, 21)
    score = [np.corrcoef(np.roll(got[:n], k)[25:n - 25], want[25:n - 25])[0, 1] for k in lags]
    assert abs(lags[int(np.argmax(score))]) * 0.01 <= 0.1 and max(score) > 0.9
    meta = info["metadata"]
    manifest = json.loads((avatar_dir / "avatar.json").read_text())
    assert "made by avatar3d" in meta.get("comment", "")
    assert meta.get("avatar_id") == manifest["avatar_id"] and re.match(r"\d{4}-\d\d-\d\d", meta.get("date", ""))
    # the frames show the avatar over white, moving
    frames = _frames(out)
    assert frames[0].mean() > 150 and (frames[0] < 200).any(axis=-1).mean() > 0.05
    assert np.abs(frames[0].astype(int) - frames[len(frames) // 2]).mean() > 0.5


def test_output_fps_resamples_the_driver(avatar_dir, tmp_path, capsys):
    out = tmp_path / "clip25.mp4"
    assert _render(avatar_dir, out, tracking=True, fps=25, orbit=40, gaze="camera") == 0
    info = _probe(out)
    assert info["fps"] == 25 and abs(info["frames"] / 25 - info["audio_seconds"]) <= 1 / 25
    assert info["frames"] == 30  # 1.2 s of audio at 25 fps


def test_resample_keeps_time_and_interpolates(seed):
    rng = np.random.default_rng(seed)
    t = 12
    expr = np.cumsum(rng.normal(size=(t, 4)), 0).astype(np.float32)
    neck = np.zeros((t, 3), np.float32)
    neck[:, 1] = np.linspace(0, 0.5, t)  # a steady head turn
    p = DriveParams(rng.normal(size=5), expr, np.zeros((t, 3)), neck, np.zeros((t, 3)), np.zeros((t, 2, 3)),
                    np.zeros((t, 3)), fps=10.0, audio=np.zeros(int(1.2 * AUDIO_RATE), np.float32))
    q = resample(p, 25.0)
    assert len(q) == clip_frame_count(p, 25.0) == 30 and q.fps == 25.0
    assert np.allclose(q.expr[5], p.expr[2]) and np.allclose(q.expr[10], p.expr[4])  # shared instants
    assert np.allclose(q.expr[1], p.expr[0] + 0.4 * (p.expr[1] - p.expr[0]), atol=1e-5)
    assert np.allclose(q.neck[1, 1], 0.4 * p.neck[1, 1], atol=1e-5)  # the rotation moves at the same speed
    assert np.allclose(q.expr[-1], p.expr[-1])  # past the driver's end the last frame holds
    assert np.array_equal(q.audio, p.audio)  # the sound is untouched


def test_side_by_side_alpha_and_background(avatar_dir, tmp_path):
    out = tmp_path / "sbs.mp4"
    assert _render(avatar_dir, out, tracking=True, fps=10, side_by_side=True, alpha=True, background="#ff0000") == 0
    frames = _frames(out)
    assert frames[0].shape == (RES, 2 * RES, 3)
    real = np.asarray(Image.open(avatar_dir / "data" / "frames" / "000000.png").convert("RGB"), np.float64)
    assert np.abs(frames[0][:, :RES] - real).mean() < 8  # left: the real enrollment frame
    right = frames[0][:, RES:].astype(int)
    assert right[1, 1, 0] > 200 and right[1, 1, 1] < 60  # right: the render over red
    alpha_dir = tmp_path / "sbs_alpha"
    pngs = sorted(alpha_dir.glob("*.png"))
    assert len(pngs) == len(frames)
    rgba = np.asarray(Image.open(pngs[0]))
    assert rgba.shape == (RES, RES, 4) and rgba[1, 1, 3] == 0 and 0.05 < (rgba[..., 3] > 128).mean() < 0.8


def test_background_forms(tmp_path):
    assert parse_background("white") == (1.0, 1.0, 1.0)
    assert parse_background("plate") == parse_background(" Plate ") == "plate"
    assert parse_background("#336699") == pytest.approx((0.2, 0.4, 0.6))
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "bg.png")
    assert parse_background(str(tmp_path / "bg.png")).shape == (8, 8, 3)
    with pytest.raises(InputError, match="colour"):
        parse_background("notacolour")
    with pytest.raises(InputError, match="no such image"):
        parse_background(str(tmp_path / "missing.png"))


def test_camera_and_head_controls_reach_the_frames(avatar_dir, tmp_path):
    frames = {}
    for name, kw in {"base": {}, "far": {"distance": "x2"}, "yaw": {"yaw": 35.0},
                     "head": {"head_pose": "25,0,0", "still_head": True}}.items():
        out = tmp_path / f"{name}.mp4"
        assert _render(avatar_dir, out, tracking=True, fps=5, **kw) == 0
        frames[name] = _frames(out)[0]
    cover = {k: float((f.min(-1) < 235).mean()) for k, f in frames.items()}
    assert cover["far"] < 0.45 * cover["base"]  # x2 distance: about a quarter of the area
    for k in ("yaw", "head"):
        assert np.abs(frames[k].astype(int) - frames["base"]).mean() > 2


def test_bad_inputs_say_what_to_do(avatar_dir, tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(InputError, match="no driver"):
        _render(avatar_dir, out)
    with pytest.raises(InputError, match="two motions"):
        _render(avatar_dir, out, tracking=True, drive_video=tmp_path / "v.mp4")
    text = tmp_path / "speech.wav"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(MediaError, match="speech.wav"):
        _render(avatar_dir, out, audio=text)
    with pytest.raises(InputError, match="needs --tracking"):
        _render(avatar_dir, out, drive_video=tmp_path / "v.mp4", side_by_side=True)
    with pytest.raises(InputError, match="audio-to-expression model"):  # the synthetic avatar has none
        from avatar3d.io.audio import write_wav

        write_wav(tmp_path / "real.wav", np.zeros(AUDIO_RATE, np.float32), AUDIO_RATE)
        _render(avatar_dir, out, audio=tmp_path / "real.wav")
    with pytest.raises(InputError, match="unknown expression"):
        _render(avatar_dir, out, tracking=True, expression=["noSuchShape=1"])
    with pytest.raises(InputError, match="x1.5"):
        _render(avatar_dir, out, tracking=True, distance="far")
    with pytest.raises(InputError, match="ending in .mp4"):
        _render(avatar_dir, tmp_path / "x.avi", tracking=True)
    with pytest.raises(InputError, match="avatar folder"):
        main(RenderConfig(avatar=tmp_path / "nobody", out=out, tracking=True))
    assert not out.exists()
    # through the CLI: exit code 1 and the message on stderr, no traceback
    assert cli.run(["render", str(avatar_dir), "--out", str(out)]) == 1


def test_drive_video_clip_carries_the_drivers_motion_and_voice(avatar_dir, tmp_path):
    from conftest import SYNTHETIC_SUBJECT

    from avatar3d.io.media import write_mp4
    from avatar3d.pipeline.synthetic_eval import eval_subject, tracked_sequence

    driver = eval_subject(**{**SYNTHETIC_SUBJECT, "seed": 21, "seconds": 0.8})
    video = tmp_path / "other.mp4"
    write_mp4(video, (np.full((32, 32, 3), 128, np.uint8) for _ in range(driver.num_frames)), fps=driver.fps,
              audio=driver.audio)
    # the driving video's tracking is cached beside the avatar, so the render does not track it again (and
    # this test needs no face detector: the synthetic driver's parameters are known)
    cache = avatar_dir / "drives" / f"{video.stem}-{video.stat().st_size}"
    cache.mkdir(parents=True)
    tracked_sequence(driver).save(cache / "tracking.npz")
    out = tmp_path / "reenact.mp4"
    assert _render(avatar_dir, out, drive_video=video, fps=10) == 0
    info = _probe(out)
    assert info["frames"] == round(len(driver.audio) / AUDIO_RATE * 10) == 8
    got, want = _envelope(read_audio(out)), _envelope(driver.audio)
    n = min(len(got), len(want))
    assert np.corrcoef(got[5:n - 5], want[5:n - 5])[0, 1] > 0.9  # the driver's voice, in place
    assert info["metadata"].get("avatar3d_driver") == "video"


def test_camera_path_keyframes_move_the_camera(avatar_dir, tmp_path):
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"interpolation": "linear", "keyframes": [{"t": 0.0, "yaw": 0}, {"t": 1.0, "yaw": 40}]}))
    assert _render(avatar_dir, tmp_path / "path.mp4", tracking=True, fps=5, camera_path=path, still_head=True) == 0
    assert _render(avatar_dir, tmp_path / "y0.mp4", tracking=True, fps=5, still_head=True) == 0
    assert _render(avatar_dir, tmp_path / "y40.mp4", tracking=True, fps=5, yaw=40.0, still_head=True) == 0
    keyed, y0, y40 = (_frames(tmp_path / f"{n}.mp4") for n in ("path", "y0", "y40"))
    diff = lambda a, b: float(np.abs(a.astype(int) - b).mean())  # noqa: E731
    moved = diff(keyed[-1], y0[-1])
    assert moved > 3.0  # the keyed camera turned
    # it starts at 0 and ends at 40 degrees (up to the encoder's noise)
    assert diff(keyed[0], y0[0]) < 0.4 * moved and diff(keyed[-1], y40[-1]) < 0.4 * moved


def test_a_picture_behind_and_a_missing_plate(avatar_dir, tmp_path, capsys):
    """`--background photo.png` puts the picture behind the avatar; `--background plate` on an avatar without a
    plate is refused before any work; a head avatar's render notes that re-enrolling makes the portrait."""
    Image.fromarray(np.full((8, 8, 3), (0, 0, 255), np.uint8)).save(tmp_path / "blue.png")
    out = tmp_path / "photo.mp4"
    assert _render(avatar_dir, out, tracking=True, fps=10, background=str(tmp_path / "blue.png")) == 0
    corner = _frames(out)[0][1, 1].astype(int)
    assert corner[2] > 200 and corner[0] < 60
    assert "is a head without shoulders" in capsys.readouterr().err
    with pytest.raises(InputError, match="no background plate"):
        _render(avatar_dir, tmp_path / "plate.mp4", tracking=True, background="plate")
    assert not (tmp_path / "plate.mp4").exists()
