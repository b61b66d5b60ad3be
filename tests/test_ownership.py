"""Nothing lost: an output folder that avatar3d did not make is never replaced without --force."""
from __future__ import annotations

from pathlib import Path

import pytest

from avatar3d import cli
from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_dir
from avatar3d.io.ownership import MARKER, is_ours


def _users_folder(root: Path) -> Path:
    folder = root / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("thesis")
    (folder / "sub" / "notes.txt").write_text("notes")
    return folder


def _intact(folder: Path) -> bool:
    return ((folder / "thesis.txt").read_text() == "thesis" and (folder / "sub" / "notes.txt").read_text() == "notes"
            and not list(folder.parent.glob(".d*")))


def test_a_users_folder_is_refused_and_kept(tmp_path):
    folder = _users_folder(tmp_path)
    with pytest.raises(InputError, match=r"did not make \(sub/, thesis.txt\).*--force.*2 files in 1 sub-folder\b"):
        with atomic_dir(folder) as tmp:
            (tmp / "x").write_text("new")
    assert _intact(folder)


def test_force_replaces_it_and_says_so(tmp_path, capsys):
    folder = _users_folder(tmp_path)
    with atomic_dir(folder, kind="tracking", force=True) as tmp:
        (tmp / "x").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "x"]
    assert "will be deleted" in capsys.readouterr().err


def test_our_own_and_empty_folders_are_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty, kind="tracking") as tmp:
        (tmp / "a").write_text("1")
    assert is_ours(empty)
    with atomic_dir(empty, kind="tracking") as tmp:  # ours now: replaced without asking
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER, "b"]
    legacy = tmp_path / "legacy"  # an avatar from before the marker: recognised by avatar.json
    legacy.mkdir()
    (legacy / "avatar.json").write_text("{}")
    with atomic_dir(legacy) as tmp:
        (tmp / "c").write_text("3")
    assert (legacy / "c").exists()


def test_a_file_is_never_replaced_by_a_folder(tmp_path):
    target = tmp_path / "f"
    target.write_text("mine")
    with pytest.raises(InputError, match="is not a folder"):
        with atomic_dir(target, force=True):
            pass
    assert target.read_text() == "mine"


@pytest.mark.parametrize("argv", [["track", "{video}", "--out", "{out}"],
                                  ["enroll", "{video}", "--out", "{out}"]], ids=["track", "enroll"])
def test_commands_refuse_before_any_work(tmp_path, capsys, argv):
    # the video does not exist: the refusal must come first, about the folder
    folder = _users_folder(tmp_path)
    words = [w.format(video=tmp_path / "no-such-video.mp4", out=folder) for w in argv]
    assert cli.run(words) == 1
    err = capsys.readouterr().err
    assert "did not make" in err and "--force" in err and "Traceback" not in err
    assert _intact(folder)


def test_enroll_refuses_an_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "me"
    target.write_text("my file")
    assert cli.run(["enroll", str(tmp_path / "no-such-video.mp4"), "--out", str(target)]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "my file" and not (tmp_path / ".me.old").exists()
