"""`avatar3d batch`: manifests and their up-front checks, and whole batches on a local Ray with 2 CPUs.

The batches enroll tiny synthetic subjects: videos of the built-in synthetic rig's textured face (subject seeds
SUBJECT_SEEDS, printed), which MediaPipe tracks, enrolled onto the same rig, so no ../shared is needed. Checked:
a failing job among good ones, a re-run that skips finished work, a changed setting that is not skipped, an
interrupted enrollment that the batch continues, clips skipped until their file changes, and invalid manifests
refused before anything starts.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from avatar3d import cli
from avatar3d.batch.current import clip_is_current, render_key
from avatar3d.batch.jobs import enroll_jobs, render_jobs
from avatar3d.errors import InputError

SUBJECT_SEEDS = (1, 2)  # alice, bob
TINY = ("--train.iterations 40 --train.resolution 128 --train.init-gaussians 4000 --train.max-gaussians 5000 "
        "--train.sh-degree 0 --train.densify-from 20 --train.densify-until 30 --train.densify-every 10 "
        "--train.opacity-reset-every 1000000 --train.refine-from 10 --train.checkpoint-every 20 --no-audio2expr "
        "--track.resolution 128 --head-model synthetic")
CLIP = "--resolution 64 --seconds 1"  # 25 frames at the default 25 fps
ON_TWO_CORES = ("--local-cpus", "2", "--no-progress")  # a local Ray with 2 CPUs, as CI has


def _subject_video(path: Path, seed: int) -> Path:
    from avatar3d.pipeline.synthetic_eval import build_avatar_dir, eval_subject

    subject = eval_subject(seconds=2.0, fps=10, resolution=128, seed=seed, texture_size=256, supersample=1)
    build_avatar_dir(subject, path.parent / f".made_{path.stem}", video=path)
    return path


def _noise_video(path: Path) -> Path:
    from avatar3d.io.media import write_mp4

    rng = np.random.default_rng(0)
    return write_mp4(path, (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(10)), fps=10)


def _summary(out: Path, kind: str) -> dict:
    return json.loads((out / f"batch-{kind}.json").read_text())


def _by_job(summary: dict) -> dict:
    return {r["job"]: r for r in summary["jobs"]}


# ---------------------------------------------------------------------------------------------- manifests
def _files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not really a video")


def test_a_folder_gives_one_enrollment_per_video(tmp_path):
    _files(tmp_path / "in", "b.MOV", "a.mp4", "notes.txt", "._a.mp4")  # macOS's resource files are not videos
    jobs = enroll_jobs(tmp_path / "in", tmp_path / "avatars", "fast", ["--holdout", "0.1"])
    assert [j.name for j in jobs] == ["a", "b"]
    assert jobs[0].argv == ("enroll", str((tmp_path / "in" / "a.mp4").resolve()), "--out",
                            str((tmp_path / "avatars" / "a").resolve()), "--preset", "fast", "--holdout", "0.1")
    assert jobs[0].command.startswith("avatar3d enroll ")


def test_csv_and_yaml_manifests_give_the_same_jobs(tmp_path, monkeypatch):
    """Relative paths are the manifest's folder's, whatever the working folder; blank cells and comments pass."""
    _files(tmp_path / "m" / "clips", "one.mp4", "two.mp4")
    (tmp_path / "m" / "people.csv").write_text(  # as a spreadsheet saves it: a byte-order mark first
        "# video, name, preset, options\nvideo,name,preset,options\nclips/one.mp4,,,\n"
        "clips/two.mp4,anna,quality,\"--holdout 0.1 --framing head\"\n", encoding="utf-8-sig")
    (tmp_path / "m" / "people.yaml").write_text(
        "- video: clips/one.mp4\n- {video: clips/two.mp4, name: anna, preset: quality, "
        "options: [--holdout, '0.1', --framing, head]}\n")
    monkeypatch.chdir(tmp_path)
    from_csv = enroll_jobs(tmp_path / "m" / "people.csv", Path("out"), "fast", [])
    from_yaml = enroll_jobs(tmp_path / "m" / "people.yaml", Path("out"), "fast", [])
    assert [j.argv for j in from_csv] == [j.argv for j in from_yaml]
    assert [j.name for j in from_csv] == ["one", "anna"]
    assert from_csv[1].argv[-6:] == ("--preset", "quality", "--holdout", "0.1", "--framing", "head")
    assert Path(from_csv[0].argv[1]) == tmp_path / "m" / "clips" / "one.mp4"


def test_every_enrollment_problem_is_listed_at_once(tmp_path):
    _files(tmp_path, "a.mp4")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "thesis.tex").write_text("a user's own file")
    (tmp_path / "m.csv").write_text(
        "video,name,options\na.mp4,,\na.mp4,A,\nmissing.mp4,,\na.mp4,x,--train.iterations many\n"
        "a.mp4,y,--out elsewhere\na.mp4,../up,\na.mp4,taken,\n")
    with pytest.raises(InputError) as err:
        enroll_jobs(tmp_path / "m.csv", tmp_path, "fast", [])
    text = str(err.value)
    assert "6 problem(s) in m.csv; nothing was started" in text
    assert "m.csv row 3 and m.csv row 2 both write A" in text  # names compared without case
    assert "m.csv row 4: the video" in text and "missing.mp4 does not exist" in text
    assert "m.csv row 5: avatar3d enroll:" in text and "--train.iterations" in text
    assert "m.csv row 6: --out is set by the batch" in text
    assert "m.csv row 7: '../up' is not a plain" in text
    assert "m.csv row 8:" in text and "thesis.tex" in text  # someone else's folder is refused up front
    assert (tmp_path / "taken" / "thesis.tex").is_file()


def test_unknown_columns_and_empty_manifests_are_refused(tmp_path):
    (tmp_path / "typo.csv").write_text("vidoe\na.mp4\n")
    with pytest.raises(InputError, match="unknown column.*vidoe.*known: video, name, preset, options"):
        enroll_jobs(tmp_path / "typo.csv", tmp_path, "fast", [])
    (tmp_path / "empty.yaml").write_text("[]\n")
    with pytest.raises(InputError, match="lists no jobs"):
        enroll_jobs(tmp_path / "empty.yaml", tmp_path, "fast", [])
    with pytest.raises(InputError, match="batch render reads a jobs file"):
        render_jobs(tmp_path, tmp_path / "clips", [])


def test_render_problems_are_listed_before_ray_starts(synthetic_avatar_dir, tmp_path):
    ray = pytest.importorskip("ray")
    avatar = synthetic_avatar_dir
    (tmp_path / "jobs.csv").write_text(
        "avatar,audio,drive_video,tracking,out,options\n"
        f"{tmp_path / 'nobody'},,,true,,\n"
        f"{avatar},speech.wav,,,,\n"
        f"{avatar},,,true,,--gaze sideways\n"
        f"{avatar},,,true,a.mp4,--expression smile=1\n"
        f"{avatar},,,,,\n"
        f"{avatar},,,true,b.mp4,--frobnicate 3\n"
        f"{avatar},,,true,c.mp4,\n{avatar},,,true,C.mp4,\n{avatar},,v.mp4,yes,d.mp4,\n")
    (tmp_path / "speech.wav").write_bytes(b"RIFF")
    code = cli.run(["batch", "render", str(tmp_path / "jobs.csv"), "--out", str(tmp_path / "clips")])
    assert code == 1 and not ray.is_initialized() and not (tmp_path / "clips").exists()
    with pytest.raises(InputError) as err:
        render_jobs(tmp_path / "jobs.csv", tmp_path / "clips", [])
    text = str(err.value)
    for row, words in ((2, "is not an avatar folder"), (3, "has no audio-to-expression model"),
                       (4, "--gaze 'sideways'"), (5, "unknown expression 'smile'"), (6, "no driver"),
                       (7, "Unrecognized options: --frobnicate"), (9, "both write C.mp4"), (10, "two motions")):
        assert f"jobs.csv row {row}" in text and words in text, (row, words, text)


def test_speech_with_a_motion_is_a_dub(tmp_path):
    from avatar3d.batch.jobs import _driver
    from avatar3d.batch.manifest import Row

    row = Row({"avatar": "a", "audio": "speech/hello.wav", "drive_video": "v/anna.mp4"}, "jobs.csv row 2", tmp_path)
    words, name = _driver(row)
    assert words == ["--drive-video", str(tmp_path / "v" / "anna.mp4"), "--audio", str(tmp_path / "speech" / "hello.wav")]
    assert name == "anna_hello"
    parsed = cli.parse(["render", "av", "--out", "x.mp4", *words])[2]
    assert parsed.drive_video is not None and parsed.audio is not None


def test_a_clip_key_follows_what_the_clip_shows(synthetic_avatar_dir, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"first")
    (tmp_path / "b.wav").write_bytes(b"first")
    (tmp_path / "c.wav").write_bytes(b"other")

    def key(*words):
        return render_key(cli.parse(["render", str(synthetic_avatar_dir), *words])[2])

    base = key("--audio", str(tmp_path / "a.wav"), "--out", "x.mp4")
    assert key("--audio", str(tmp_path / "b.wav"), "--out", "y.mp4", "--backend", "torch") == base  # same content
    assert key("--audio", str(tmp_path / "c.wav"), "--out", "x.mp4") != base
    assert key("--audio", str(tmp_path / "a.wav"), "--out", "x.mp4", "--orbit", "30") != base
    assert key("--audio", str(tmp_path / "a.wav"), "--out", "x.mp4", "--alpha-out", "x.mov") == base


def test_a_clip_key_follows_the_avatar_it_is_made_from(synthetic_avatar_dir, tmp_path):
    """A retrained part (here the Gaussians' file rewritten) makes its clips stale."""
    import shutil

    avatar = tmp_path / "avatar"
    shutil.copytree(synthetic_avatar_dir, avatar)
    key = lambda: render_key(cli.parse(["render", str(avatar), "--tracking"])[2])  # noqa: E731
    before = key()
    weights = avatar / "gaussians.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert key() != before


def test_without_ray_the_batch_says_how_to_install_it(synthetic_avatar_dir, tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "jobs.csv").write_text(f"avatar,tracking\n{synthetic_avatar_dir},true\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    assert cli.run(["batch", "render", str(tmp_path / "jobs.csv"), "--out", str(tmp_path / "clips"),
                    "--no-progress"]) == 1
    assert "pip install 'avatar3d[batch]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    """Two subject videos and a truncated one, enrolled as a batch (exit code and summary kept)."""
    pytest.importorskip("ray")
    pytest.importorskip("mediapipe")
    print(f"[seed] synthetic subjects: seeds {SUBJECT_SEEDS}")
    root = tmp_path_factory.mktemp("batch")
    videos = root / "videos"
    videos.mkdir()
    for name, seed in zip(("alice", "bob"), SUBJECT_SEEDS):
        _subject_video(videos / f"{name}.mp4", seed)
    data = (videos / "alice.mp4").read_bytes()
    (videos / "broken.mp4").write_bytes(data[: len(data) // 2])
    code = cli.run(["batch", "enroll", str(videos), "--out", str(root / "avatars"), "--preset", "fast",
                    f"--options={TINY}", *ON_TWO_CORES])
    return root, code


def test_a_failing_enrollment_does_not_stop_the_others(batch_dir, capsys):
    root, code = batch_dir
    jobs = _by_job(_summary(root / "avatars", "enroll"))
    assert code == 1
    assert {k: v["status"] for k, v in jobs.items()} == {"alice": "done", "bob": "done", "broken": "failed"}
    for name in ("alice", "bob"):
        assert (root / "avatars" / name / "gaussians.safetensors").is_file() and jobs[name]["psnr"] > 12
    # the same message the single command gives for that video
    assert cli.run(["enroll", str(root / "videos" / "broken.mp4"), "--out", str(root / "single"), "--preset",
                    "fast", *shlex.split(TINY)]) == 1
    assert f"avatar3d enroll: error: {jobs['broken']['message']}" in capsys.readouterr().err
    log = Path(jobs["broken"]["log"]).read_text()
    assert "attempt" in log and jobs["broken"]["message"] in log


def test_a_rerun_skips_finished_avatars_and_a_changed_setting_does_not(batch_dir, capsys):
    root, _ = batch_dir
    (root / "videos" / "broken.mp4").rename(root / "broken.mp4.bad")
    weights = root / "avatars" / "alice" / "gaussians.safetensors"
    stamp = weights.stat().st_mtime_ns
    args = ["batch", "enroll", str(root / "videos"), "--out", str(root / "avatars"), "--preset", "fast",
            *ON_TWO_CORES]
    assert cli.run([*args, f"--options={TINY}"]) == 0
    summary = _summary(root / "avatars", "enroll")
    assert summary["skipped"] == 2 and summary["done"] == 0 and summary["ray_start_s"] is None
    assert weights.stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert cli.run([*args, f"--options={TINY} --train.iterations 41", "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert "2 to run, 0 already done" in planned and "--train.iterations 41" in planned


def test_an_interrupted_enrollment_is_continued_by_the_batch(batch_dir, monkeypatch):
    """Ctrl-C during training leaves the finished stages; the batch's job continues them instead of redoing."""
    from avatar3d.pipeline import enroll as enroll_module

    root, _ = batch_dir
    videos = root / "again"
    videos.mkdir()
    os.link(root / "videos" / "bob.mp4", videos / "carol.mp4")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = root / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(enroll_module, "train", interrupted)
        assert cli.run(["enroll", str(videos / "carol.mp4"), "--out", str(out / "carol"), "--preset", "fast",
                        *shlex.split(TINY)]) == 130
    assert enroll_module.staging_dir(out / "carol").is_dir()
    assert cli.run(["batch", "enroll", str(videos), "--out", str(out), "--preset", "fast", f"--options={TINY}",
                    *ON_TWO_CORES]) == 0
    job = _by_job(_summary(out, "enroll"))["carol"]
    assert job["status"] == "done" and (out / "carol" / "avatar.json").is_file()
    assert "continuing the interrupted enrollment of carol.mp4 (stages done: track" in Path(job["log"]).read_text()


def test_clips_render_skip_and_redo_when_their_file_changes(batch_dir):
    root, _ = batch_dir
    _noise_video(root / "noise.mp4")
    (root / "jobs.yaml").write_text(
        f"- {{avatar: avatars/alice, tracking: true, options: '{CLIP}'}}\n"
        f"- {{avatar: avatars/bob, drive_video: videos/alice.mp4, out: bob_as_alice.mp4, options: '{CLIP}'}}\n"
        f"- {{avatar: avatars/alice, drive_video: noise.mp4, options: '{CLIP}'}}\n")
    args = ["batch", "render", str(root / "jobs.yaml"), "--out", str(root / "clips"), *ON_TWO_CORES]
    assert cli.run(args) == 1
    jobs = _by_job(_summary(root / "clips", "render"))
    assert [jobs[n]["status"] for n in ("alice_tracking.mp4", "bob_as_alice.mp4", "alice_noise.mp4")] == \
        ["done", "done", "failed"]
    assert jobs["alice_tracking.mp4"]["frames"] == 25 and jobs["alice_tracking.mp4"]["fps"] > 0
    assert "no face was found" in jobs["alice_noise.mp4"]["message"]  # the single command's message
    clip = root / "clips" / "bob_as_alice.mp4"
    assert clip_is_current(clip, json.loads((root / "clips" / ".batch" / f"{clip.name}.json").read_text())["key"])
    clip.write_bytes(clip.read_bytes() + b"\0")  # someone changed the file: it is not the recorded clip any more
    assert cli.run(args) == 1
    again = _by_job(_summary(root / "clips", "render"))
    assert [again[n]["status"] for n in ("alice_tracking.mp4", "bob_as_alice.mp4", "alice_noise.mp4")] == \
        ["skipped", "done", "failed"]
