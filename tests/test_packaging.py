"""Packaging guards: every package folder is installed, presets ship as package data."""
from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "avatar3d").rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"add these packages to pyproject.toml [tool.setuptools] packages: {missing}"
    assert {"avatar3d.configs", "avatar3d_viewer"} <= listed


def test_presets_and_viewer_importable():
    import avatar3d.configs
    import avatar3d_viewer  # noqa: F401

    names = {p.name for p in Path(avatar3d.configs.__file__).parent.glob("*.yaml")}
    assert {"fast.yaml", "default.yaml", "quality.yaml"} <= names
