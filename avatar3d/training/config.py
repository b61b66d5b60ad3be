"""Training settings of a Gaussian avatar; the YAML presets in configs/ are read back through this."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    iterations: int = 15000
    """Optimisation steps over the training frames."""
    resolution: int = 512
    """Side of the square training images, pixels."""
    max_gaussians: int = 100_000
    """Cap on the number of Gaussians (densification stops there)."""
    init_per_triangle: int = 1
    """Gaussians placed on each visible triangle at initialisation (a decimated surface is used when over budget)."""
    sh_degree: int = 1
    """Spherical-harmonics degree of the colours (0..3)."""
    densify_from: int = 500
    """First step of adaptive densification."""
    densify_until: int = 10000
    """Last step of adaptive densification."""
    densify_every: int = 500
    """Steps between densification/pruning rounds."""
    opacity_reset_every: int = 3000
    """Steps between opacity resets."""
    lambda_dssim: float = 0.2
    """Weight of the D-SSIM term (the L1 term gets 1 - this)."""
    lambda_lpips: float = 0.0
    """Weight of LPIPS (used only when its weights are present locally)."""
    mouth_eye_weight: float = 2.0
    """Loss weight multiplier on the mouth and eye regions."""
    refine_params: bool = True
    """Jointly refine the per-frame expression, jaw, pose and eye parameters of the training frames."""
    checkpoint_every: int = 1000
    """Steps between resumable checkpoints."""
