"""Training settings of a Gaussian avatar; the YAML presets in configs/ are read back through this."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from avatar3d.errors import InputError


@dataclass
class TrainConfig:
    iterations: int = 15000
    """Optimisation steps over the training frames (one random frame per step)."""
    resolution: int = 512
    """Side of the square training images, pixels (frames are resized from the tracked resolution, K with them)."""
    init_gaussians: int = 20000
    """Gaussians placed on the rig's visible surface at initialisation (area-weighted over its triangles)."""
    max_gaussians: int = 100_000
    """Cap on the number of Gaussians (densification stops there)."""
    init_views: int = 6
    """Training frames the initial colours are sampled from (the most turned ones first; unseen triangles take
    their neighbours' colour)."""
    init_opacity: float = 0.1
    """Opacity of the Gaussians at initialisation (0.5 was worse on the synthetic subject's side views)."""
    sh_degree: int = 1
    """Spherical-harmonics degree of the colours (0..3)."""
    sh_increase_every: int = 1000
    """Steps between enabling one more SH band (3DGS's warm-up: diffuse colour first)."""
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Solid background colour (RGB in [0,1]) the ground truth is composited over with the mask, and rendered over.
    A portrait with a background plate trains on the real frames over the plate instead."""
    lambda_alpha: float = 0.1
    """Portrait: weight of the L1 between the rendered coverage and the person mask (keeps Gaussians off the room,
    which the plate shows, and on the person's outline)."""
    torso_density: float = 0.25
    """Portrait: Gaussians per unit area on the torso at the start, relative to the head (clothes need fewer)."""
    lr_position: float = 5e-3
    """Adam rate of the local positions (units of the parent triangle's size) at the first step."""
    lr_position_final: float = 5e-5
    """Rate of the local positions at the last step (exponential decay in between)."""
    lr_scale: float = 0.017
    """Adam rate of the log-scales."""
    lr_rotation: float = 1e-3
    """Adam rate of the local rotation quaternions."""
    lr_opacity: float = 0.05
    """Adam rate of the opacity logits."""
    lr_sh: float = 2.5e-3
    """Adam rate of the SH DC (base colour) coefficients; the higher bands get a twentieth of it."""
    expression_components: int = 8
    """Expression-dependent Gaussians (gaussians/expression.py): each Gaussian gets offsets of its position, colour
    and opacity per component of the person's expression code, this many principal components of the training
    frames' expression, jaw and eyes; 0: one appearance whatever the face does."""
    lr_expression: float = 0.5
    """Adam rates of the expression offsets, as a share of the rate of the parameter each offsets."""
    expression_decay: float = 1e-4
    """Share of every expression offset taken off after each step (decoupled weight decay: an offset the
    pictures do not keep up fades, so unseen expressions stay near the trained appearance)."""
    densify_from: int = 500
    """First step of adaptive densification."""
    densify_until: int = 10000
    """Last step of adaptive densification."""
    densify_every: int = 500
    """Steps between densification/pruning rounds."""
    densify_grad_threshold: float = 2e-4
    """Mean screen-space gradient (NDC units) above which a Gaussian is cloned or split."""
    percent_dense: float = 0.01
    """Gaussians smaller than this fraction of the head's extent are cloned, larger ones split."""
    final_min_opacity: float = 0.0101
    """Gaussians written at the end need at least this opacity: no more opaque than an opacity reset leaves them
    (0.01), no training view has needed them since (the back of the torso, below the frame); they would only cost
    rendering time."""
    prune_share: float = 0.0
    """Share of the Gaussians dropped after training: those that add least to `prune_views` training pictures
    (their blending weight summed over the pixels). They change the pictures by almost nothing and cost every
    frame's time. 0 (the default for now) keeps every Gaussian; docs/performance.md says why."""
    prune_views: int = 16
    """Training pictures (spread over the training frames) the contributions are summed over."""
    torso_prune_share: float = 0.5
    """Share of a portrait's torso Gaussians that the training pictures show dropped when densification ends: those
    that add least per pixel they cover (training/prune.py); the steps after it let the rest take over their part.
    Trained at a quarter of the head's density, the torso grows large faint splats layered over its surface, and
    each costs every pixel it covers. Spared: the Gaussians the continuation below the frame takes its colours from
    (training/torso_continue.py), and those on triangles turned over 72.5 degrees from the camera (a flank, near
    edge-on in the frames, is what a side view sees). 0 keeps them all (speed and quality figures: docs/portrait.md).
    """
    prune_opacity: float = 0.005
    """Gaussians less opaque than this are pruned."""
    opacity_reset_every: int = 3000
    """Steps between opacity resets."""
    lambda_dssim: float = 0.2
    """Weight of the D-SSIM term (the L1 term gets 1 - this)."""
    lambda_lpips: float = 0.0
    """Weight of the LPIPS term (`render.metrics`' AlexNet LPIPS; used only when its weights are on disk)."""
    mouth_eye_weight: float = 2.0
    """Loss weight multiplier on the mouth and eye regions."""
    lambda_torso_opacity: float = 0.0
    """Weight of a term on a portrait's torso Gaussians after densification ends: the mean of o (1 - o) over their
    opacities o, which pushes each towards fully opaque or fully transparent. Faint splats layered over the torso
    cost every pixel they cover and add little to any; the coverage term (`lambda_alpha`) keeps the person covered.
    0 (off) by default for now: it renders a backed-off portrait faster but its side views a little worse
    (docs/portrait.md)."""
    lambda_position: float = 0.01
    """Weight of the penalty on Gaussians further than one triangle size from their triangle."""
    lambda_scale: float = 1.0
    """Weight of the penalty on Gaussians larger than 0.6 of their triangle's size."""
    lambda_thickness: float = 0.0
    """Weight of the pull of every Gaussian onto its triangle's plane (offset and extent along the normal).
    Off in the presets: on the synthetic subject 0.01 sharpened the closer camera (x0.7: +0.8 dB) but cost the
    yaw views a few tenths; 0.1 cost yaw -30 two dB (side surfaces the camera sees edge-on need some depth)."""
    lambda_needle: float = 0.0
    """Weight of the penalty on needle-shaped Gaussians (largest scale over 3x the middle one)."""
    refine_params: bool = True
    """Jointly refine the per-frame expression, jaw, pose and eye parameters of the training frames."""
    refine_from: int = 500
    """First step of the refinement (the Gaussians must roughly fit first, or the parameters chase noise)."""
    lr_refine_expr: float = 1e-3
    """Adam rate of the refined expression coefficients. The refinement rates are deliberately small: on German_20s
    (default preset) 5x/30x/50x larger expression/rotation/translation rates raised the training PSNR from 28.9 to
    30.3 dB but not the held-out one (28.93 -> 28.79): the Gaussians then fit better-aligned frames than the tracker
    gives at test time."""
    lr_refine_pose: float = 1e-5
    """Adam rate of the refined rotations (global, neck, jaw, eyes; radians)."""
    lr_refine_transl: float = 1e-6
    """Adam rate of the refined translations (metres)."""
    lambda_refine_prior: float = 1e-3
    """Weight of the prior pulling refined parameters back to the tracked ones."""
    checkpoint_every: int = 1000
    """Steps between resumable checkpoints."""
    seed: int = 0
    """Seed of the initialisation and of the frame sampling: the same seed, data, settings and thread count give
    the same avatar (training runs with torch's deterministic kernels; another thread count sums in another
    order, so its avatar differs in the last bits and drifts from there)."""


def scaled_schedule(train: TrainConfig, iterations: int) -> TrainConfig:
    """`train` shortened (or lengthened) to `iterations` steps, its density/refinement schedule scaled with it."""
    if int(iterations) <= 0:
        raise InputError(f"iterations={iterations} must be positive (e.g. 800 for a quick avatar)")
    k = int(iterations) / train.iterations
    return dataclasses.replace(
        train, iterations=int(iterations), densify_from=max(1, round(train.densify_from * k)),
        densify_until=max(1, round(train.densify_until * k)), densify_every=max(1, round(train.densify_every * k)),
        refine_from=round(train.refine_from * k), opacity_reset_every=round(train.opacity_reset_every * k),
        sh_increase_every=max(1, round(train.sh_increase_every * k)),
        checkpoint_every=max(0, round(train.checkpoint_every * k)))
