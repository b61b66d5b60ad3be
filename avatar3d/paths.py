"""Where things live: the user's data folder (installed head models, caches) and the optional
shared development data beside the repository."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_home() -> Path:
    """Root of avatar3d's per-user data (installed rigs, caches).

    `AVATAR3D_HOME` overrides it; otherwise `$XDG_DATA_HOME/avatar3d` or `~/.local/share/avatar3d`.
    """
    env = os.environ.get("AVATAR3D_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "avatar3d"


def models_dir() -> Path:
    """Folder of installed (converted, cached) head models."""
    return data_home() / "models"


def shared_dir() -> Path | None:
    """The development data folder (`../shared` beside the repository, or `AVATAR3D_SHARED`), if present."""
    env = os.environ.get("AVATAR3D_SHARED")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None
