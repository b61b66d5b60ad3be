"""Atomic writes: a temp file (or folder) in the same folder as the target, renamed over it on success.

A crash or an exception part way through never leaves a half-written file where the good one was:
readers see either the old content or the new one. Temp names start with '.' and contain '.tmp-' so a
leftover from a killed process is easy to spot (and `clean_stale_temps` removes them).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from avatar3d.errors import InputError
from avatar3d.io.ownership import check_replaceable, write_marker

TMP_TAG = ".tmp-"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """Permissions a normally created file would get (mkstemp's 0600 would surprise users)."""
    return 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; best effort (not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parent_of(final: Path) -> Path:
    parent = final.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {final}: its folder {parent} does not exist; create it first "
                         f"(e.g. mkdir -p {parent})")
    return parent


class AtomicFile:
    """A temp path beside `final_path`, later committed (renamed over it) or discarded.

    For writers whose life spans several calls (a streaming video writer); `atomic_path` wraps it for
    the usual with-block. The temp name keeps the target's suffix (e.g. `.mp4`) so tools that infer
    the format from the name still work.
    """

    def __init__(self, final_path: str | os.PathLike):
        self.final = Path(final_path)
        parent = _parent_of(self.final)
        self.tmp = parent / f".{self.final.stem}{TMP_TAG}{uuid.uuid4().hex[:8]}{self.final.suffix}"

    def commit(self) -> Path:
        """Replace the target with the temp file (which the caller must have written); returns the target."""
        if not self.tmp.exists():
            raise InputError(f"nothing was written to the temp file for {self.final}; the writer must "
                             f"create {self.tmp.name} before committing")
        try:
            mode = self.final.stat().st_mode & 0o777 if self.final.exists() else _default_mode()
            os.chmod(self.tmp, mode)
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.final)
            _fsync_dir(self.final.parent)
        finally:
            self.discard()
        return self.final

    def discard(self) -> None:
        """Remove the temp file if it is still there; the target is left as it was."""
        if self.tmp.exists():
            self.tmp.unlink()


@contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it replaces `final_path`, on error it is removed.

    The caller creates the file at the yielded path (it keeps the target's suffix).
    """
    target = AtomicFile(final_path)
    try:
        yield target.tmp
        target.commit()
    finally:
        target.discard()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    final = Path(path)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
    return final


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays, torch tensors and paths appear in manifests and metrics: store them plainly."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "detach"):  # torch tensor, without importing torch here
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist"):  # numpy array or numpy scalar
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable; convert it to a "
                    f"number, string, list or dict first")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write `obj` as JSON (numpy/torch values converted, a trailing newline) atomically; returns the path."""
    text = json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


@contextmanager
def atomic_dir(final_dir: str | os.PathLike, copy_existing: bool = False, kind: str = "output",
               force: bool = False, force_hint: str = "--force", inside_ours: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `final_dir`; on success it takes `final_dir`'s place, on error it is removed.

    Only a folder avatar3d made (or an empty one) is replaced: another existing folder is refused before
    anything is written, unless `force` (see avatar3d/io/ownership.py; `force_hint` is the option named in
    the refusal); `inside_ours` skips that check for a folder inside one of our own outputs (an avatar's masks).
    The new folder (unless `inside_ours`) is marked as an avatar3d output of `kind`.

    A failed run therefore never damages an existing directory (e.g. a good avatar). With
    `copy_existing=True` the temp folder starts as a copy of the current `final_dir`, for updates that
    change only part of it. The swap is two renames (old -> '.NAME.old-*', new -> NAME); if the second
    one fails the old folder is put back.
    """
    final = Path(final_dir)
    parent = _parent_of(final)
    recover_dir(final)
    if not inside_ours:
        check_replaceable(final, force, force_hint)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_TAG}", dir=parent))
    try:
        if copy_existing and final.is_dir():
            shutil.rmtree(tmp)
            shutil.copytree(final, tmp, symlinks=True)
        else:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would surprise users
        yield tmp
        if not inside_ours:  # the enclosing output carries the marker
            write_marker(tmp, kind)
        old = None
        if final.exists():
            old = parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)
            raise
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


RESERVED_TAG = ".reserved"


@contextmanager
def reserve_unique_path(folder: str | os.PathLike, stem: str, suffix: str) -> Iterator[Path]:
    """Yield `folder/stem<suffix>` (or `stem-2<suffix>`, `-3`, ...): a name no file has and no other writer holds.

    Two writers (threads or processes) asking in the same second get different names: each name is claimed by
    creating `.NAME.reserved` with O_EXCL, which the file system grants to one of them only; the claim is
    released when the block ends (by then the caller has written the file, or given up).
    """
    folder = Path(folder)
    for n in range(1, 100_000):
        name = f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}"
        path, claim = folder / name, folder / f".{name}{RESERVED_TAG}"
        if path.exists():
            continue
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        if path.exists():  # written by a writer that did not reserve its name
            claim.unlink(missing_ok=True)
            continue
        try:
            yield path
        finally:
            claim.unlink(missing_ok=True)
        return
    raise InputError(f"no free name for {stem}{suffix} in {folder}; move old files out of it")


def recover_dir(final_dir: str | os.PathLike) -> bool:
    """Put back a folder that a process killed between atomic_dir's two renames left as '.NAME.old-*'.

    Returns True when something was restored. Called by atomic_dir itself before each swap.
    """
    final = Path(final_dir)
    if final.exists():
        return False
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not olds:
        return False
    os.replace(olds[-1], final)
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files/folders that a killed process left in `folder`; returns what was removed.

    Superseded '.NAME.old-*' folders are removed only when NAME exists (otherwise they are the
    last good copy: see recover_dir).
    """
    removed = []
    folder = Path(folder)
    for entry in folder.iterdir():
        stale_old = ".old-" in entry.name and (folder / entry.name[1:].split(".old-")[0]).exists()
        if entry.name.startswith(".") and (TMP_TAG in entry.name or stale_old):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextmanager
def exclusive(lock_file: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing) for the block: one process at a time does what
    the block does (e.g. tracking a video others will reuse). Where the system has no `fcntl`, no lock is taken."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    with open(lock_file, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
