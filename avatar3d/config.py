"""YAML presets (configs/<name>.yaml, shipped as package data) read back through the config dataclasses."""
from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any, Literal, TypeVar

import yaml

from avatar3d.errors import InputError

T = TypeVar("T")
Preset = Literal["fast", "default", "quality"]  # the shipped presets (configs/<name>.yaml); a test keeps them in step


def preset_names() -> list[str]:
    """Names of the shipped presets (fast, default, quality)."""
    files = resources.files("avatar3d.configs")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The preset as a plain dict of sections (e.g. {"train": {...}})."""
    names = preset_names()
    if name not in names:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(names)}")
    text = resources.files("avatar3d.configs").joinpath(f"{name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise InputError(f"preset {name!r} is not a mapping of sections; fix configs/{name}.yaml")
    return data


def from_dict(cls: type[T], values: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from `values`, refusing unknown keys (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)} in {where or cls.__name__}; "
                         f"known: {', '.join(sorted(known))}")
    return cls(**values)


def preset_section(name: str, section: str, cls: type[T]) -> T:
    """One section of a preset as its dataclass, e.g. `preset_section("fast", "train", TrainConfig)`."""
    return from_dict(cls, load_preset(name).get(section, {}), where=f"preset {name!r} section {section!r}")
