"""Presets ship as package data and are read back through the dataclasses."""
import dataclasses

import pytest

from avatar3d.config import from_dict, load_preset, preset_names, preset_section
from avatar3d.errors import InputError
from avatar3d.training.config import TrainConfig


def test_presets_present():
    assert {"fast", "default", "quality"} <= set(preset_names())


@pytest.mark.parametrize("name", ["fast", "default", "quality"])
def test_preset_reads_through_dataclass(name):
    cfg = preset_section(name, "train", TrainConfig)
    raw = load_preset(name)["train"]
    for key, value in raw.items():
        assert getattr(cfg, key) == value


def test_presets_are_ordered_by_effort():
    fast, default, quality = (preset_section(n, "train", TrainConfig) for n in ("fast", "default", "quality"))
    assert fast.iterations < default.iterations < quality.iterations
    assert fast.max_gaussians <= default.max_gaussians <= quality.max_gaussians


def test_unknown_key_and_preset_are_refused():
    with pytest.raises(InputError, match="unknown setting"):
        from_dict(TrainConfig, {"iterationz": 3})
    with pytest.raises(InputError, match="unknown preset"):
        load_preset("ultra")


def test_every_train_field_documented():
    import inspect

    src = inspect.getsource(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        assert f'    {f.name}:' in src
