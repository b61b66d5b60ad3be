"""`avatar3d train audio2expr`: fit the speech-to-expression transformer of an avatar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro



@dataclass
class TrainAudio2ExprConfig:
    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar directory (its video's audio and tracked parameters are the training data)."""
    audio_encoder: Optional[Path] = None
    """Local folder of a wav2vec 2.0 / HuBERT / WavLM model (transformers layout); default: log-mel features."""
    pretrain: Optional[Path] = None
    """Folder of enrolled avatars to pre-train on before fine-tuning on this one."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device."""
    seed: int = 0
    """Random seed (training and inference are deterministic for a given seed)."""


def main(cfg: TrainAudio2ExprConfig) -> int:
    import torch

    from avatar3d.audio2expr.train import train_audio2expr
    from avatar3d.errors import BackendUnavailableError

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda was asked for but this torch has no CUDA device; "
                                      "use --device cpu (training takes a few minutes on CPU)")
    report = train_audio2expr(cfg.avatar, audio_encoder=cfg.audio_encoder, pretrain=cfg.pretrain, seed=cfg.seed)
    extra = {"transformer": f", {report.get('steps')} steps, {report.get('params', 0) / 1e6:.2f} M parameters, "
                            f"lip regressor share {report.get('blend', 0.0):.2f}",
             "ridge": " (lip regressor only)"}.get(report["kind"], " (energy fallback)")
    print(f"audio2expr: {report['kind']} model in {report['seconds']:.0f} s{extra}; "
          f"offset {report.get('av_offset_ms', 0.0):+.0f} ms; saved to {report['out']}")
    return 0
