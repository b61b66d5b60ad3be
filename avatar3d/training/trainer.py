"""`train_gaussians`: optimise a rig-bound Gaussian avatar on an avatar directory's frames.

Data: `tracking.npz` (camera, per-frame rig parameters), `data/frames/` and, when present,
`data/masks/` (ground truth composited over a solid background). Gaussians start on the rig's renderable
surface in the tracked identity's neutral pose and are optimised with Adam (3DGS / GaussianAvatars rates),
loss L1 + D-SSIM with more weight on mouth and eyes, binding regularisers, optional LPIPS; the training
frames' rig parameters are refined jointly. Density control keeps the binding. Checkpoints make the run
resumable; the results are written atomically at the end.
"""
from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.gaussians.avatar_render import binding_faces, render_avatar
from avatar3d.gaussians.binding import triangle_frames
from avatar3d.gaussians.colour_init import pick_views, triangle_colours
from avatar3d.gaussians.expression import OFFSET_NAMES, ExpressionBasis
from avatar3d.gaussians.densify import DensifyStats, densify_and_prune, rebuild, reset_opacity
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.gaussians.store import encode_gaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.refined import FREE_KEYS, read_split, save_refined
from avatar3d.head.rig import HeadRig, RigParams
from avatar3d.head.torso import avatar_rig
from avatar3d.io.atomic import atomic_write_bytes
from avatar3d.io.avatar_dir import FRAME_PATTERN, AvatarPaths, check_rig, default_split, read_manifest, write_manifest
from avatar3d.render.metrics import lpips_available, lpips_dir, lpips_or_none, psnr
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training import checkpoint as ckpt_io
from avatar3d.training.config import TrainConfig
from avatar3d.training.frame_params import FrameAdam, FrameParams
from avatar3d.training.prune import blend_statistics, contributions, faint_kept, prune_least
from avatar3d.training.torso_continue import continuation_sources, continue_torso, shown
from avatar3d.training.losses import binding_regularizer, photometric_loss, region_weight_map, surface_regularizer


@dataclass
class TrainResult:
    gaussians_path: Path
    refined_path: Path
    num_gaussians: int
    steps: int
    """Steps run in this call (after a resume: from the checkpoint's step)."""
    seconds: float
    seconds_per_step: float
    train_psnr: float
    """Mean PSNR (dB) of the rendered training frames over the last steps (full frame, solid background)."""
    loss: float
    resumed_from: Optional[int]


@dataclass
class TrainingFrames:
    indices: list[int]  # frame numbers in the sequence
    images: Tensor  # [T,R,R,3] uint8 ground truth: composited over the background, or the real frames (portrait)
    K: Tensor  # [3,3] intrinsics at the training resolution
    viewmat: Tensor  # [4,4]
    resolution: int
    has_masks: bool
    persons: Optional[Tensor] = None  # [T,R,R] uint8 whole-person masks (portrait), else None
    backdrop: Optional[Tensor] = None  # [R,R,3] float: the plate as this camera sees it (portrait), else None


# ---------------------------------------------------------------------------------------------- data
def _read_image(path: Path, resolution: int, mode: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InputError(f"{path} is missing; the avatar's stored frames are incomplete — re-run `avatar3d enroll`")
    image = Image.open(path).convert(mode)
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BILINEAR if mode == "L" else Image.LANCZOS)
    return np.asarray(image)


def load_frames(paths: AvatarPaths, seq: TrackedSequence, indices: Sequence[int], resolution: int,
                background: Sequence[float], portrait: bool = False) -> TrainingFrames:
    """Training frames at `resolution` (K scaled with them), composited over `background` where masks exist.

    portrait: the whole person (torso and clothes) is the avatar: with a background plate the frames are the real
    ones and `backdrop` the plate as the training camera sees it; without one the person is composited over
    `background`. Masks made before the person channel existed train the head alone."""
    masks_present = all((paths.masks / FRAME_PATTERN.format(i)).is_file() for i in indices)
    K = torch.as_tensor(seq.K, dtype=torch.float32).clone()
    K[:2] *= resolution / float(seq.resolution)  # pixel centres at +0.5: scaling the image scales u, v exactly
    if portrait and masks_present:
        persons = _person_masks(paths, indices, resolution)
        if persons is not None:
            return _portrait_frames(paths, seq, indices, resolution, background, persons, K)
    if not masks_present:
        warnings.warn(f"no foreground masks in {paths.masks}: training on the whole frame (background included); "
                      "run the segmentation stage of `avatar3d enroll` for a cleaner avatar", RuntimeWarning,
                      stacklevel=3)
    bg = np.asarray(background, dtype=np.float32)
    images = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
    for n, i in enumerate(indices):
        rgb = _read_image(paths.frames / FRAME_PATTERN.format(i), resolution, "RGB").astype(np.float32) / 255.0
        if masks_present:
            m = _read_image(paths.masks / FRAME_PATTERN.format(i), resolution, "L").astype(np.float32)[..., None] / 255.0
            rgb = rgb * m + bg * (1 - m)
        images[n] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return TrainingFrames(list(indices), torch.from_numpy(images), K,
                          torch.as_tensor(seq.viewmat, dtype=torch.float32), resolution, masks_present)


def _person_masks(paths: AvatarPaths, indices: Sequence[int], resolution: int) -> Optional[Tensor]:
    """[T,R,R] uint8 whole-person masks, or None when the masks carry no person channel."""
    from PIL import Image

    from avatar3d.training.masks import read_person

    out = np.empty((len(indices), resolution, resolution), np.uint8)
    for n, i in enumerate(indices):
        person = read_person(paths.masks / FRAME_PATTERN.format(i))
        if person is None:
            return None
        if person.shape != (resolution, resolution):
            person = np.asarray(Image.fromarray(person).resize((resolution, resolution), Image.BILINEAR))
        out[n] = person
    return torch.from_numpy(out)


def _portrait_frames(paths: AvatarPaths, seq: TrackedSequence, indices: Sequence[int], resolution: int,
                     background: Sequence[float], persons: Tensor, K: Tensor) -> TrainingFrames:
    from avatar3d.render.plate import load_plate

    plate = load_plate(paths.root)
    viewmat = torch.as_tensor(seq.viewmat, dtype=torch.float32)
    images = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
    bg = np.asarray(background, dtype=np.float32)
    for n, i in enumerate(indices):
        rgb = _read_image(paths.frames / FRAME_PATTERN.format(i), resolution, "RGB")
        if plate is None:  # no room to stand in: the person over the solid colour
            m = persons[n].numpy().astype(np.float32)[..., None] / 255.0
            rgb = np.clip(np.rint((rgb / 255.0 * m + bg * (1 - m)) * 255.0), 0, 255).astype(np.uint8)
        images[n] = rgb
    backdrop = None
    if plate is not None:
        backdrop = torch.from_numpy(plate.render(K, viewmat, resolution, resolution).astype(np.float32) / 255.0)
    return TrainingFrames(list(indices), torch.from_numpy(images), K, viewmat, resolution, True, persons, backdrop)


def face_split(seq: TrackedSequence, holdout: float) -> tuple[list[int], list[int]]:
    """(training frames, held-out frames) of `default_split`, both without the frames where no face was
    detected: their images show no face, and training on them paints the head from interpolated guesses."""
    train = default_split(seq.num_frames, holdout)
    faceless = set(seq.faceless_frames())
    held = [i for i in range(len(train), seq.num_frames) if i not in faceless]
    train = [i for i in train if i not in faceless]
    if not train:
        raise InputError(f"no face was detected in any of the first {len(default_split(seq.num_frames, holdout))} "
                         "frames, so there is nothing to train on; use a video where the face is visible")
    return train, held


# ---------------------------------------------------------------------------------------------- setup
def _region_vertex_groups(rig: HeadRig) -> list[Tensor]:
    """Vertex indices of the mouth and of each eye (for the extra loss weight); empty groups dropped."""
    mouth = rig.region("lips") | rig.region("mouth_interior") | rig.region("teeth")
    groups = [mouth, rig.region("eyeball_left"), rig.region("eyeball_right")]
    return [torch.nonzero(g).flatten() for g in groups if bool(g.any())]


def _region_boxes(vertices: Tensor, groups: list[Tensor], K: Tensor, viewmat: Tensor,
                  margin: float = 0.25) -> list[tuple[float, float, float, float]]:
    # vertices: [V,3] posed; K: [3,3]; viewmat: [4,4]
    boxes = []
    with torch.no_grad():
        for idx in groups:
            p = vertices[idx] @ viewmat[:3, :3].T + viewmat[:3, 3]
            uv = (p @ K.T)[:, :2] / p[:, 2:3].clamp_min(1e-6)
            lo, hi = uv.min(0).values, uv.max(0).values
            pad = (hi - lo) * margin
            boxes.append(tuple(float(v) for v in (lo[0] - pad[0], lo[1] - pad[1], hi[0] + pad[0], hi[1] + pad[1])))
    return boxes


def _region_weights(rig: HeadRig, frame_params: FrameParams, frames: TrainingFrames, extra: float, K: Tensor,
                    viewmat: Tensor) -> dict[int, Tensor]:
    """Frame -> [H,W] loss weight (`extra` on the mouth and eye boxes), from the tracked pose of each frame
    (refinement moves the rig by a pixel or two at most: the boxes have a margin)."""
    groups = [g.to(K.device) for g in _region_vertex_groups(rig)]
    if extra == 1.0 or not groups:
        return {}
    out = {}
    r = frames.resolution
    with torch.no_grad():
        for t in frames.indices:
            vertices = pose_vertices(rig, frame_params.tracked_frame(t))[0]
            boxes = _region_boxes(vertices, groups, K, viewmat)
            out[t] = region_weight_map(boxes, r, r, extra, vertices)
    return out


def _initial_colours(rig: HeadRig, faces: Tensor, frame_params: FrameParams, frames: TrainingFrames,
                     views: int, max_resolution: int = 256) -> Tensor:
    """[F,3] per-triangle colour from `views` training frames (the most turned ones first), where each triangle
    is the visible surface; unseen triangles take their seen neighbours' colour (see gaussians.colour_init)."""
    with torch.no_grad():
        yaw = torch.stack([(frame_params.tracked_global_rot[t] + frame_params.tracked_neck[t])[1]
                           for t in frames.indices]).cpu()
        picks = pick_views(yaw, max(1, views))
        r = min(frames.resolution, max_resolution)
        K = frames.K.clone()
        K[:2] *= r / float(frames.resolution)
        posed, images = [], []
        for pick in picks:
            posed.append(pose_vertices(rig, frame_params.tracked_frame(frames.indices[pick]))[0])
            image = frames.images[pick].float().permute(2, 0, 1)[None] / 255.0
            if r != frames.resolution:
                image = torch.nn.functional.interpolate(image, size=(r, r), mode="area")
            images.append(image[0].permute(1, 2, 0).to(posed[-1].device))
        device = posed[0].device
        colours, _ = triangle_colours(posed, faces, images, K.to(device), frames.viewmat.to(device))
    return colours


def _optimizer(gaussians: BoundGaussians, config: TrainConfig) -> torch.optim.Adam:
    sh = gaussians.sh
    # Per-parameter rates as 3DGS/GaussianAvatars; the SH bands above DC share the tensor of the DC term, so
    # their lower rate is applied after each step (Adam's update does not scale with the gradient).
    groups = [
        {"name": "local_means", "params": [gaussians.local_means], "lr": config.lr_position},
        {"name": "log_scales", "params": [gaussians.log_scales], "lr": config.lr_scale},
        {"name": "quats", "params": [gaussians.quats], "lr": config.lr_rotation},
        {"name": "opacity_logits", "params": [gaussians.opacity_logits], "lr": config.lr_opacity},
        {"name": "sh", "params": [sh], "lr": config.lr_sh},
    ]
    if gaussians.expression is not None:
        share = config.lr_expression
        groups += [{"name": "expr_means", "params": [gaussians.expr_means], "lr": share * config.lr_position},
                   {"name": "expr_colours", "params": [gaussians.expr_colours], "lr": share * config.lr_sh},
                   {"name": "expr_opacity", "params": [gaussians.expr_opacity], "lr": share * config.lr_opacity}]
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)


def _position_lr(config: TrainConfig, step: int) -> float:
    t = min(1.0, step / max(1, config.iterations))
    return math.exp((1 - t) * math.log(config.lr_position) + t * math.log(config.lr_position_final))


def _with_expression(gaussians: BoundGaussians, frame_params: FrameParams, frames_train: list[int],
                     config: TrainConfig) -> BoundGaussians:
    """Fresh Gaussians with the basis of the training frames' tracked faces (`expression_components` > 0; none
    where those faces do not vary, e.g. a single frame)."""
    if config.expression_components <= 0:
        return gaussians
    index = torch.as_tensor(frames_train, device=frame_params.expr.device)
    tracked = RigParams(frame_params.shape, *(getattr(frame_params, f"tracked_{k}")[index] for k in FREE_KEYS))
    basis = ExpressionBasis.fit(tracked, config.expression_components)
    return gaussians.with_expression(basis.to(gaussians.local_means.device)) if basis.size else gaussians


def _active_sh(config: TrainConfig, step: int) -> int:
    return min(config.sh_degree, step // max(1, config.sh_increase_every))


# ---------------------------------------------------------------------------------------------- checkpoints
def _state_tensors(gaussians: BoundGaussians, frame_params: FrameParams, frame_opt: Optional[FrameAdam],
                   stats: DensifyStats, generator: torch.Generator) -> dict[str, Tensor]:
    tensors = {f"g.{k}": v for k, v in gaussians.tensors().items()}
    tensors.update({f"p.{k}": getattr(frame_params, k).detach().cpu() for k in FREE_KEYS})
    tensors["s.grad_accum"] = stats.grad_accum.cpu()
    tensors["s.count"] = stats.count.cpu()
    tensors["rng"] = generator.get_state()
    if frame_opt is not None:
        tensors.update(frame_opt.tensors())
    return tensors


def _lpips_loss(weight: float):
    """The LPIPS term's function `(render [H,W,3], target [H,W,3]) -> []` (the metric's network), or None when
    off or when its weights are not on disk (with a warning: training goes on without it)."""
    if weight <= 0:
        return None
    if not lpips_available():
        warnings.warn(f"LPIPS is off: no LPIPS weights in {lpips_dir()} (see README: metrics); training continues "
                      "without the term", RuntimeWarning, stacklevel=3)
        return None
    return lpips_or_none


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class _State:
    """What the loop changes, and what a checkpoint holds."""

    gaussians: BoundGaussians
    frame_params: FrameParams
    optimizer: torch.optim.Adam
    frame_opt: Optional[FrameAdam]
    stats: DensifyStats
    generator: torch.Generator
    start_step: int

    def tensors(self) -> dict[str, Tensor]:
        return _state_tensors(self.gaussians, self.frame_params, self.frame_opt, self.stats, self.generator)


@dataclass
class _Scene:
    """The fixed inputs of the loop: frames, camera, rig and its rest geometry."""

    frames: TrainingFrames
    K: Tensor  # [3,3] at the training resolution
    viewmat: Tensor  # [4,4]
    background: Tensor  # [3]
    backdrop: Optional[Tensor]  # [R,R,3] the plate behind a portrait (renders are composited over it), else None
    faces: Tensor  # [F',3] binding triangles
    rest_vertices: Tensor  # [V,3] the tracked identity in the neutral pose
    tri_scale: Tensor  # [F'] triangle scales at rest (densification's size reference)
    extent: float  # the head's radius at rest, metres
    on_torso: Tensor  # [F'] bool the binding triangles of the torso (none for a head)


def train_gaussians(avatar_dir: Path, config: TrainConfig, *, device="cpu", resume: bool = False,
                    progress: bool = True, frames_train: Optional[Sequence[int]] = None,
                    rig: Optional[HeadRig] = None, holdout: float = 0.2) -> TrainResult:
    """Train the avatar in `avatar_dir` and write `gaussians.safetensors` and `refined.npz` there.

    frames_train: the frame numbers to train on (default: those of an earlier run's refined.npz, else the
    first 1 - `holdout` of the video). rig: the head model (default: the one named in the manifest, checked).
    Torch's deterministic kernels are on throughout: a seed gives the same avatar run after run (at one thread count).
    """
    from avatar3d.runtime import deterministic_torch

    with deterministic_torch():
        return _train(avatar_dir, config, device, resume, progress, frames_train, rig, holdout)


def _train(avatar_dir: Path, config: TrainConfig, device, resume: bool, progress: bool,
           frames_train: Optional[Sequence[int]], rig: Optional[HeadRig], holdout: float) -> TrainResult:
    from avatar3d.progress import progress_bar
    from avatar3d.runtime import adapt_threads

    start_time = time.time()
    paths = AvatarPaths(Path(avatar_dir))
    device = torch.device(device)
    rig = avatar_rig(_checked_rig(paths, rig), paths.root).to(device)
    seq = TrackedSequence.load(paths.tracking)
    if frames_train is None:
        frames_train = read_split(paths.refined) or face_split(seq, holdout)[0]
    frames_train = sorted(int(i) for i in frames_train)
    _check_settings(config, frames_train, seq.num_frames)
    if device.type == "cpu":  # threads for the free cores (avatar3d/runtime.py); the progress bar keeps adapting
        adapt_threads(force=True)
    generator = torch.Generator().manual_seed(config.seed)
    tracked = seq.params(device=device)
    scene = _scene(paths, seq, tracked.shape, rig, frames_train, config, device)
    frame_params = FrameParams(tracked).to(device)
    checkpoint = ckpt_io.latest_checkpoint(paths.checkpoints) if resume else None
    state = _start(checkpoint, rig, scene, frame_params, generator, frames_train, config, paths, device)

    lpips_fn = _lpips_loss(config.lambda_lpips)
    weights = _region_weights(rig, frame_params, scene.frames, config.mouth_eye_weight, scene.K, scene.viewmat)
    recent_psnr: list[float] = []
    loss_value = float("nan")
    bar = progress_bar(config.iterations, "train gaussians", unit="step", initial=state.start_step,
                       disable=not progress, dynamic_ncols=True)
    loop_start = time.time()
    # A fresh run leaves an earlier run's checkpoints in place (still resumable after a kill) until it has
    # written one of its own; then they go, so they are never mixed with this run's (ckpt_io.save_checkpoint).
    run_id = checkpoint.info.get("run") if checkpoint is not None else None
    info = {"frames_train": frames_train, "config": dataclasses.asdict(config), "run": run_id or uuid.uuid4().hex}
    for step in range(state.start_step + 1, config.iterations + 1):
        pick = int(torch.randint(len(frames_train), (1,), generator=generator))
        t = frames_train[pick]
        target = scene.frames.images[pick].to(device).float() / 255.0
        person = scene.frames.persons[pick].to(device).float() / 255.0 if scene.frames.persons is not None else None
        refining = state.frame_opt is not None and step > config.refine_from
        out, image, loss = _loss(state, rig, scene, t, target, person, weights.get(t), step, refining, lpips_fn,
                                 config)
        loss.backward()
        _optimise(state, t, step, refining, config)
        _density_control(state, out, scene, step, config)
        if step == min(config.densify_until, config.iterations):
            _thin_torso(state, scene, rig, frames_train, config)

        loss_value = float(loss.detach())
        recent_psnr = (recent_psnr + [float(psnr(image.detach(), target))])[-50:]
        bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{np.mean(recent_psnr):.2f}",
                        n=state.gaussians.num_gaussians, refresh=False)
        bar.update(1)
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 and step < config.iterations:
            ckpt_io.save_checkpoint(paths.checkpoints, step, state.tensors(),
                                    {"gaussians": state.optimizer.state_dict()}, info)
    bar.close()
    steps_run = config.iterations - state.start_step
    loop_seconds = time.time() - loop_start
    kept = _final_gaussians(state, scene, rig, frames_train, config)
    _write_results(paths, kept, state, scene, rig, frames_train, info, config)
    result = TrainResult(paths.gaussians, paths.refined, kept.num_gaussians, steps_run,
                         time.time() - start_time, loop_seconds / max(1, steps_run),
                         float(np.mean(recent_psnr)) if recent_psnr else float("nan"), loss_value,
                         checkpoint.step if checkpoint is not None else None)
    _record(paths, config, result)
    return result


def _checked_rig(paths: AvatarPaths, rig: Optional[HeadRig]) -> HeadRig:
    """`rig`, or the head model the manifest names; refused when it is not the one the avatar was made with."""
    manifest = read_manifest(paths.root)
    if rig is None:
        from avatar3d.head.registry import load_rig

        rig = load_rig(manifest.rig_name)
    check_rig(manifest, rig)
    return rig


def _check_settings(config: TrainConfig, frames_train: list[int], num_frames: int) -> None:
    if not frames_train or frames_train[0] < 0 or frames_train[-1] >= num_frames:
        raise InputError(f"frames_train must be frame numbers in 0..{num_frames - 1} (got {len(frames_train)} "
                         f"frames, range {frames_train[:1]}..{frames_train[-1:]}); pass indices of tracked frames")
    if config.resolution <= 0 or config.iterations <= 0:
        raise InputError("resolution and iterations must be positive; fix the preset's train section")
    if not 0.0 < config.init_opacity < 1.0 or config.init_views < 1:
        raise InputError(f"init_opacity={config.init_opacity} must lie strictly between 0 and 1 and init_views="
                         f"{config.init_views} must be at least 1; fix the preset's train section (0.1 and 6 are "
                         "usual)")
    if not 0.0 <= config.torso_prune_share < 1.0:
        raise InputError(f"torso_prune_share={config.torso_prune_share} must lie in [0, 1); e.g. "
                         "--train.torso-prune-share 0.3 (0 keeps every torso Gaussian)")
    if not 0.0 <= config.prune_share < 1.0 or config.prune_views < 1:
        raise InputError(f"prune_share={config.prune_share} must lie in [0, 1) and prune_views={config.prune_views} "
                         "must be at least 1; e.g. --train.prune-share 0.4 (0 keeps every Gaussian)")


def _scene(paths: AvatarPaths, seq: TrackedSequence, shape: Tensor, rig: HeadRig, frames_train: list[int],
           config: TrainConfig, device: torch.device) -> _Scene:
    # shape: the tracked identity coefficients (RigParams.shape of the sequence)
    frames = load_frames(paths, seq, frames_train, config.resolution, config.background,
                         portrait="torso" in rig.meta)
    faces = binding_faces(rig)
    neutral = RigParams.zeros(rig, 1, device=device)
    neutral.shape = shape
    with torch.no_grad():
        rest_vertices = pose_vertices(rig, neutral)[0]
    _, _, tri_scale = triangle_frames(rest_vertices, faces)
    head = rest_vertices[~rig.region("torso")]  # densification's size reference is the head, torso or not
    extent = float((head - head.mean(0)).norm(dim=-1).max())
    backdrop = frames.backdrop.to(device) if frames.backdrop is not None else None
    return _Scene(frames, frames.K.to(device), frames.viewmat.to(device),
                  torch.tensor(config.background, dtype=torch.float32, device=device), backdrop, faces,
                  rest_vertices, tri_scale, extent, rig.region("torso")[faces].all(dim=1))


def _start(checkpoint: Optional[ckpt_io.Checkpoint], rig: HeadRig, scene: _Scene, frame_params: FrameParams,
           generator: torch.Generator, frames_train: list[int], config: TrainConfig, paths: AvatarPaths,
           device: torch.device) -> _State:
    """The loop's state: restored from `checkpoint` (refused when it was made with other frames or settings),
    or fresh Gaussians on the rest surface coloured from the frames."""
    if checkpoint is not None:
        gaussians = BoundGaussians.from_tensors({k[2:]: v for k, v in checkpoint.tensors.items()
                                                 if k.startswith("g.")}).to(device)
        with torch.no_grad():
            for k in FREE_KEYS:
                getattr(frame_params, k).copy_(checkpoint.tensors[f"p.{k}"])
        generator.set_state(checkpoint.tensors["rng"])
        if checkpoint.info.get("frames_train") not in (None, frames_train):
            raise InputError(f"the checkpoint in {paths.checkpoints} was trained on other frames; resume with the "
                             "same split or train from scratch without --resume")
        _check_same_settings(checkpoint.info.get("config"), config, paths)
    else:
        init_gen = torch.Generator(device=device).manual_seed(config.seed)
        colours = _initial_colours(rig, scene.faces, frame_params, scene.frames, config.init_views)
        on_torso = scene.on_torso
        density = torch.where(on_torso, config.torso_density, 1.0) if bool(on_torso.any()) else None
        gaussians = BoundGaussians.on_surface(scene.rest_vertices, scene.faces, config.init_gaussians,
                                              sh_degree=config.sh_degree, colours=colours,
                                              opacity=config.init_opacity, generator=init_gen,
                                              density=density).to(device)
        gaussians = _with_expression(gaussians, frame_params, frames_train, config)
    optimizer = _optimizer(gaussians, config)
    frame_opt = FrameAdam(frame_params, config.lr_refine_expr, config.lr_refine_pose, config.lr_refine_transl) \
        if config.refine_params else None
    stats = DensifyStats(gaussians.num_gaussians, device)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optim["gaussians"])
        if frame_opt is not None:
            frame_opt.load_tensors(checkpoint.tensors)
        stats.grad_accum = checkpoint.tensors["s.grad_accum"].to(device)
        stats.count = checkpoint.tensors["s.count"].to(device)
    return _State(gaussians, frame_params, optimizer, frame_opt, stats, generator,
                  checkpoint.step if checkpoint is not None else 0)


def _loss(state: _State, rig: HeadRig, scene: _Scene, t: int, target: Tensor, person: Optional[Tensor],
          weight: Optional[Tensor], step: int, refining: bool, lpips_fn, config: TrainConfig):
    # target: [R,R,3]; person: [R,R] the whole-person mask of a portrait, else None
    """(the render of frame `t`, its picture over the background or plate, the loss): photometric + binding
    regularisers (+ the refinement prior, LPIPS; for a portrait the coverage against the person mask)."""
    fp = state.frame_params
    params_t = fp.frame(t) if refining else fp.frame(t).map(torch.Tensor.detach)
    res = config.resolution
    out = render_avatar(state.gaussians, rig, scene.faces, params_t, scene.K, scene.viewmat, res, res,
                        None if scene.backdrop is not None else scene.background, sh_degree=_active_sh(config, step))
    image = out.image if scene.backdrop is None else out.image + (1.0 - out.alpha) * scene.backdrop
    loss = photometric_loss(image, target, weight, config.lambda_dssim)
    if person is not None and config.lambda_alpha > 0:
        loss = loss + config.lambda_alpha * (out.alpha[..., 0] - person).abs().mean()
    reg_pos, reg_scale = binding_regularizer(state.gaussians)
    loss = loss + config.lambda_position * reg_pos + config.lambda_scale * reg_scale
    if config.lambda_torso_opacity > 0 and step > config.densify_until and bool(scene.on_torso.any()):
        opacity = torch.sigmoid(state.gaussians.opacity_logits[scene.on_torso[state.gaussians.parent]])
        loss = loss + config.lambda_torso_opacity * (opacity * (1.0 - opacity)).mean()
    if config.lambda_thickness > 0 or config.lambda_needle > 0:
        reg_thick, reg_needle = surface_regularizer(state.gaussians)
        loss = loss + config.lambda_thickness * reg_thick + config.lambda_needle * reg_needle
    if refining:
        loss = loss + config.lambda_refine_prior * fp.prior(t)
    if lpips_fn is not None:
        loss = loss + config.lambda_lpips * lpips_fn(image, target)
    return out, image, loss


SETTLE_STEPS = 500  # steps after an opacity reset before a Gaussian still at the reset's opacity counts as unneeded
SH_REST_RATE = 1.0 / 20.0  # higher SH bands move at a twentieth of the DC rate (3DGS)


def _optimise(state: _State, t: int, step: int, refining: bool, config: TrainConfig) -> None:
    """One Adam step of the Gaussians (position rate on its schedule) and, when refining, of frame `t`."""
    gaussians = state.gaussians
    for group in state.optimizer.param_groups:
        if group["name"] == "local_means":
            group["lr"] = _position_lr(config, step)
        elif group["name"] == "expr_means":
            group["lr"] = config.lr_expression * _position_lr(config, step)
    sh_before = gaussians.sh.detach()[:, 1:].clone() if gaussians.sh.shape[1] > 1 else None
    state.optimizer.step()
    if gaussians.expression is not None and config.expression_decay > 0:
        with torch.no_grad():
            for name in OFFSET_NAMES:
                getattr(gaussians, name).mul_(1.0 - config.expression_decay)
    if sh_before is not None:
        with torch.no_grad():
            rest = gaussians.sh[:, 1:]
            rest.copy_(sh_before + (rest - sh_before) * SH_REST_RATE)
    if refining:
        state.frame_opt.step(t)


def _density_control(state: _State, out, scene: _Scene, step: int, config: TrainConfig) -> None:
    """Gradient statistics, densify/prune on schedule and opacity resets (the binding is kept)."""
    res = config.resolution
    if step <= config.densify_until:
        state.stats.update(out.meta["means2d"], out.meta["visible"], res, res)
    state.optimizer.zero_grad(set_to_none=True)
    if config.densify_from <= step <= config.densify_until and step % config.densify_every == 0:
        state.gaussians, _ = densify_and_prune(
            state.gaussians, state.optimizer, state.stats, scene.tri_scale, extent=scene.extent,
            grad_threshold=config.densify_grad_threshold, percent_dense=config.percent_dense,
            min_opacity=config.prune_opacity, max_gaussians=config.max_gaussians, generator=state.generator)
    if config.opacity_reset_every > 0 and step % config.opacity_reset_every == 0 and step <= config.densify_until:
        reset_opacity(state.gaussians, state.optimizer)


def _written(state: _State, config: TrainConfig) -> Tensor:  # -> [N] bool
    """The Gaussians to write: those more opaque than `final_min_opacity`, unless an opacity reset came so late
    (within SETTLE_STEPS of the end) that the views have not yet had time to raise the ones they need."""
    keep = torch.sigmoid(state.gaussians.opacity_logits.detach()) >= config.final_min_opacity
    every = config.opacity_reset_every
    last_reset = (min(config.iterations, config.densify_until) // every) * every if every > 0 else 0
    if last_reset > 0 and config.iterations - last_reset < SETTLE_STEPS:
        return torch.ones_like(keep)
    return keep


def _views(state: _State, scene: _Scene, rig: HeadRig, frames_train: list[int], count: int) -> list:
    """(posed vertices, K, viewmat, the frame's parameters) of `count` training frames spread over them."""
    with torch.no_grad():
        frames = [state.frame_params.frame(frames_train[pick]).map(torch.Tensor.detach)
                  for pick in _spread(frames_train, count)]
        return [(pose_vertices(rig, params)[0], scene.K, scene.viewmat, params) for params in frames]


def _pictures(scene: _Scene, frames_train: list[int], count: int) -> list[Tensor]:
    """The training pictures ([R,R,3] float in [0,1]) of the frames `_views` poses."""
    return [scene.frames.images[pick].to(scene.K.device).float() / 255.0 for pick in _spread(frames_train, count)]


def _spread(frames_train: list[int], count: int) -> list[int]:
    """Positions (into frames_train) of `count` frames spread evenly over them."""
    return [int(i) for i in np.linspace(0, len(frames_train) - 1, min(count, len(frames_train)))]


def _final_gaussians(state: _State, scene: _Scene, rig: HeadRig, frames_train: list[int],
                     config: TrainConfig) -> BoundGaussians:
    """What is written: the Gaussians `_written` keeps, less the `prune_share` that add least to the training
    pictures (training/prune.py), a portrait's torso continued below the frame (training/torso_continue.py: a fill
    where no training picture looks, coloured from what is kept)."""
    kept = state.gaussians.subset(_written(state, config))
    res = scene.frames.resolution
    if config.prune_share > 0 and kept.num_gaussians:
        views = _views(state, scene, rig, frames_train, config.prune_views)
        kept = prune_least(kept, contributions(kept, scene.faces, views, res, res), config.prune_share)
    if "torso_grid" not in rig.meta:
        return kept
    return continue_torso(kept, rig, _views(state, scene, rig, frames_train, 8), _pictures(scene, frames_train, 8),
                          res, res)


def _thin_torso(state: _State, scene: _Scene, rig: HeadRig, frames_train: list[int], config: TrainConfig) -> None:
    """At densification's end, a portrait's torso less the `torso_prune_share` of its Gaussians the training
    pictures show that add least per pixel they cover; the steps that follow let the rest take over their part."""
    gaussians = state.gaussians
    if config.torso_prune_share <= 0 or "torso_grid" not in rig.meta or gaussians.num_gaussians == 0:
        return
    res = scene.frames.resolution
    views = _views(state, scene, rig, frames_train, config.prune_views)
    seen = shown(gaussians, scene.faces, views, res, res)
    candidates = scene.on_torso[gaussians.parent] & seen
    candidates &= ~continuation_sources(gaussians, rig, seen)  # what covers the frame's lower edge
    candidates &= _facing(views[0], scene.faces)[gaussians.parent]  # a flank, near edge-on, is what side views see
    weights, areas = blend_statistics(gaussians, scene.faces, views, res, res)
    keep = faint_kept(weights, areas, candidates, config.torso_prune_share)
    state.gaussians = rebuild(gaussians, state.optimizer, torch.nonzero(keep).flatten())
    state.stats.reset(state.gaussians.num_gaussians)


def _facing(view: tuple[Tensor, Tensor, Tensor], faces: Tensor, min_cosine: float = 0.3) -> Tensor:
    # view: (posed vertices [V,3], K, viewmat [4,4]); faces: [F',3] -> [F'] bool
    """Triangles that face the camera (either side) within acos(min_cosine): 72.5 degrees by default."""
    vertices, _, viewmat, *_ = view
    origin, rotation, _ = triangle_frames(vertices, faces)
    eye = -viewmat[:3, :3].T @ viewmat[:3, 3]  # camera centre, world
    towards = torch.nn.functional.normalize(eye - origin, dim=-1)
    return (rotation[..., 2] * towards).sum(-1).abs() >= min_cosine


def _write_results(paths: AvatarPaths, kept: BoundGaussians, state: _State, scene: _Scene, rig: HeadRig,
                   frames_train: list[int], info: dict, config: TrainConfig) -> None:
    atomic_write_bytes(paths.gaussians, encode_gaussians(kept, scene.faces, rig))
    save_refined(paths.refined, state.frame_params, frames_train)
    ckpt_io.save_checkpoint(paths.checkpoints, config.iterations, state.tensors(),
                            {"gaussians": state.optimizer.state_dict()}, info)


def _record(paths: AvatarPaths, config: TrainConfig, result: TrainResult) -> None:
    manifest = read_manifest(paths.root)
    manifest.settings["train"] = dataclasses.asdict(config)
    manifest.metrics.update({"num_gaussians": result.num_gaussians, "train_psnr": round(result.train_psnr, 3)})
    manifest.stages["train"] = "done"
    write_manifest(paths.root, manifest)


def _check_same_settings(recorded: Optional[dict], config: TrainConfig, paths: AvatarPaths) -> None:
    """A checkpoint continues only under the settings it was written with (another schedule or size would
    silently mix two trainings); the difference is named with what to do."""
    if not recorded:
        return
    now = dataclasses.asdict(config)
    changed = [f"{k} {recorded[k]} -> {now[k]}" for k in sorted(now)
               if k in recorded and k != "checkpoint_every" and recorded[k] != now[k]]
    if changed:
        raise InputError(f"the checkpoint in {paths.checkpoints} was written with other training settings "
                         f"({'; '.join(changed[:6])}); resume with the preset (and --iterations) it was started "
                         "with, or train from scratch without --resume (the old checkpoints stay until the new "
                         "run writes one)")
