"""`avatar3d view`: the interactive viewer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from avatar3d.pending import not_yet


@dataclass
class ViewConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to view."""
    port: int = 8080
    """Port of the web server."""
    host: str = "127.0.0.1"
    """Interface to bind; anything but 127.0.0.1 exposes the viewer to the network (a warning is printed)."""


def main(cfg: ViewConfig) -> int:
    raise not_yet("`avatar3d view`", "The interactive 3D viewer")
