"""YAML presets (configs/<name>.yaml, shipped as package data) read back through the config dataclasses."""
from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any, Literal, Optional, TypeVar

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
    return cls(**{f.name: _typed(f, values[f.name], where) for f in dataclasses.fields(cls) if f.name in values})


def _typed(f: dataclasses.Field, value: Any, where: str) -> Any:
    """A YAML value as the field holds it: a nested section as its dataclass, a list as a tuple."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if dataclasses.is_dataclass(default) and isinstance(value, dict):
        return from_dict(type(default), value, where=f"{where} section {f.name!r}")
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def preset_section(name: str, section: str, cls: type[T]) -> T:
    """One section of a preset as its dataclass, e.g. `preset_section("fast", "train", TrainConfig)`."""
    return from_dict(cls, load_preset(name).get(section, {}), where=f"preset {name!r} section {section!r}")


def option_value(args: list[str], name: str) -> Optional[str]:
    """The value of `name` in `args` (`--name VALUE` or `--name=VALUE`), the last one given; None when absent."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found
