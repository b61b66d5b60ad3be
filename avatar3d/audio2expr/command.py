"""`avatar3d train audio2expr`: fit the speech-to-expression transformer of an avatar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.pending import not_yet


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
    raise not_yet("`avatar3d train audio2expr`", "Audio-to-expression")
