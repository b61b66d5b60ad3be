"""The CLI: every verb is listed, every option is documented, pending verbs fail plainly."""
from __future__ import annotations

import dataclasses
import importlib
import os

import pytest

from avatar3d import cli

REQUIRED_VERBS = ["enroll", "track", "train", "render", "view", "export", "eval", "bench", "models", "demo"]


def _all_verbs():
    for name, verb in cli.VERBS.items():
        if isinstance(verb, cli.Verb):
            yield [name], verb
        else:
            for sub, sv in verb.items():
                yield [name, sub], sv


def test_top_level_help_lists_every_verb(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in REQUIRED_VERBS:
        assert f"  {verb}" in out
    for sub in ["train gaussians", "train audio2expr", "eval lipsync", "bench raster", "models install"]:
        assert sub in out


def test_unknown_verb_is_an_error(capsys):
    assert cli.run(["frobnicate"]) == 2
    assert "unknown verb" in capsys.readouterr().err


@pytest.mark.parametrize("words,verb", list(_all_verbs()), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_option_is_documented(words, verb, capsys):
    module = importlib.import_module(verb.module)
    config_cls = getattr(module, verb.config)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(words + ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(config_cls):
        flag = f.name.replace("_", "-")
        assert flag in text, f"option {f.name} missing from `avatar3d {' '.join(words)} --help`"
    # tyro turns the field docstrings into help: every field must have one
    import inspect

    source = "".join(inspect.getsource(c) for c in config_cls.__mro__ if dataclasses.is_dataclass(c))  # inherited too
    for f in dataclasses.fields(config_cls):
        after = source.split(f"    {f.name}:", 1)[1].split("\n", 2)[1].strip()
        assert after.startswith('"""'), f"{config_cls.__name__}.{f.name} has no docstring"


def test_an_empty_video_is_refused_with_a_message(capsys, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    code = cli.run(["track", str(video), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "Traceback" not in err


def test_bare_command_prints_the_help_and_exits_2(capsys):
    assert cli.run([]) == 2
    err = capsys.readouterr().err
    assert "usage: avatar3d <verb>" in err and "exit code 2" in err


def test_help_names_version_and_verbose(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-V, --version" in out and "--verbose" in out
    assert cli.run(["-V"]) == 0
    assert capsys.readouterr().out.strip() == cli.__version__


def test_verbose_is_taken_anywhere_and_sets_the_flag(capsys, monkeypatch):
    from avatar3d import runtime

    monkeypatch.delenv(runtime.VERBOSE_ENV, raising=False)
    assert cli.run(["frobnicate", "--verbose"]) == 2
    assert runtime.verbose()


def test_an_unwritable_output_folder_is_a_message_not_a_traceback(capsys, tmp_path, monkeypatch,
                                                                    synthetic_avatar_dir):
    # `avatar3d export A --rig ro/bundle` under a read-only parent. Tests may run as root, for whom a chmod does
    # not bite, so the temp-folder creation fails the way the OS fails it there.
    import errno
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(str(dir), ".bundle.tmp-1234abcd"))

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    code = cli.run(["export", str(synthetic_avatar_dir), "--rig", str(tmp_path / "ro" / "bundle")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and ".tmp-" not in err
    assert f"cannot write in {tmp_path / 'ro'}: permission denied" in err


def test_warnings_print_as_one_plain_line(monkeypatch, capsys):
    import warnings

    from avatar3d.commands import train as command

    def warns(cfg):
        warnings.warn("checkpoint step-2000 is truncated — resuming from the older step-1000 instead", RuntimeWarning)
        return 0

    from avatar3d import runtime

    monkeypatch.delenv(runtime.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(command, "main_gaussians", warns)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.run(["train", "gaussians", "somewhere"]) == 0
    err = capsys.readouterr().err
    assert "avatar3d train gaussians: warning: checkpoint step-2000 is truncated" in err
    assert "RuntimeWarning" not in err and "warnings.warn" not in err
