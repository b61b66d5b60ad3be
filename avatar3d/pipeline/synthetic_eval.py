"""Train a Gaussian avatar on the synthetic subject and score novel views against its ground truth.

The subject (`avatar3d.head.synthetic_subject`) is a textured mesh drawn by a z-buffer rasterizer with
known rig parameters, so tracking is skipped (MediaPipe does not see synthetic faces): the avatar
directory is built directly from the known parameters and camera, the rendered frames and the mesh
renderer's alpha as masks. The avatar is trained on every frame of the training video, then rendered from
cameras it never saw (yaw -30/+30 degrees, distance x0.7/x1.5) and compared with the mesh renders of the
same frames over the same background (the field's full-frame convention).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.camera import Camera
from avatar3d.errors import InputError
from avatar3d.head.synthetic_subject import HEAD_TARGET, NOVEL_VIEWS, SyntheticSubject, _png_bytes, make_subject
from avatar3d.io.atomic import atomic_dir, atomic_write_bytes
from avatar3d.io.avatar_dir import FRAME_PATTERN, AvatarManifest, AvatarPaths, write_manifest
from avatar3d.render.metrics import psnr, ssim, to_float
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training.config import TrainConfig, scaled_schedule

TRAIN_VIEW = "train"
VIEW_ORDER = (*NOVEL_VIEWS, TRAIN_VIEW)  # the novel views, then the training camera for reference
# The training camera frames the whole rig (crown to the cut below the neck, with the head turned), so the
# novel views ask only about surface the training video showed; the subject's own default frames the face
# closer and cuts the neck, which the x1.5 view would then see for the first time.
CAMERA_DISTANCE = 1.2  # metres
FOV_Y_DEG = 22.0
# A portrait frames the crown down to the chest, as a talking-head video does: the cameras look lower and from further.
PORTRAIT_TARGET = (0.0, -0.11, 0.0)
PORTRAIT_DISTANCE = 1.45  # metres


def _unpremultiply(image: np.ndarray, alpha: np.ndarray, background) -> np.ndarray:
    # image: [R,R,3] uint8 composited over `background`; alpha: [R,R] in [0,1] -> [R,R,3] uint8
    """The foreground colour, so the trainer's `frame * mask + bg * (1 - mask)` gives back `image` exactly
    (compositing an already composited frame again would darken anti-aliased silhouette pixels)."""
    a = alpha[..., None].astype(np.float64)
    bg = np.asarray(background, dtype=np.float64)
    colour = (image.astype(np.float64) / 255.0 - bg * (1.0 - a)) / np.maximum(a, 1e-6)
    colour = np.where(a > 1e-3, colour, bg)
    return np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)


def tracked_sequence(subject: SyntheticSubject) -> TrackedSequence:
    """The subject's known parameters and camera in the form tracking would produce (no landmarks)."""
    p, n, r = subject.params, subject.num_frames, subject.resolution
    zeros = np.zeros((n, 478, 2), np.float32)
    return TrackedSequence(
        rig_name=subject.rig.name, rig_checksum=subject.rig.checksum(), fps=subject.fps,
        timestamps=np.arange(n, dtype=np.float64) / subject.fps, resolution=r, source_size=np.array([r, r]),
        crop_box=np.array([0, 0, r]), K=subject.camera.K.numpy().astype(np.float32),
        viewmat=subject.camera.viewmat.numpy().astype(np.float32), shape=p.shape.numpy(), expr=p.expr.numpy(),
        global_rot=p.global_rot.numpy(), neck=p.neck.numpy(), jaw=p.jaw.numpy(), eyes=p.eyes.numpy(),
        transl=p.transl.numpy(), landmarks=zeros, landmarks_fit=zeros.copy(),
        confidence=np.ones(n, np.float32), detected=np.ones(n, bool), audio=subject.audio.astype(np.float32))


def build_avatar_dir(subject: SyntheticSubject, avatar_dir: Path, *, video: Optional[Path] = None,
                     progress: Optional[Callable[[str], None]] = None) -> Path:
    """Write an avatar directory for `subject` (atomically): tracking.npz from the known parameters,
    data/frames and data/masks (the mesh renderer's alpha), the manifest. `video`: also write the training
    video (H.264 + the synthetic voice) there, for a person to look at."""
    say = progress or (lambda msg: None)
    say(f"rendering {subject.num_frames} training frames at {subject.resolution}x{subject.resolution} "
        f"(textured mesh, known parameters)")
    writer = None
    if video is not None:
        from avatar3d.io.media import AUDIO_RATE, Mp4Writer

        Path(video).parent.mkdir(parents=True, exist_ok=True)
        writer = Mp4Writer(video, fps=subject.fps, audio=subject.audio, audio_rate=AUDIO_RATE, crf=12,
                           metadata={"comment": f"made by avatar3d (synthetic subject, seed {subject.seed})"})
    try:
        with atomic_dir(avatar_dir, kind="avatar") as tmp:
            paths = AvatarPaths(tmp)
            paths.frames.mkdir(parents=True)
            paths.masks.mkdir(parents=True)
            for i in range(subject.num_frames):
                image = _write_frame(subject, paths, i)
                if writer is not None:
                    writer.write(image)
            tracked_sequence(subject).save(paths.tracking)
            if subject.body is not None:
                _portrait_parts(subject, paths, say)
            write_manifest(tmp, AvatarManifest(
                rig_name=subject.rig.name, rig_checksum=subject.rig.checksum(),
                source_video=f"synthetic subject (seed {subject.seed})",
                settings={"synthetic": {"seed": subject.seed, "fps": subject.fps, "frames": subject.num_frames,
                                        "resolution": subject.resolution}}))
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:  # failed: drop the half-written clip
            writer.abort()
    return Path(avatar_dir)


def _write_frame(subject: SyntheticSubject, paths: AvatarPaths, i: int) -> np.ndarray:  # -> [R,R,3] uint8
    """Frame i and its mask file, as enrollment writes them: a head's frame holds its foreground colour and its
    mask the head; a portrait's frame is the whole picture and its mask file the head (grey) and the person
    (alpha)."""
    from PIL import Image

    out, head = subject.render_layers(subject.frame_params(i))
    image = (out.image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    to_u8 = lambda a: (a[..., 0].numpy() * 255.0 + 0.5).astype(np.uint8)  # noqa: E731
    if subject.body is None:
        alpha = to_u8(out.alpha)
        (paths.frames / FRAME_PATTERN.format(i)).write_bytes(
            _png_bytes(_unpremultiply(image, alpha / 255.0, subject.background)))
        (paths.masks / FRAME_PATTERN.format(i)).write_bytes(_png_bytes(alpha))
        return image
    (paths.frames / FRAME_PATTERN.format(i)).write_bytes(_png_bytes(image))
    Image.fromarray(np.stack([to_u8(head), to_u8(out.alpha)], -1), mode="LA").save(
        paths.masks / FRAME_PATTERN.format(i), compress_level=1)
    return image


def _portrait_parts(subject: SyntheticSubject, paths: AvatarPaths, say: Callable[[str], None]) -> None:
    """What enrollment's torso and background stages write, made by those stages' own code from the frames and
    masks: the torso fitted to the person masks (torso.json) and the plate estimated where the person is not."""
    from PIL import Image

    from avatar3d.head.torso import save_torso
    from avatar3d.render.plate import BackgroundPlate
    from avatar3d.training.background import BackgroundConfig, estimate_plate, head_depth, person_free
    from avatar3d.training.torso_fit import describe, fit_torso

    seq = TrackedSequence.load(paths.tracking)
    shape, info = fit_torso(seq, subject.rig, paths.masks, list(range(subject.num_frames)))
    save_torso(paths.root, shape, info)
    say(f"torso fitted to the person masks: {describe(shape, info)}")
    cfg = BackgroundConfig()
    frames, free = [], []
    for i in range(subject.num_frames):
        frames.append(np.asarray(Image.open(paths.frames / FRAME_PATTERN.format(i)).convert("RGB")))
        with Image.open(paths.masks / FRAME_PATTERN.format(i)) as mask:
            free.append(person_free(np.asarray(mask.getchannel("A"), np.float32) / 255.0, cfg))
    found = estimate_plate(np.stack(frames), np.stack(free), cfg)
    plate = BackgroundPlate(found.image, np.asarray(seq.K, np.float64), np.asarray(seq.viewmat, np.float64),
                            head_depth(seq) + cfg.behind, {"frames": found.frames, "seen_share": found.seen_share})
    plate.save(paths.root)
    say(f"background plate from {found.frames} frames: {found.seen_share:.0%} of it seen, the rest inpainted")


def view_cameras(subject: SyntheticSubject) -> dict[str, Camera]:
    """The novel-view cameras and, last, the training camera."""
    return {**subject.novel_cameras(), TRAIN_VIEW: subject.camera}


def _heat(err: np.ndarray) -> np.ndarray:
    # err: [H,W] absolute error in [0,1] -> [H,W,3] uint8 (black = none, red-yellow = large)
    e = np.clip(err * 4.0, 0.0, 1.0)  # x4: a 0.25 error saturates
    return (np.stack([np.clip(2 * e, 0, 1), np.clip(2 * e - 1, 0, 1), np.zeros_like(e)], -1) * 255).astype(np.uint8)


def score_views(subject: SyntheticSubject, avatar_dir: Path, *, device="cpu", backend: str = "auto",
                frames: Optional[list[int]] = None, sheet_frame: Optional[int] = None,
                progress: Optional[Callable[[str], None]] = None) -> tuple[dict, np.ndarray]:
    """Render the trained avatar in `avatar_dir` from every view camera at the subject's novel frames (with
    the known parameters) and score it against the mesh renders -> ({view: {"psnr", "ssim", "frames"}, plus
    "psnr_person" for a portrait: inside the true person}, sheet: uint8 image, one row per view: ground truth |
    render | error x4, at `sheet_frame`). A portrait is rendered over its plate, as `avatar3d render` does."""
    say = progress or (lambda msg: None)
    frames = list(subject.novel_frames if frames is None else frames)
    if not frames:
        raise InputError("no frames to score; make the subject with novel_frame_count >= 1")
    sheet_frame = frames[len(frames) // 2] if sheet_frame is None else int(sheet_frame)
    draw = _avatar_drawer(subject, Path(avatar_dir), device, backend)
    shown = None if subject.body is None else _room_shown(AvatarPaths(Path(avatar_dir)), subject.num_frames)
    cams = view_cameras(subject)
    say(f"scoring {len(cams)} views x {len(frames)} frames against the mesh renders")
    scores, rows = {}, []
    for name in VIEW_ORDER:
        values: dict[str, list] = {key: [] for key in _score_keys(subject)}
        wall_seen = None if shown is None else subject.body.wall.seen(cams[name], subject.camera, shown).to(device)
        for t in sorted(set(frames) | {sheet_frame}):
            truth, person = (x.to(device) for x in subject.render(t, cams[name]))  # [R,R,3], [R,R,1]
            out = draw(subject.frame_params(t), cams[name])
            if t in frames:
                values["psnr"].append(psnr(out, truth))
                values["ssim"].append(ssim(out, truth))
                if wall_seen is not None:
                    values["psnr_person"].append(psnr(out, truth, person[..., 0]))
                    values["psnr_seen"].append(psnr(out, truth, ((person[..., 0] > 0) | wall_seen).float()))
            if t == sheet_frame:
                a, b = truth.cpu().numpy(), out.cpu().numpy()
                rows.append(np.concatenate([(a * 255 + 0.5).astype(np.uint8), (b * 255 + 0.5).astype(np.uint8),
                                            _heat(np.abs(a - b).mean(-1))], axis=1))
        scores[name] = {key: to_float(torch.stack(v).mean()) for key, v in values.items()}
        scores[name]["frames"] = len(values["psnr"])
    return scores, np.concatenate(rows, axis=0)


def _room_shown(paths: AvatarPaths, frames: int) -> Tensor:  # -> [R,R] bool
    """The training picture's pixels where some frame showed the room: no one in front (the person masks)."""
    from avatar3d.training.masks import read_person

    shown = None
    for i in range(frames):
        free = torch.from_numpy(read_person(paths.masks / FRAME_PATTERN.format(i)) < 128)
        shown = free if shown is None else shown | free
    return shown


def _score_keys(subject: SyntheticSubject) -> tuple[str, ...]:
    """What each view is scored by: the whole picture; for a portrait also inside the true person, and over the
    person with the part of the room the video showed (what a moved camera sees beyond it, no video told)."""
    return ("psnr", "ssim") if subject.body is None else ("psnr", "ssim", "psnr_person", "psnr_seen")


def _avatar_drawer(subject: SyntheticSubject, avatar_dir: Path, device, backend: str):
    """(params, camera) -> the trained avatar's picture [R,R,3]: over the subject's background, or for a portrait
    with its torso over its plate."""
    from avatar3d.gaussians.avatar_render import render_avatar
    from avatar3d.gaussians.store import load_bound
    from avatar3d.render.plate import load_plate

    paths = AvatarPaths(avatar_dir)
    gaussians, faces, rig = load_bound(paths, subject.rig, device)
    plate = load_plate(paths.root) if subject.body is not None else None
    if subject.body is not None and plate is None:
        raise InputError(f"{avatar_dir} has no background plate; build it with build_avatar_dir for a portrait subject")
    bg = torch.tensor(subject.background if plate is None else (0.0, 0.0, 0.0), dtype=torch.float32, device=device)

    def draw(params, camera: Camera) -> Tensor:
        cam = camera.to(device)
        with torch.no_grad():
            out = render_avatar(gaussians, rig, faces, params.map(lambda x: x.to(device)), cam.K, cam.viewmat,
                                cam.width, cam.height, bg, backend=backend)
        if plate is None:
            return out.image.clamp(0, 1)
        room = torch.from_numpy(plate.render(camera.K, camera.viewmat, camera.width, camera.height)).to(device) / 255.0
        return (out.image + (1.0 - out.alpha.clamp(0, 1)) * room).clamp(0, 1)

    return draw


def format_table(report: dict) -> str:
    """The per-view table (novel views, their mean, the training view) as text."""
    portrait = "psnr_seen" in report["views"][TRAIN_VIEW]
    extras = ("psnr_person", "psnr_seen") if portrait else ()
    lines = [f"{'view':<10} {'PSNR dB':>8} {'SSIM':>7}" + (f" {'person dB':>10} {'seen dB':>8}" if portrait else "")]
    for name in VIEW_ORDER:
        v = report["views"][name]
        tag = "  (training camera)" if name == TRAIN_VIEW else ""
        extra = "".join(f" {v[key]:{10 if key == 'psnr_person' else 8}.2f}" for key in extras)
        lines.append(f"{name:<10} {v['psnr']:8.2f} {v['ssim']:7.4f}{extra}{tag}")
        if name == list(NOVEL_VIEWS)[-1]:
            extra = "".join(f" {report[key]:{10 if key == 'psnr_person' else 8}.2f}" for key in extras)
            lines.append(f"{'novel mean':<10} {report['psnr']:8.2f} {report['ssim']:7.4f}{extra}")
    return "\n".join(lines)


def eval_subject(seconds: float = 2.0, fps: float = 25.0, resolution: int = 256, seed: int = 0, *,
                 background=(1.0, 1.0, 1.0), texture_size: int = 1024, novel_frames: int = 4,
                 camera_distance: Optional[float] = None, fov_y_deg: float = FOV_Y_DEG,
                 supersample: int = 2, portrait: bool = False) -> SyntheticSubject:
    """The synthetic subject framed for this evaluation: the whole rig in view (see CAMERA_DISTANCE), or as a
    portrait, with shoulders and its room, crown to chest (PORTRAIT_TARGET, PORTRAIT_DISTANCE)."""
    if int(resolution) < 32:
        raise InputError(f"resolution {resolution} is too small to judge an avatar; pass at least 32 (256 is typical)")
    distance = camera_distance or (PORTRAIT_DISTANCE if portrait else CAMERA_DISTANCE)
    return make_subject(seconds, fps, int(resolution), seed, background=tuple(float(c) for c in background),
                        texture_size=texture_size, novel_frame_count=novel_frames, camera_distance=distance,
                        fov_y_deg=fov_y_deg, supersample=supersample, portrait=portrait,
                        target=PORTRAIT_TARGET if portrait else HEAD_TARGET)


def run_synthetic_eval(out: Path, train: TrainConfig, *, subject: Optional[SyntheticSubject] = None,
                       seconds: float = 4.0, fps: float = 25.0, resolution: Optional[int] = None, seed: int = 0,
                       texture_size: int = 1024, device="cpu", backend: str = "auto", train_video: bool = True,
                       progress: bool = True, say: Optional[Callable[[str], None]] = None,
                       portrait: bool = False) -> dict:
    """Make the subject (or take `subject`, whose background must be the training background), build
    `out/avatar`, train it with `train` on every frame, score the views; writes `out/novel_views.png`
    (ground truth | render | error per view) and returns the report: {"psnr", "ssim" (means over the novel
    views), "views": {view: {"psnr", "ssim", "frames"}}, "seconds", "num_gaussians", "train_psnr", ...}.

    resolution: of the subject's frames, the training and the scores (default: the training resolution);
    portrait: the subject with shoulders and its room (when `subject` is not given); each view then adds
    "psnr_person".
    """
    from avatar3d.training.trainer import train_gaussians

    say = say or (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds_used: dict[str, float] = {}
    tic = time.perf_counter()
    if subject is None:
        subject = eval_subject(seconds, fps, int(resolution or train.resolution), seed, background=train.background,
                               texture_size=texture_size, portrait=portrait)
    elif not np.allclose(subject.background, train.background):
        raise InputError(f"the subject's background {subject.background} differs from the training background "
                         f"{tuple(train.background)}; make the subject with background=train.background")
    res = subject.resolution
    avatar = build_avatar_dir(subject, out / "avatar", video=(out / "train.mp4") if train_video else None,
                              progress=say)
    seconds_used["subject"] = time.perf_counter() - tic

    tic = time.perf_counter()
    train = dataclasses.replace(train, resolution=res)
    say(f"training on all {subject.num_frames} frames: {train.iterations} steps at {res}x{res}, "
        f"{train.init_gaussians} initial Gaussians (cap {train.max_gaussians})")
    result = train_gaussians(avatar, train, device=device, progress=progress,
                             frames_train=list(range(subject.num_frames)), rig=subject.rig)
    seconds_used["train"] = time.perf_counter() - tic

    tic = time.perf_counter()
    views, sheet = score_views(subject, avatar, device=device, backend=backend, progress=say)
    atomic_write_bytes(out / "novel_views.png", _png_bytes(sheet))
    seconds_used["eval"] = time.perf_counter() - tic
    seconds_used["total"] = sum(seconds_used.values())
    novel = [views[name] for name in NOVEL_VIEWS]
    report = {
        "psnr": float(np.mean([v["psnr"] for v in novel])),
        "ssim": float(np.mean([v["ssim"] for v in novel])),
        "framing": "head" if subject.body is None else "portrait",
        "views": views,
        "target_psnr": 28.0,
        "target_on": "psnr" if subject.body is None else "psnr_seen",  # the room no video showed is a guess
        "num_gaussians": result.num_gaussians,
        "train_psnr": result.train_psnr,
        "iterations": train.iterations,
        "frames_train": subject.num_frames,
        "frames_scored": list(subject.novel_frames),
        "resolution": res,
        "seconds": {k: round(v, 1) for k, v in seconds_used.items()},
        "device": str(device),
        "subject": {"seconds": subject.num_frames / subject.fps, "fps": subject.fps, "seed": subject.seed,
                    "camera_distance": subject.distance, "fov_y_deg": subject.fov_y_deg},
        "outputs": {"avatar": str(avatar), "sheet": str(out / "novel_views.png"),
                    "train_video": str(out / "train.mp4") if train_video else None},
    }
    for key in _score_keys(subject)[2:]:
        report[key] = float(np.mean([v[key] for v in novel]))
    return report


__all__ = ["scaled_schedule", "eval_subject", "build_avatar_dir", "tracked_sequence", "score_views",
           "run_synthetic_eval", "format_table", "view_cameras", "VIEW_ORDER", "TRAIN_VIEW"]
