"""Presets ship as package data and are read back through the dataclasses."""
import dataclasses
from pathlib import Path

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


def test_preset_names_match_the_cli_choices():
    import typing

    from avatar3d.config import Preset

    assert set(typing.get_args(Preset)) == set(preset_names())


def _parse(args: list[str]):
    import tyro

    from avatar3d.pipeline.config import EnrollConfig

    return tyro.cli(EnrollConfig, args=args, default=EnrollConfig.cli_default(args))


def test_enroll_flags_override_the_preset_field_by_field():
    from avatar3d.pipeline.config import from_preset

    cfg = _parse(["clip.mp4", "--preset", "fast", "--train.iterations", "400", "--a2e.model.width", "32",
                  "--masks.dilate", "0.05", "--track.fit.rigid-iters", "5"])
    fast = from_preset(Path("clip.mp4"), "fast")
    assert cfg.train.iterations == 400 and cfg.a2e.model.width == 32 and cfg.masks.dilate == 0.05
    assert cfg.track.fit.rigid_iters == 5
    assert cfg.train.resolution == fast.train.resolution == 256  # the rest is the preset's
    assert cfg.a2e.max_steps == fast.a2e.max_steps == 300
    assert _parse(["clip.mp4"]).train.iterations == from_preset(Path("clip.mp4"), "default").train.iterations


def test_a_saved_config_round_trips_and_is_checked(tmp_path):
    from avatar3d.errors import InputError
    from avatar3d.pipeline.config import dump_config, load_config

    cfg = _parse(["clip.mp4", "--preset", "quality", "--train.iterations", "123", "--holdout", "0.3"])
    path = tmp_path / "enroll.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert _parse(["other.mp4", "--config", str(path), "--train.sh-degree", "1"]).train.iterations == 123
    with pytest.raises(InputError, match="not both"):
        _parse(["clip.mp4", "--config", str(path), "--preset", "fast"])
    path.write_text(dump_config(cfg).replace("iterations:", "iteration:"))
    with pytest.raises(InputError, match="unknown setting.*iteration"):
        load_config(path)
