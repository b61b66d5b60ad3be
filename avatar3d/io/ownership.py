"""Which folders are ours to replace: only what avatar3d made, never a user's own files.

Every folder avatar3d writes whole (an avatar, a tracking output, a rig bundle, a PNG alpha folder) carries a
marker file, `.avatar3d-output`, naming what it is. Replacing an existing folder is allowed when it is empty,
carries the marker, or is recognisably ours from before the marker existed (its signature files). Anything
else is refused with a message; `force` replaces it anyway and says what was removed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from avatar3d.errors import InputError

MARKER = ".avatar3d-output"
# Files that identify folders written before the marker existed: any one of them is enough.
LEGACY_SIGNATURES = ("avatar.json", "tracking.npz", "bundle.json")
LISTED = 5  # entries named in a refusal


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` (being written) as an avatar3d output of `kind` (e.g. "avatar", "tracking")."""
    from avatar3d import __version__

    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "version": __version__}) + "\n")


def is_ours(folder: Path) -> bool:
    """True when `folder` was made by avatar3d (its marker, or a signature file of an older version)."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in (MARKER, *LEGACY_SIGNATURES))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _count_entries(folder: Path) -> tuple[int, int]:
    files = dirs = 0
    for _, dirnames, filenames in os.walk(folder):
        files += len(filenames)
        dirs += len(dirnames)
    return files, dirs


def check_replaceable(final: Path, force: bool = False, force_hint: str = "--force") -> None:
    """Refuse to replace `final` when it is a folder of someone else's files (unless `force`, which reports
    what goes). A file where a folder should be is always refused: nothing writes folders over files."""
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir() or final.is_symlink():
        raise InputError(f"{final} exists and is not a folder; choose another output folder (nothing was changed)")
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in final.iterdir())
    if not entries or is_ours(final):
        return
    files, dirs = _count_entries(final)
    shown = ", ".join(entries[:LISTED]) + (f" and {len(entries) - LISTED} more" if len(entries) > LISTED else "")
    if not force:
        raise InputError(f"{final} already holds files avatar3d did not make ({shown}); nothing was changed. "
                         f"Choose a new output folder (it is created), or pass {force_hint} to replace this one "
                         f"and delete its {_plural(files, 'file')} in {_plural(dirs, 'sub-folder')}")
    print(f"{force_hint}: {final} was not made by avatar3d; its {_plural(files, 'file')} in "
          f"{_plural(dirs, 'sub-folder')} ({shown}) will be deleted once the new output is complete",
          file=sys.stderr, flush=True)
