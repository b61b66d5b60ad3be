"""An interrupted enrollment is continued only with the inputs it was started with; Ctrl-C says what to type."""
from __future__ import annotations

from pathlib import Path

import pytest

from avatar3d import cli
from avatar3d.errors import InputError
from avatar3d.head.registry import load_rig
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, read_manifest, write_manifest
from avatar3d.pipeline import enroll as enroll_module
from avatar3d.pipeline.resume import run_inputs


def _interrupted(tmp_path: Path, video: Path, preset: str = "fast") -> tuple[Path, Path]:
    """An output `me` whose staging folder holds a run of `video` killed after tracking and segmentation."""
    rig = load_rig("synthetic")
    out = tmp_path / "me"
    stage = enroll_module.staging_dir(out)
    stage.mkdir()
    manifest = AvatarManifest(rig_name=rig.name, rig_checksum=rig.checksum(), source_video=video.name,
                              settings=run_inputs(video, preset, 0.2, rig.checksum()),
                              stages={"track": "done", "segment": "done"})
    write_manifest(stage, manifest)
    (stage / "checkpoint-marker").write_text("work worth keeping")
    return out, stage


def _videos(tmp_path: Path) -> tuple[Path, Path]:
    first, other = tmp_path / "first.mp4", tmp_path / "other.mp4"
    first.write_bytes(b"the first video's bytes")
    other.write_bytes(b"another video's bytes")
    return first, other


@pytest.mark.parametrize("resume", [True, False])
def test_another_video_is_refused_and_the_staging_kept(tmp_path, resume):
    first, other = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first)
    with pytest.raises(InputError) as err:
        enroll_module.enroll(other, out, preset="fast", head_model="synthetic", resume=resume)
    text = str(err.value)
    assert "its video was first.mp4" in text and "stages done: track, segment" in text
    assert f"avatar3d enroll first.mp4 --out {out} --resume --preset fast" in text
    assert f"avatar3d enroll {other} --out {out} --restart" in text
    assert (stage / "checkpoint-marker").read_text() == "work worth keeping"


def test_other_settings_are_refused_too(tmp_path):
    first, _ = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first, preset="fast")
    with pytest.raises(InputError, match="its preset was fast, not default"):
        enroll_module.enroll(first, out, preset="default", head_model="synthetic", resume=True)
    assert stage.is_dir()


def test_the_same_inputs_continue_and_restart_discards(tmp_path, capsys):
    first, _ = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first)
    inputs = run_inputs(first, "fast", 0.2, load_rig("synthetic").checksum())
    assert enroll_module._decide_resume(stage, AvatarPaths(stage), first, out, inputs, False, False)
    assert "continuing the interrupted enrollment of first.mp4" in capsys.readouterr().err
    assert not enroll_module._decide_resume(stage, AvatarPaths(stage), first, out, inputs, True, True)
    assert "--restart: discarding" in capsys.readouterr().err and not stage.exists()


def test_a_missing_video_never_discards_the_staging(tmp_path):
    first, _ = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first)
    with pytest.raises(InputError):
        enroll_module.enroll(tmp_path / "typo.mp4", out, preset="fast", head_model="synthetic")
    assert (stage / "checkpoint-marker").exists()


def test_ctrl_c_names_the_command_that_resumes(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(enroll_module, "run_enrollment", interrupted)
    video = tmp_path / "v.mp4"
    assert cli.run(["enroll", str(video), "--out", str(tmp_path / "me"), "--preset", "fast"]) == 130
    err = capsys.readouterr().err
    assert f"Continue with: avatar3d enroll {video} --out {tmp_path / 'me'} --preset fast --resume" in err


def test_a_failed_run_says_where_its_finished_stages_are(tmp_path, monkeypatch, capsys):
    out = tmp_path / "me"

    def fails_after_tracking(cfg):
        enroll_module.staging_dir(cfg.out).mkdir()
        raise InputError("training diverged")

    monkeypatch.setattr(enroll_module, "run_enrollment", fails_after_tracking)
    assert cli.run(["enroll", str(tmp_path / "v.mp4"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "kept in .me.staging beside" in err and "--restart discards" in err


def test_other_overrides_are_refused_with_the_command_that_finishes(tmp_path):
    """The same preset with another `--train.iterations`: refused, and the way to finish names its saved config."""
    from avatar3d.pipeline.config import CONFIG_FILE, dump_config, from_preset, stage_settings

    first, _ = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first)
    started = from_preset(first, "fast", out=out)
    manifest = read_manifest(stage)
    manifest.settings["stages"] = stage_settings(started)
    write_manifest(stage, manifest)
    (stage / CONFIG_FILE).write_text(dump_config(started))
    changed = from_preset(first, "fast", out=out, head_model="synthetic")
    changed.train.iterations = 400
    with pytest.raises(InputError) as err:
        enroll_module.run_enrollment(changed)
    text = str(err.value)
    assert "its settings differed: --train.iterations 2000 (now 400)" in text
    assert f"--resume --config {stage / CONFIG_FILE}" in text
    assert (stage / "checkpoint-marker").read_text() == "work worth keeping"


def test_a_run_from_before_portraits_is_a_head_and_can_be_finished(tmp_path):
    """A staging folder recorded before the framing and the newer settings existed: it made a head, so resuming it
    as a portrait is refused, and its saved config (read as a head) matches it again."""
    from avatar3d.pipeline.config import CONFIG_FILE, dump_config, from_preset, load_config, stage_settings
    from avatar3d.pipeline.resume import differences

    first, _ = _videos(tmp_path)
    out, stage = _interrupted(tmp_path, first)
    old = from_preset(first, "fast", out=out)
    recorded = stage_settings(old)
    del recorded["framing"], recorded["train"]["lambda_alpha"], recorded["background"]
    manifest = read_manifest(stage)
    manifest.settings["stages"] = recorded
    write_manifest(stage, manifest)
    saved = dump_config(old).replace("framing: portrait\n", "")
    assert "framing" not in saved
    (stage / CONFIG_FILE).write_text(saved)
    rig = load_rig("synthetic")
    as_portrait = run_inputs(first, "fast", 0.2, rig.checksum(), stage_settings(old))
    assert differences(read_manifest(stage), as_portrait) == [
        "its settings differed: --framing head (now portrait)"]
    reloaded = load_config(stage / CONFIG_FILE)
    assert reloaded.framing == "head"
    again = run_inputs(first, "fast", 0.2, rig.checksum(), stage_settings(reloaded))
    assert differences(read_manifest(stage), again) == []
