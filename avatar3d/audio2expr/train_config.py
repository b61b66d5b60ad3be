"""Settings of audio-to-expression training (`A2ETrainConfig`; presets fill it from their audio2expr section)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from avatar3d.audio2expr.model import ModelConfig
from avatar3d.audio2expr.ridge import RidgeConfig
from avatar3d.audio2expr.visemes import VisemeConfig


@dataclass
class A2ETrainConfig:
    holdout: float = 0.2
    """Fraction at the end of the video kept for evaluation (never read here)."""
    val_fraction: float = 0.15
    """Last fraction of the TRAINING part used for validation / early stopping."""
    window: int = 64
    """Training window in frames."""
    batch: int = 8
    """Windows per optimisation step."""
    max_steps: int = 700
    """Optimisation steps per network at most (early stopping usually ends sooner)."""
    eval_every: int = 25
    """Steps between evaluations on the validation block (early stopping counts these)."""
    patience: int = 8
    """Evaluations without improvement before stopping."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    max_seconds: float = 280.0
    """Safety cap on training time (stopping by it breaks exact reproducibility)."""
    w_lip: float = 1.0
    """Weight of the lip-vertex error (metres, through the rig's lip Jacobian)."""
    w_mse: float = 0.1
    """Weight of the plain channel error (all channels, normalised) beside the lip-vertex error."""
    w_vel: float = 0.2
    """Weight of the frame-to-frame velocity error."""
    w_prior: float = 0.05
    """Weight of the expression prior (`ExpressionPrior`: zero inside the person's tracked spread, quadratic
    outside)."""
    max_offset_ms: float = 200.0
    """Largest audio/video offset searched for, milliseconds either way."""
    min_speech_s: float = 4.0
    """Less speech than this in the training part: fall back to the energy -> jaw regression."""
    speed: float = 0.05
    """Speed augmentation: windows are resampled by up to this fraction faster or slower."""
    gain_db: float = 6.0
    """Gain augmentation: up to this many dB louder or quieter."""
    snr_db: tuple[float, float] = (15.0, 45.0)
    """Range of the signal-to-noise ratio of the noise added in augmentation, dB."""
    pretrain_steps: int = 800
    """Steps of pre-training on the other clips of `pretrain` (when given) before fine-tuning."""
    folds: int = 5
    """Blocks of the training part (k-fold): a network is early-stopped on each block and trained on the rest;
    inference averages them, and their out-of-fold predictions choose the lip regressor's share. 1: a single
    network validated on the last `val_fraction`."""
    repeats: int = 2
    """Networks per fold (different seeds); inference averages them (their mean depends less on each seed). The
    default preset uses one: with the phonetic path sharing the lips, ten networks scored no better than five on
    German_20s's held-out tail (docs/lipsync.md)."""
    network: bool = True
    """Train the transformer; off: the closed-form lip regressor alone (seconds instead of minutes)."""
    phonetic: bool = True
    """Fit the phonetic path (pocketsphinx phones -> the person's visemes + a phonetic regressor) and blend it
    with the acoustic one by out-of-fold lip error; off: the acoustic path alone."""
    voice_factors: tuple[float, ...] = (1.0, 0.75, 1.3)
    """Voices the evidence is heard in: the enrollment audio resampled by these factors (pitch and formants scaled
    together, as another speaker's; voices.py), spanning adult voices from a man's to a woman's (a 140 Hz voice
    is heard at 105 and 182 Hz). The phonetic share is chosen twice on out-of-fold lip error: in the enrollment
    voice (1.0) and in the others; inference uses the first for a voice like the enrollment's and moves to the
    second as the driving voice departs from it (infer.voice_distance; the acoustic path learns the voice)."""
    other_voice_share: Optional[float] = 1.0
    """The phonetic path's share for a voice that is not the enrollment's (infer.voice_distance 1; partly for one in
    between). The resampled-voice evidence keeps the enrollment speaker's words, language and manner, which the
    acoustic path has learnt, so it favours that path far more than real other speakers do (docs/lipsync.md):
    1.0, the phones alone drive a stranger's voice. None: the share that evidence chooses (it is reported either
    way, as `evidence_share`)."""
    min_phonetic_speech_s: float = 1.0
    """With less speech than `min_speech_s` (no networks) but at least this much, the phonetic path alone
    drives the lips (shrunk towards generic visemes); below it, the energy fallback."""
    blend_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Shares of the lip regressor tried on the validation slice (the rest is the transformer's)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The transformer's shape."""
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    """The closed-form lip regressor."""
    visemes: VisemeConfig = field(default_factory=VisemeConfig)
    """The person's visemes (the phonetic path)."""

    def __post_init__(self):  # presets give plain dicts for the nested sections
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.ridge, dict):
            self.ridge = RidgeConfig(**self.ridge)
        if isinstance(self.visemes, dict):
            self.visemes = VisemeConfig(**self.visemes)
        self.snr_db, self.blend_grid = tuple(self.snr_db), tuple(self.blend_grid)
        self.voice_factors = tuple(float(f) for f in self.voice_factors)
