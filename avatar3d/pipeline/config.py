"""The enrollment's settings: what the user gives (video, out, preset, ...) and every stage's dataclass, nested
the nerfstudio way so any field can be set on the command line (`avatar3d enroll clip.mp4 --train.iterations 400`).

Defaults come from the preset (configs/<preset>.yaml: a section per stage, `train`, `audio2expr`, ...), or from a
config an earlier enrollment saved (`--config AVATAR/enroll.yaml`); the command line overrides both. The
resolved config is saved in the avatar as `enroll.yaml`, so a run can be reproduced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import tyro
import yaml

from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.config import Preset, from_dict, load_preset, option_value
from avatar3d.errors import InputError
from avatar3d.pipeline.holdout import HoldoutConfig
from avatar3d.tracking.fit import FitConfig
from avatar3d.training.background import BackgroundConfig
from avatar3d.training.config import TrainConfig
from avatar3d.training.masks import MaskConfig

CONFIG_FILE = "enroll.yaml"  # the resolved config, in the avatar folder
# EnrollConfig field -> its section in a preset YAML
PRESET_SECTIONS = {"track": "track", "masks": "masks", "background": "background", "train": "train",
                   "a2e": "audio2expr", "eval": "eval"}


@dataclass
class TrackStageConfig:
    resolution: int = 512
    """Side of the square crop the frames are tracked and stored at, pixels."""
    fit: FitConfig = field(default_factory=FitConfig)
    """The rig fit per frame (stages, iterations, priors, smoothing)."""


STAGE_TYPES = {"track": TrackStageConfig, "masks": MaskConfig, "background": BackgroundConfig, "train": TrainConfig,
               "a2e": A2ETrainConfig, "eval": HoldoutConfig}


@dataclass
class EnrollConfig:
    video: tyro.conf.Positional[Path]
    """A short talking video of one person (5 s to a few minutes), face visible, looking roughly at the camera."""
    out: Path = Path("avatars/me")
    """The avatar directory to write (replaced only when the run succeeds)."""
    preset: Preset = "default"
    """Quality/speed preset: fast, default or quality (configs/<preset>.yaml): the defaults of every stage
    section below, which the command line then overrides."""
    config: Optional[Path] = None
    """A config saved by an earlier enrollment (AVATAR/enroll.yaml) to start from instead of the preset: the same
    settings, so the run can be reproduced; options given here still override it."""
    framing: Literal["portrait", "head"] = "portrait"
    """portrait: head, neck, shoulders and clothes over the room behind (a torso in 3D, the background plate,
    training on the whole picture); head: the head and neck alone over a solid colour (avatars before portraits)."""
    holdout: float = 0.2
    """Fraction of frames at the end of the video kept out of training for evaluation."""
    head_model: Optional[str] = None
    """Installed head model (see `avatar3d models list`); default: ICT-FaceKit when installed."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device for tracking and training."""
    resume: bool = False
    """Continue an interrupted run from its last finished stage and checkpoint. A run of the same video and
    settings continues it anyway; one of another video or settings is refused, naming both commands."""
    restart: bool = False
    """Discard an interrupted run of OUT (its finished stages and checkpoints) and start from the beginning."""
    audio2expr: bool = True
    """Train the speech-to-expression model (lip sync) from the video's own audio; --no-audio2expr skips it."""
    force: bool = False
    """Let OUT replace an existing folder that is not an avatar (its files are deleted once the new avatar is
    complete); without it such a folder is refused before any work. An existing avatar is always replaced,
    only when the new one is complete."""
    track: TrackStageConfig = field(default_factory=TrackStageConfig)
    """Stage track: landmarks, crop and the rig fit."""
    masks: MaskConfig = field(default_factory=MaskConfig)
    """Stage segment: the foreground masks."""
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    """Stage background: the plate of the room behind the person (background.png), rendered with
    `--background plate`."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Stage train: the Gaussians (the preset's `train` section)."""
    a2e: A2ETrainConfig = field(default_factory=A2ETrainConfig)
    """Stage audio2expr: speech -> expression training (the preset's `audio2expr` section)."""
    eval: HoldoutConfig = field(default_factory=HoldoutConfig)
    """Stage eval: the held-out frames' refinement and scores."""

    @classmethod
    def cli_default(cls, args: list[str]) -> "EnrollConfig":
        """The defaults the command line overrides: those of `--config PATH` when given, else of `--preset`."""
        saved, preset = option_value(args, "--config"), option_value(args, "--preset")
        if saved is not None:
            if preset is not None:
                raise InputError("give --config or --preset, not both: a saved config already names its preset "
                                 "and holds every setting")
            return dataclasses.replace(load_config(Path(saved)), video=tyro.MISSING, config=Path(saved))
        return from_preset(tyro.MISSING, preset or "default")


def stage_sections(values: dict[str, Any], where: str) -> dict[str, Any]:
    """{field: stage config} from a mapping of YAML sections (unknown sections and keys are refused)."""
    unknown = sorted(set(values) - set(PRESET_SECTIONS.values()))
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)} in {where}; known: "
                         f"{', '.join(sorted(PRESET_SECTIONS.values()))}")
    out = {}
    for name, section in PRESET_SECTIONS.items():
        cls = STAGE_TYPES[name]
        out[name] = from_dict(cls, dict(values.get(section) or {}), where=f"{where} section {section!r}")
    return out


def from_preset(video: Any, preset: str = "default", **options) -> EnrollConfig:
    """The EnrollConfig of `preset` (its YAML sections as the stage configs), with top-level `options` set."""
    stages = stage_sections(load_preset(preset), where=f"preset {preset!r}")
    return EnrollConfig(video=video, preset=preset, **stages, **options)


def to_dict(cfg: EnrollConfig) -> dict[str, Any]:
    """Plain YAML/JSON data: paths as strings, tuples as lists, stage sections under their preset names."""
    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    data = plain(dataclasses.asdict(cfg))
    return {**{k: v for k, v in data.items() if k not in PRESET_SECTIONS},
            **{section: data[name] for name, section in PRESET_SECTIONS.items()}}


def dump_config(cfg: EnrollConfig) -> str:
    """The resolved config as YAML (what `enroll.yaml` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def load_config(path: Path) -> EnrollConfig:
    """An EnrollConfig from a saved `enroll.yaml` (unknown keys are refused: a typo must not pass silently)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path} cannot be read as a saved enrollment config ({type(err).__name__}); pass the "
                         f"{CONFIG_FILE} of an avatar") from err
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a saved enrollment config (a mapping); pass the {CONFIG_FILE} of an avatar")
    sections = {k: data.pop(k) for k in list(data) if k in PRESET_SECTIONS.values()}
    data.setdefault("framing", "head")  # saved before portraits: those runs made heads
    cfg = from_dict(EnrollConfig, {"video": None, **data, **stage_sections(sections, where=str(path))},
                    where=str(path))
    return dataclasses.replace(cfg, video=None if cfg.video is None else Path(cfg.video), out=Path(cfg.out),
                               config=None)


def stage_settings(cfg: EnrollConfig) -> dict:
    """What a run records of its settings so another run can tell whether it may continue it: every stage's
    section, and the framing (chosen at the crop)."""
    stages = {k: v for k, v in to_dict(cfg).items() if isinstance(v, dict)}
    stages["framing"] = cfg.framing
    return stages
