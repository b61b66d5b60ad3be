"""`avatar3d train gaussians`: the training stage alone, on an enrolled avatar's stored frames.

`avatar3d train audio2expr`: fit the speech-to-expression model of an avatar (CPU: the networks are small,
about 0.1 M parameters each, and train in a minute or two; a GPU would not pay for its start-up).

Two paths are fitted and blended on out-of-fold evidence: the acoustic one (log-mel networks + a lip regressor,
which learn this voice) and the phonetic one (English phones from pocketsphinx -> this person's visemes; for
speech in other languages the phones are approximate, their timing still holds)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.config import Preset, option_value, preset_section
from avatar3d.training.config import TrainConfig


@dataclass
class TrainGaussiansConfig:
    avatar: tyro.conf.Positional[Path]
    """An avatar directory made by `avatar3d enroll` (its stored frames and tracking are used)."""
    preset: Preset = "default"
    """Quality/speed preset: fast, default or quality."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device for training."""
    resume: bool = False
    """Continue from the avatar's last training checkpoint."""
    iterations: int = 0
    """Training steps; 0 keeps the preset's. Another count scales the preset's schedule (densification,
    refinement, SH degree, checkpoints) to it, e.g. 800 for a quick look."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training settings: the preset's `train` section, any field overridable (`--train.sh-degree 1`)."""

    @classmethod
    def cli_default(cls, args: list[str]) -> "TrainGaussiansConfig":
        preset = option_value(args, "--preset") or "default"
        return cls(avatar=tyro.MISSING, preset=preset, train=preset_section(preset, "train", TrainConfig))


@dataclass
class TrainAudio2ExprConfig:
    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar directory (its video's audio and tracked parameters are the training data)."""
    audio_encoder: Optional[Path] = None
    """Local folder of a wav2vec 2.0 / HuBERT / WavLM model (transformers layout); default: log-mel features."""
    pretrain: Optional[Path] = None
    """Folder of enrolled avatars to pre-train on before fine-tuning on this one."""
    preset: Preset = "default"
    """Training settings from configs/<preset>.yaml (its audio2expr section), as `enroll --preset` uses them."""
    seed: int = 0
    """Random seed (training and inference are deterministic for a given seed)."""
    a2e: A2ETrainConfig = field(default_factory=A2ETrainConfig)
    """The training settings: the preset's `audio2expr` section, any field overridable (`--a2e.repeats 1`)."""

    @classmethod
    def cli_default(cls, args: list[str]) -> "TrainAudio2ExprConfig":
        preset = option_value(args, "--preset") or "default"
        return cls(avatar=tyro.MISSING, preset=preset, a2e=preset_section(preset, "audio2expr", A2ETrainConfig))


def main_gaussians(cfg: TrainGaussiansConfig) -> int:
    """Train (or resume training) the avatar's Gaussians with a preset; frames split as in its last run."""
    import torch

    from avatar3d.errors import InputError
    from avatar3d.training.config import scaled_schedule
    from avatar3d.training.trainer import train_gaussians

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    config = cfg.train
    if cfg.iterations:
        config = scaled_schedule(config, cfg.iterations)
    result = train_gaussians(cfg.avatar, config, device=cfg.device, resume=cfg.resume)
    print(f"trained {result.num_gaussians} Gaussians in {result.seconds:.0f} s "
          f"({result.seconds_per_step:.3f} s/step, train PSNR {result.train_psnr:.2f} dB) -> {result.gaussians_path}")
    return 0


def main_audio2expr(cfg: TrainAudio2ExprConfig) -> int:
    from avatar3d.audio2expr.train import train_audio2expr

    report = train_audio2expr(cfg.avatar, audio_encoder=cfg.audio_encoder, pretrain=cfg.pretrain, seed=cfg.seed,
                              config=cfg.a2e)
    if report["kind"] == "transformer":
        steps = report.get("steps") or [0]
        extra = (f", {report.get('members', 1)} network(s) of {min(steps)}-{max(steps)} steps, "
                 f"{report.get('params', 0) / 1e6:.2f} M parameters in all, lip regressor share "
                 f"{report.get('blend', 0.0):.2f}")
    else:
        extra = {"ridge": " (lip regressor only)", "phonetic": " (phones and visemes only)"}.get(report["kind"],
                                                                                              " (energy fallback)")
    if report.get("phonetic_share"):
        extra += f", phonetic share {report['phonetic_share']:.2f}"
    print(f"audio2expr: {report['kind']} model in {report['seconds']:.0f} s{extra}; "
          f"offset {report.get('av_offset_ms', 0.0):+.0f} ms; saved to {report['out']}")
    return 0
