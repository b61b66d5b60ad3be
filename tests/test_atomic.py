"""Atomic writes: the target is either the old or the new content, never partial; no temp files left."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from avatar3d.errors import InputError
from avatar3d.io.atomic import (AtomicFile, atomic_dir, atomic_path, atomic_write_bytes, atomic_write_json,
                                atomic_write_text, clean_stale_temps, recover_dir)


def names(folder):
    """The folder's entries, without the marker every atomic_dir output carries (tests/test_ownership.py)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".avatar3d-output")


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def expected_mode() -> int:
    return 0o666 & ~current_umask()


def test_write_bytes_text_json(tmp_path, seed):
    rng = np.random.default_rng(seed)
    blob = rng.bytes(1000)
    assert atomic_write_bytes(tmp_path / "a.bin", blob).read_bytes() == blob
    assert atomic_write_text(tmp_path / "a.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    values = rng.normal(size=3)
    obj = {"metrics": {"psnr": np.float32(31.5), "per_frame": values}, "frames": np.int64(7),
           "path": tmp_path / "x"}
    loaded = json.loads(atomic_write_json(tmp_path / "a.json", obj).read_text())
    assert loaded["metrics"]["psnr"] == 31.5 and loaded["frames"] == 7
    assert np.allclose(loaded["metrics"]["per_frame"], values)
    assert loaded["path"] == str(tmp_path / "x")
    assert names(tmp_path) == ["a.bin", "a.json", "a.txt"]
    # a normal file mode, not mkstemp's private 0600
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected_mode()


def test_json_refuses_unknown_objects_without_touching_the_file(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(tmp_path / "m.json", {"bad": object()})
    assert json.loads((tmp_path / "m.json").read_text()) == {"ok": 1}
    assert names(tmp_path) == ["m.json"]


def test_atomic_path_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = atomic_write_text(tmp_path / "out.txt", "old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != target
            tmp.write_text("half-written")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert names(tmp_path) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640  # an existing file keeps its permissions


def test_atomic_path_errors(tmp_path):
    with pytest.raises(InputError, match="nothing was written"):
        with atomic_path(tmp_path / "never.txt"):
            pass
    with pytest.raises(InputError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "such" / "dir.txt", "x")
    assert names(tmp_path) == []


def test_atomic_file_commit_and_discard(tmp_path):
    target = AtomicFile(tmp_path / "v.mp4")
    target.tmp.write_bytes(b"data")
    assert not (tmp_path / "v.mp4").exists()
    assert target.commit().read_bytes() == b"data"
    other = AtomicFile(tmp_path / "v.mp4")
    other.tmp.write_bytes(b"partial")
    other.discard()
    assert (tmp_path / "v.mp4").read_bytes() == b"data"
    assert names(tmp_path) == ["v.mp4"]


def test_atomic_dir_creates_and_replaces(tmp_path):
    final = tmp_path / "avatar"
    with atomic_dir(final) as d:
        (d / "avatar.json").write_text("{}")
        (d / "data").mkdir()
        assert not final.exists()
    assert names(final) == ["avatar.json", "data"]
    assert final.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # a normal folder mode, not mkdtemp's 0700
    with atomic_dir(final) as d:
        (d / "gaussians.safetensors").write_bytes(b"x")
    assert names(final) == ["gaussians.safetensors"]  # replaced whole, old content gone
    assert names(tmp_path) == ["avatar"]


def test_atomic_dir_failure_keeps_existing_directory(tmp_path):
    final = tmp_path / "avatar"
    with atomic_dir(final) as d:
        (d / "avatar.json").write_text("good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as d:
            (d / "avatar.json").write_text("broken")
            raise KeyboardInterrupt
    assert (final / "avatar.json").read_text() == "good"
    assert names(tmp_path) == ["avatar"]


def test_atomic_dir_copy_existing_updates_in_part(tmp_path):
    final = tmp_path / "avatar"
    with atomic_dir(final) as d:
        (d / "avatar.json").write_text("manifest")
        (d / "data").mkdir()
        (d / "data" / "0001.png").write_bytes(b"png")
    with atomic_dir(final, copy_existing=True) as d:
        (d / "eval.json").write_text("{}")
        (d / "avatar.json").write_text("manifest v2")
        assert (final / "avatar.json").read_text() == "manifest"
    assert (final / "avatar.json").read_text() == "manifest v2"
    assert (final / "data" / "0001.png").read_bytes() == b"png"
    assert (final / "eval.json").exists()


def test_atomic_dir_refuses_a_file(tmp_path):
    (tmp_path / "avatar").write_text("not a folder")
    with pytest.raises(InputError, match="not a folder"):
        with atomic_dir(tmp_path / "avatar"):
            pass


def test_recovery_after_a_kill_between_the_two_renames(tmp_path):
    # what a process killed between the renames leaves: the old copy aside, a finished temp, no target
    old = tmp_path / ".avatar.old-1234abcd"
    old.mkdir()
    (old / "avatar.json").write_text("good")
    (tmp_path / ".avatar.tmp-zzzz").mkdir()
    (tmp_path / ".clip.tmp-5678.mp4").write_bytes(b"partial")
    assert clean_stale_temps(tmp_path) and names(tmp_path) == [".avatar.old-1234abcd"]  # old copy kept
    assert recover_dir(tmp_path / "avatar") is True
    assert (tmp_path / "avatar" / "avatar.json").read_text() == "good"
    assert recover_dir(tmp_path / "avatar") is False
    # a superseded old copy (the target exists) is removed
    (tmp_path / ".avatar.old-99999999").mkdir()
    clean_stale_temps(tmp_path)
    assert names(tmp_path) == ["avatar"]


def test_reserved_names_never_collide_across_threads_or_existing_files(tmp_path):
    import threading

    from avatar3d.io.atomic import reserve_unique_path

    (tmp_path / "clip.mp4").write_bytes(b"a user's file")
    names, start = [], threading.Barrier(8)

    def claim() -> None:
        start.wait()
        with reserve_unique_path(tmp_path, "clip", ".mp4") as path:
            names.append(path.name)
            path.write_bytes(b"ours")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(names) == 8 and len(set(names)) == 8 and "clip.mp4" not in names
    assert (tmp_path / "clip.mp4").read_bytes() == b"a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", *names])  # claims released
