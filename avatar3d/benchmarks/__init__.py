"""`avatar3d bench ...`: the rasterizer backends, two jobs sharing the cores, an avatar's audio drive, a portrait's cost,
a clip's stages."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def report(table: str, result: dict, json_path: Optional[Path]) -> None:
    """What every benchmark ends with: its table printed, its result written as JSON when asked (atomically)."""
    from avatar3d.io.atomic import atomic_write_json

    print(table)
    if json_path is not None:
        atomic_write_json(json_path, result)
        print(f"wrote {json_path}")
