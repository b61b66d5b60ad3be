"""Staged rig fitting to per-frame 2D landmarks: one identity, per-frame expression/jaw/pose/gaze, one focal.

Camera (fixed; the head moves): OpenCV intrinsics `K` with the principal point at the image centre and
one focal length shared by all frames; the view matrix is the constant `VIEWMAT` = diag(1,-1,-1,1):
the camera sits at the world origin looking along world -z, so a frontal head has a near-zero root
rotation and a translation of about (0, 0, -distance). World space is rig space (x subject's left,
y up, z out of the face).

Head pose split (DESIGN.md: "head pose is the neck joint's rotation; the root stays as tracked"):
the root rotation `global_rot` is ONE rotation per video (the same for all frames): the head's mean
orientation relative to the camera. All per-frame head rotation is on the neck (`neck`), pulled
towards zero by a weak prior so the mean goes to the root; `transl` is per frame. Overriding the head
pose later therefore means replacing `neck` only; the root and translation stay as tracked.
Inside the optimisation the per-frame translation is that of a fixed point in the face (the rest
centroid of the stable landmarks), which decouples it from the rotation; the returned
`RigParams.transl` is the ordinary rig translation (as `pose_vertices` takes it).

Stages (all frames together; no per-frame optimisation loop):
1. rigid: root, neck, translation (+ focal) on the STABLE landmarks (eye corners, nose) only;
2. identity + expression: adds shape, expression and jaw on all mesh landmarks (region weights);
3. everything: adds the eye rotations (iris loss on 468..477) and, optionally, a per-subject
   refinement of the landmark embedding (small rest-space offsets, shared over frames).
Each stage minimises: robust (Huber) reprojection error with per-landmark region weights and
per-frame confidence weights + L2 priors (shape, expression, jaw, neck, eyes, focal) + temporal
smoothness (first and second differences) of every per-frame parameter. Pixel residuals are measured in
units of 1/100 of the median inter-ocular distance, so the weights do not depend on the resolution.
The optimiser is full-batch L-BFGS (or Adam); the data term is evaluated in chunks of `batch_frames`
frames whose gradients accumulate, so memory stays bounded for long videos while identity and the
temporal terms still see every frame.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.head.embedding import NUM_LANDMARKS
from avatar3d.head.rig import BLINK_NAMES, HeadRig, RigParams
from avatar3d.tracking.landmark_rig import LandmarkRig
from avatar3d.tracking.losses import (EYELID_PAIRS, STABLE, RegionWeights, eye_closure_loss, iris_weights,
                                      landmark_weights, reprojection_loss, stable_weights)
from avatar3d.tracking.smoothing import smoothness

VIEWMAT = ((1.0, 0.0, 0.0, 0.0), (0.0, -1.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
EYE_CORNERS = (33, 263)


@dataclass
class FitConfig:
    """Settings of `fit_sequence`. Weights are relative to the reprojection term, whose residuals are in
    units of 1/100 of the inter-ocular distance (about 1.3 px in a 512 px crop)."""

    rigid_iters: int = 30
    """Optimiser iterations of stage 1 (head pose, translation and focal on the stable landmarks)."""
    shape_iters: int = 60
    """Optimiser iterations of stage 2 (adds identity, expression and jaw)."""
    full_iters: int = 60
    """Optimiser iterations of stage 3 (adds gaze and, when enabled, the embedding refinement)."""
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    """lbfgs: full-batch L-BFGS with a strong-Wolfe line search (fast convergence on this smooth
    least-squares problem, copes with the stiff temporal terms); adam: first-order, lr per group below."""
    lr_rotation: float = 0.02
    """Adam step size of rotations (radians)."""
    lr_translation: float = 0.003
    """Adam step size of translations (metres)."""
    lr_coeffs: float = 0.03
    """Adam step size of shape/expression coefficients, focal (log) and embedding offsets (x 0.01 m)."""
    batch_frames: int = 512
    """Frames per chunk of the data term (gradients accumulate over chunks: bounds memory, same result)."""
    regions: RegionWeights = field(default_factory=RegionWeights)
    """Per-region weights of the landmark reprojection loss (mouth, eyes, brows, contour, other)."""
    huber_delta: float = 3.0
    """Residual (1/100 inter-ocular units) beyond which the landmark penalty grows linearly (outliers)."""
    eye_closure_weight: float = 8.0
    """Weight of each eyelid pair's opening (`eye_closure_loss`, after the rigid stage), relative to a landmark of
    weight 1: what makes the rig blink where the video does."""
    iris_weight: float = 2.0
    """Weight of the iris loss (iris centres 468/473, ring points a quarter of that) in stage 3."""
    shape_prior: float = 0.02
    """L2 prior on the identity coefficients (sum of squares)."""
    expr_prior: float = 0.02
    """L2 prior on the expression coefficients (per frame, sum of squares, mean over frames)."""
    expr_bounds: Optional[bool] = None
    """Penalise expression coefficients outside [0, 1] (ARKit-like blend shapes); None: on unless the
    rig's expressions are signed PCA components (names starting with "expr", as FLAME's)."""
    bounds_weight: float = 100.0
    """Weight of that range penalty (squared excess)."""
    jaw_prior: tuple[float, float, float] = (0.1, 20.0, 20.0)
    """L2 prior per jaw axis (pitch opens the mouth and is nearly free; yaw/roll stay small)."""
    neck_prior: float = 0.1
    """L2 prior on the per-frame neck rotation: moves the video's mean head orientation to the root."""
    eye_prior: tuple[float, float, float] = (0.5, 0.5, 50.0)
    """L2 prior per eye-rotation axis (pitch, yaw free-ish; torsion about the gaze axis suppressed)."""
    vergence_prior: float = 5.0
    """L2 prior on the difference of the two eye rotations (the eyes look the same way)."""
    focal_prior: float = 1.0
    """L2 prior on log(focal / initial focal): focal and distance are nearly ambiguous on a face."""
    optimize_focal: bool = True
    """Fit the shared focal length (else keep the initial one)."""
    init_fov_deg: float = 20.0
    """Initial field of view (degrees, across the larger image side) when no K_init is given."""
    smooth_expr: tuple[float, float] = (0.5, 2.0)
    """Weights of the first and second temporal differences of the expression coefficients."""
    smooth_blink: tuple[float, float] = (0.1, 0.4)
    """... of the eyelid-closing expressions (`BLINK_NAMES`): a blink closes and reopens the lids within 3-5
    frames, which the expressions' smoothing flattens into a twitch."""
    smooth_jaw: tuple[float, float] = (20.0, 100.0)
    """... of the jaw rotation (radians)."""
    smooth_neck: tuple[float, float] = (100.0, 3000.0)
    """... of the neck rotation (radians): the second difference is the pose jitter."""
    smooth_transl: tuple[float, float] = (2000.0, 50000.0)
    """... of the head's anchor position (metres; a point in the face, see LandmarkRig), not of the rig translation."""
    smooth_eyes: tuple[float, float] = (5.0, 20.0)
    """... of the eye rotations (radians)."""
    refine_embedding: bool = False
    """Fit small per-landmark offsets of the embedding (shared over frames) in stage 3. Off by default."""
    embedding_prior: float = 2.0e5
    """L2 prior on those offsets (metres; 1 mm costs 0.2)."""


@dataclass
class FitResult:
    """What `fit_sequence` returns (all tensors on the fitting device, float32)."""

    params: RigParams  # shape [S]; expr [T,E]; global_rot/neck/jaw/transl [T,3]; eyes [T,2,3]
    K: Tensor  # [3,3] pixels, principal point at the image centre, shared by all frames
    viewmat: Tensor  # [4,4] world->camera, constant (VIEWMAT)
    projected: Tensor  # [T,478,2] fitted landmarks projected, pixels (pixel centres at +0.5)
    head_rotation: Tensor  # [T,3,3] world rotation of the head (root @ neck)
    held_out: Tensor  # [478] bool, landmarks that did not take part in the fit (cv)
    losses: dict = field(default_factory=dict)  # stage -> {term: final value}
    history: dict = field(default_factory=dict)  # stage -> [total loss per evaluation]
    embedding_offsets: Optional[Tensor] = None  # [478,3] rest-space offsets when refine_embedding
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------- camera
def make_K(focal: Tensor, width: int, height: int) -> Tensor:  # focal: [] -> [3,3]
    """K with square pixels and the principal point at the image centre (pixel centres at +0.5)."""
    z, o = focal.new_zeros(()), focal.new_ones(())
    cx, cy = focal.new_tensor(width / 2.0), focal.new_tensor(height / 2.0)
    return torch.stack([torch.stack([focal, z, cx]), torch.stack([z, focal, cy]), torch.stack([z, z, o])])


def project(points: Tensor,  # [...,3] world (rig space) points
            focal: Tensor,  # [] pixels
            centre: tuple[float, float]) -> Tensor:  # -> [...,2] pixels
    """Pinhole projection through VIEWMAT (camera x = world x, camera y = -world y, depth = -world z)."""
    depth = (-points[..., 2]).clamp_min(1e-4)
    u = focal * points[..., 0] / depth + centre[0]
    v = focal * -points[..., 1] / depth + centre[1]
    return torch.stack([u, v], -1)


# ---------------------------------------------------------------------------------------- validation
def _check_inputs(rig: HeadRig, landmarks: Tensor, confidence: Tensor, image_size, K_init, cv_mask) -> tuple[int, int]:
    if rig.landmarks_mp is None:
        raise InputError(f"the rig {rig.name!r} has no MediaPipe landmark embedding; reinstall it with "
                         "`avatar3d models install` (the install builds it)")
    if landmarks.dim() != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
        raise InputError(f"landmarks must be [T,{NUM_LANDMARKS},2] pixels, got {tuple(landmarks.shape)}; pass "
                         "the refined MediaPipe face mesh (with iris) of every frame")
    if landmarks.shape[0] < 1:
        raise InputError("no frames to fit; pass the landmarks of at least one frame")
    if not bool(torch.isfinite(landmarks).all()):
        raise InputError("landmarks contain NaN or inf; interpolate failed frames before fitting "
                         "(the landmark detector does this) and give them confidence 0")
    if confidence.shape != landmarks.shape[:1]:
        raise InputError(f"confidence must be [T={landmarks.shape[0]}], got {tuple(confidence.shape)}; "
                         "pass one detection confidence per frame")
    if not bool(torch.isfinite(confidence).all()) or bool((confidence < 0).any()):
        raise InputError("confidence must be finite and >= 0; pass the detector's per-frame confidence")
    if float(confidence.sum()) <= 0:
        raise InputError("every frame has confidence 0 (no face detected anywhere); check the video shows a face")
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (width, height) in pixels, got {image_size!r}") from None
    if width <= 0 or height <= 0:
        raise InputError(f"image_size {width}x{height} is not positive; pass (width, height) in pixels")
    if K_init is not None and tuple(K_init.shape) != (3, 3):
        raise InputError(f"K_init must be [3,3], got {tuple(K_init.shape)}; pass the crop camera's intrinsics")
    if cv_mask is not None and (cv_mask.shape != (NUM_LANDMARKS,) or cv_mask.dtype != torch.bool):
        raise InputError(f"cv_mask must be a bool [{NUM_LANDMARKS}] mask, got {tuple(cv_mask.shape)} "
                         f"{cv_mask.dtype}; use avatar3d.tracking.metrics.cv_mask()")
    return width, height


# ---------------------------------------------------------------------------------------- the fit
def _bridge(x: Tensor,  # [T,D] per-frame values
            keep: Tensor,  # [T] bool, frames whose values are trusted
            ) -> Tensor:
    """Linear interpolation in time of the untrusted frames (held constant beyond the ends)."""
    known = torch.nonzero(keep).flatten()
    if known.numel() == 0 or known.numel() == x.shape[0]:
        return x
    t = torch.arange(x.shape[0], device=x.device)
    hi_pos = torch.searchsorted(known, t).clamp(max=known.numel() - 1)
    lo_pos = (hi_pos - 1).clamp(min=0)
    lo_pos = torch.where(known[hi_pos] <= t, hi_pos, lo_pos)  # exact hits and frames past the last known
    lo, hi = known[lo_pos], known[hi_pos]
    span = (hi - lo).clamp(min=1).to(x.dtype)
    a = ((t - lo).to(x.dtype) / span).clamp(0.0, 1.0)[:, None]
    return torch.where(keep[:, None], x, x[lo] * (1 - a) + x[hi] * a)


class _Problem:
    """Parameters, weights and the loss of one sequence."""

    def __init__(self, rig: HeadRig, target: Tensor, conf: Tensor, width: int, height: int,
                 K_init: Optional[Tensor], held_out: Tensor, cfg: FitConfig, device):
        self.cfg = cfg
        self.model = LandmarkRig(rig, device=device)
        self.stable = list(STABLE)
        self.model_stable = LandmarkRig(rig, device=device, subset=self.stable)  # the rigid stage's few points
        self.target = target  # [T,478,2]
        self.T = target.shape[0]
        self.conf = conf  # [T]
        self.centre = (width / 2.0, height / 2.0)
        iod = (target[:, EYE_CORNERS[0]] - target[:, EYE_CORNERS[1]]).norm(dim=-1)
        iod = iod[conf > 0] if bool((conf > 0).any()) else iod
        self.scale = max(float(iod.median()) / 100.0, 1e-3)  # pixels per residual unit
        usable = self.model.valid & ~held_out.to(device)
        self.w_face = landmark_weights(cfg.regions, device=device) * usable
        self.w_stable = stable_weights(device=device) * usable
        self.w_iris = iris_weights(device=device) * usable * cfg.iris_weight
        pairs = torch.tensor(EYELID_PAIRS, device=device)
        self.w_closure = cfg.eye_closure_weight * (usable[pairs[:, 0]] & usable[pairs[:, 1]]).float()  # [P]
        names = list(rig.expr_names)
        self.blink = torch.tensor([i for i, n in enumerate(names) if n in BLINK_NAMES], dtype=torch.long)
        self.not_blink = torch.tensor([i for i, n in enumerate(names) if n not in BLINK_NAMES], dtype=torch.long)
        if cfg.expr_bounds is None:
            self.bounded = not (names and all(n.startswith("expr") for n in names))
        else:
            self.bounded = bool(cfg.expr_bounds)
        if K_init is not None:
            f0 = 0.5 * (float(K_init[0, 0]) + float(K_init[1, 1]))
        else:
            f0 = 0.5 * max(width, height) / math.tan(math.radians(cfg.init_fov_deg) / 2.0)
        self.log_f0 = math.log(f0)
        self.T = target.shape[0]
        self._init_params(device)

    # -------------------------------------------------------------- parameters
    # The optimiser works on raw tensors in scaled units (value = raw * unit): a unit step of any
    # parameter moves the landmarks by about one residual unit (per frame for per-frame parameters,
    # over the whole sequence for the shared ones). This diagonal preconditioning is what lets
    # L-BFGS treat metres, radians and blend-shape coefficients alike.
    def _init_params(self, device) -> None:
        T, m = self.T, self.model
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        per_metre = 100.0 / self._iod_m()  # residual units per metre of motion at the face
        radius = 0.07  # metres: typical landmark distance from the head's rotation centre
        shared = math.sqrt(T)  # a shared parameter sees every frame
        w = self.w_face
        w_frac_iris = float(self.w_iris.sum() / (self.w_iris.sum() + w.sum()).clamp_min(1e-9))
        basis_rms = lambda basis: ((basis.pow(2).sum(1) * w[:, None]).sum(0)  # noqa: E731
                                   / w.sum().clamp_min(1e-9)).sqrt().clamp_min(1e-4)
        sens = {
            "shape": per_metre * basis_rms(self._landmark_basis(m.shape_basis)) * shared,
            "expr": per_metre * basis_rms(self._landmark_basis(m.blend_expr())),
            "root": torch.tensor(per_metre * radius * shared),
            "neck": torch.tensor(per_metre * radius),
            "jaw": torch.tensor(per_metre * 0.05 * 0.6),
            "eyes": torch.tensor(per_metre * 0.012 * max(math.sqrt(w_frac_iris), 0.05)),
            "transl": torch.tensor([per_metre, per_metre, per_metre * radius / self._depth_guess()]),
            "log_f": torch.tensor(per_metre * radius * shared),
            "offsets": torch.tensor(per_metre * shared / math.sqrt(NUM_LANDMARKS)),
        }
        self.unit = {k: (1.0 / v).to(device=device, dtype=torch.float32) for k, v in sens.items()}
        self.raw = {
            "shape": z(m.num_shape), "expr": z(T, m.num_expr), "root": z(3), "neck": z(T, 3), "jaw": z(T, 3),
            "eyes": z(T, 2, 3), "transl": z(T, 3), "log_f": z(()), "offsets": z(NUM_LANDMARKS, 3),
        }
        # translation in closed form from the stable landmarks: depth from their spread, x/y from the centroid
        rest = m.rest_landmarks(self.shape)[list(STABLE)]  # [K,3]
        pts = self.target[:, list(STABLE)]  # [T,K,2]
        c_img = pts.mean(1)  # [T,2]
        spread_img = (pts - c_img[:, None]).norm(dim=-1).mean(1).clamp_min(1e-3)  # [T]
        c_rest = rest.mean(0)
        spread_rest = (rest[:, :2] - c_rest[:2]).norm(dim=-1).mean()
        f = math.exp(self.log_f0)
        depth = f * spread_rest / spread_img  # [T]
        x = (c_img[:, 0] - self.centre[0]) * depth / f
        y = -(c_img[:, 1] - self.centre[1]) * depth / f
        start = _bridge(torch.stack([x, y, -depth], -1), self.conf > 0)  # failed frames: from their neighbours
        # the optimised translation is the world position of this anchor (see LandmarkRig)
        self.anchor = c_rest
        self.raw["transl"] = start / self.unit["transl"]

    def _iod_m(self) -> float:
        """The rig's inter-ocular distance (outer eye corners), metres."""
        rest = self.model.rest_landmarks(torch.zeros(self.model.num_shape, device=self.target.device))
        return float((rest[EYE_CORNERS[0]] - rest[EYE_CORNERS[1]]).norm())

    def _depth_guess(self) -> float:
        """Rough camera distance (metres) from the focal guess and the detected inter-ocular distance."""
        return math.exp(self.log_f0) * self._iod_m() / (100.0 * self.scale)

    def _landmark_basis(self, corner_basis: Tensor) -> Tensor:  # [C,3,K] -> [L,3,K]
        return (corner_basis.reshape(-1, 3, 3, corner_basis.shape[-1]) * self.model.bary[:, :, None, None]).sum(1)

    def value(self, name: str) -> Tensor:
        return self.raw[name] * self.unit[name]

    shape = property(lambda self: self.value("shape"))
    expr = property(lambda self: self.value("expr"))
    root = property(lambda self: self.value("root"))
    neck = property(lambda self: self.value("neck"))
    jaw = property(lambda self: self.value("jaw"))
    eyes = property(lambda self: self.value("eyes"))
    transl = property(lambda self: self.value("transl"))
    offsets = property(lambda self: self.value("offsets"))
    log_f = property(lambda self: self.log_f0 + self.value("log_f"))

    def tensors(self) -> dict[str, Tensor]:
        return self.raw

    def pose(self, index: slice) -> Tensor:  # -> [B,5,3]
        neck = self.neck[index]
        b = neck.shape[0]
        return torch.cat([self.root.expand(b, 1, 3), neck[:, None], self.jaw[index, None], self.eyes[index]], 1)

    def forward(self, index: slice, with_offsets: bool = False, stable: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """-> (projected landmarks [B,478,2] (or [B,len(STABLE),2] when `stable`), head rotation [B,3,3],
        rig translation [B,3]) of the frames in `index`."""
        model = self.model_stable if stable else self.model
        offsets = self.offsets if with_offsets else None
        lm, head_rot, transl = model(self.shape, self.expr[index], self.pose(index), self.transl[index],
                                     offsets, anchor=self.anchor)
        return project(lm, self.log_f.exp(), self.centre), head_rot, transl

    # -------------------------------------------------------------- losses
    def regularisers(self, stage: str) -> dict[str, Tensor]:
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        mean_sq = lambda x, w=1.0: (x.pow(2) * x.new_tensor(w)).reshape(x.shape[0], -1).sum(-1).mean()  # noqa: E731
        out["neck_prior"] = cfg.neck_prior * mean_sq(self.neck)
        out["smooth_neck"] = smoothness(self.neck, *cfg.smooth_neck)
        out["smooth_transl"] = smoothness(self.transl, *cfg.smooth_transl)
        if cfg.optimize_focal:
            out["focal_prior"] = cfg.focal_prior * (self.log_f - self.log_f0) ** 2
        if stage != "rigid":
            out["shape_prior"] = cfg.shape_prior * self.shape.pow(2).sum()
            out["expr_prior"] = cfg.expr_prior * mean_sq(self.expr)
            out["jaw_prior"] = mean_sq(self.jaw, list(cfg.jaw_prior))
            out["smooth_expr"] = smoothness(self.expr[:, self.not_blink.to(self.expr.device)], *cfg.smooth_expr)
            if self.blink.numel():
                out["smooth_blink"] = smoothness(self.expr[:, self.blink.to(self.expr.device)], *cfg.smooth_blink)
            out["smooth_jaw"] = smoothness(self.jaw, *cfg.smooth_jaw)
            if self.bounded and self.expr.numel():
                excess = torch.relu(-self.expr) + torch.relu(self.expr - 1.0)
                out["expr_bounds"] = cfg.bounds_weight * mean_sq(excess)
        if stage == "full":
            out["eye_prior"] = mean_sq(self.eyes, list(cfg.eye_prior))
            out["vergence_prior"] = cfg.vergence_prior * mean_sq(self.eyes[:, 0] - self.eyes[:, 1])
            out["smooth_eyes"] = smoothness(self.eyes, *cfg.smooth_eyes)
            if cfg.refine_embedding:
                out["embedding_prior"] = cfg.embedding_prior * self.offsets.pow(2).sum(-1).mean()
        return out

    def stage_weights(self, stage: str) -> Tensor:  # -> [478]
        if stage == "rigid":
            return self.w_stable
        if stage == "shape":
            return self.w_face
        return self.w_face + self.w_iris

    def closure_value(self, stage: str, free: list[Tensor], record: dict, backward: bool = True) -> float:
        """Loss of the whole sequence; gradients of `free` accumulated chunk by chunk (when `backward`)."""
        for p in free:
            p.grad = None
        w = self.stage_weights(stage)
        norm = float(self.conf.sum()) * float(w.sum())
        data_total = 0.0
        step = max(int(self.cfg.batch_frames), 1)
        with_offsets = stage == "full" and self.cfg.refine_embedding
        for s in range(0, self.T, step):
            idx = slice(s, min(s + step, self.T))
            if stage == "rigid":
                pred, _, _ = self.forward(idx, stable=True)
                target, wl = self.target[idx][:, self.stable], w[self.stable]
            else:
                pred, _, _ = self.forward(idx, with_offsets)
                target, wl = self.target[idx], w
            loss = reprojection_loss(pred, target, wl, self.conf[idx], self.scale, self.cfg.huber_delta, norm)
            if stage != "rigid" and self.cfg.eye_closure_weight > 0:
                loss = loss + eye_closure_loss(pred, target, self.w_closure, self.conf[idx], self.scale, norm)
            if backward:
                loss.backward()
            data_total += float(loss.detach())
        regs = self.regularisers(stage)
        reg_total = sum(regs.values())
        if backward and isinstance(reg_total, Tensor) and reg_total.requires_grad:
            reg_total.backward()
        record.clear()
        record["landmarks"] = data_total
        record.update({k: float(v.detach()) for k, v in regs.items()})
        return data_total + float(reg_total.detach() if isinstance(reg_total, Tensor) else reg_total)


_STAGE_PARAMS = {
    "rigid": ("root", "neck", "transl", "log_f"),
    "shape": ("root", "neck", "transl", "log_f", "shape", "expr", "jaw"),
    "full": ("root", "neck", "transl", "log_f", "shape", "expr", "jaw", "eyes"),
}


def _lr(name: str, cfg: FitConfig) -> float:
    if name in ("root", "neck", "jaw", "eyes"):
        return cfg.lr_rotation
    if name == "transl":
        return cfg.lr_translation
    if name == "offsets":
        return cfg.lr_coeffs * 0.01
    return cfg.lr_coeffs


def _run_stage(prob: _Problem, stage: str, iters: int, cfg: FitConfig, progress) -> tuple[dict, list]:
    names = list(_STAGE_PARAMS[stage])
    if not cfg.optimize_focal:
        names.remove("log_f")
    if stage == "full" and cfg.refine_embedding:
        names.append("offsets")
    tensors = prob.tensors()
    for t in tensors.values():
        t.requires_grad_(False)
    free = [tensors[n].requires_grad_(True) for n in names]
    record: dict = {}
    history: list[float] = []
    if iters <= 0:
        return record, history
    if cfg.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(free, lr=1.0, max_iter=iters, max_eval=int(iters * 1.5) + 1, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            value = prob.closure_value(stage, free, record)
            history.append(value)
            if progress is not None:
                progress(stage, min(len(history), iters), iters)
            return value

        opt.step(closure)
    else:
        opt = torch.optim.Adam([{"params": [tensors[n]], "lr": _lr(n, cfg)} for n in names])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters, eta_min=0.0)
        for i in range(iters):
            history.append(prob.closure_value(stage, free, record))
            opt.step()
            sched.step()
            if progress is not None:
                progress(stage, i + 1, iters)
    for t in free:
        t.requires_grad_(False)
    with torch.no_grad():  # the record of the final parameters
        prob.closure_value(stage, [], record, backward=False)
    return dict(record), history


def fit_sequence(rig: HeadRig,
                 landmarks: Tensor,  # [T,478,2] detected landmarks, pixels (pixel centres at +0.5)
                 confidence: Tensor,  # [T] per-frame detection confidence (0: failed, ignored by the data term)
                 image_size: tuple[int, int],  # (width, height) of the images the landmarks live in
                 *, K_init: Optional[Tensor] = None,  # [3,3] initial intrinsics (only its focal is used)
                 cv_mask: Optional[Tensor] = None,  # [478] bool, landmarks left out of the fit
                 config: Optional[FitConfig] = None, device=None,
                 progress: Optional[Callable[[str, int, int], None]] = None) -> FitResult:
    """Fit the rig to a landmark sequence; see the module doc for the model, camera and stages.

    `progress(stage, step, steps)` is called during the fit (stage: "rigid", "shape", "full").
    """
    cfg = config or FitConfig()
    start = time.perf_counter()
    landmarks = torch.as_tensor(landmarks)
    confidence = torch.as_tensor(confidence)
    width, height = _check_inputs(rig, landmarks, confidence, image_size, K_init, cv_mask)
    device = landmarks.device if device is None else torch.device(device)
    target = landmarks.to(device=device, dtype=torch.float32)
    conf = confidence.to(device=device, dtype=torch.float32)
    held = torch.zeros(NUM_LANDMARKS, dtype=torch.bool, device=device) if cv_mask is None else cv_mask.to(device)
    prob = _Problem(rig, target, conf, width, height, K_init, held, cfg, device)
    losses, history = {}, {}
    for stage, iters in (("rigid", cfg.rigid_iters), ("shape", cfg.shape_iters), ("full", cfg.full_iters)):
        losses[stage], history[stage] = _run_stage(prob, stage, iters, cfg, progress)
    with torch.no_grad():
        use_off = cfg.refine_embedding
        proj, head_rot, transl = [], [], []
        for s in range(0, prob.T, max(int(cfg.batch_frames), 1)):
            p, r, t = prob.forward(slice(s, min(s + cfg.batch_frames, prob.T)), use_off)
            proj.append(p)
            head_rot.append(r)
            transl.append(t)
        T = prob.T
        params = RigParams(shape=prob.shape.clone(), expr=prob.expr.clone(),
                           global_rot=prob.root.expand(T, 3).clone(), neck=prob.neck.clone(),
                           jaw=prob.jaw.clone(), eyes=prob.eyes.clone(), transl=torch.cat(transl))
        focal = prob.log_f.exp()
        return FitResult(params=params, K=make_K(focal, width, height),
                         viewmat=torch.tensor(VIEWMAT, device=device), projected=torch.cat(proj),
                         head_rotation=torch.cat(head_rot), held_out=held.clone(), losses=losses,
                         history=history, embedding_offsets=prob.offsets.clone() if use_off else None,
                         seconds=time.perf_counter() - start)
