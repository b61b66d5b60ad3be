"""Foreground masks per frame: the person (MediaPipe selfie segmentation) minus the torso (cut with the rig).

The avatar is a head with hair and neck; the rig has no torso, so the clothes and shoulders that the
segmentation calls "person" must go. Per frame, with the rig posed by the tracked parameters and
projected with the tracked K/viewmat:

- `h` = face height in pixels: the projected distance from the rig's chin (MediaPipe landmark 152) to
  its forehead top (landmark 10); `up` = the unit image direction chin -> forehead (follows head roll);
  `s(x)` = height of pixel x above the chin along `up`, in units of `h` (negative below the chin).
- `S` = the silhouette of the rig's renderable triangles (head, scalp, ears, eyes, mouth, neck) that lie
  above a plane `neck_depth` metres below the chin in the rig's rest space. The cut is made on the rig,
  so it follows the head's pose; the rig's neck flares into the collar further down, which must not
  be kept.

A pixel is kept (with the person probability as its value) when it is a person pixel and
  (a) it lies inside `S` dilated by `dilate` face heights (head and upper neck, with a margin for
      tracking error), or
  (b) `s(x) >= hair_line` (above a line a little above the chin, perpendicular to `up`) and it lies
      within `hair_reach` face heights of `S`: hair, ears and earrings the rig lacks; far-away
      "person" pixels are not kept.
Shoulders, clothes, hair that falls below the hair line beside the neck (indistinguishable from the
torso for this rule), a second person and the background get 0. The silhouette and its dilations
are computed on a coarser grid (`work_resolution`) and upsampled bilinearly, which feathers those
edges over a few pixels; the segmentation's own soft edges are kept. Before the rule, each frame's person
probability is averaged with its neighbours' (warped by the head's motion; `temporal_radius`), which steadies
the flickering hair edges. Masks are uint8 0..255 (255 = head/hair/neck), stored as the grey channel of a
grey+alpha PNG whose second channel is the whole person (the steadied probability, torso and clothes included),
which a portrait trains and is scored on (`read_person`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.io.avatar_dir import FRAME_PATTERN
from avatar3d.runtime import quiet_native_logs
from avatar3d.training.mask_smoothing import TemporalSmoother, head_point_indices, head_points

CHIN, FOREHEAD = 152, 10  # MediaPipe face-mesh landmarks: chin tip, top of the forehead


@dataclass
class MaskConfig:
    model_selection: int = 0
    """MediaPipe selfie model: 0 = general (256x256 input; smoother hair edges on our clips), 1 = landscape."""
    work_resolution: int = 128
    """Side of the grid the rig silhouette and the cut rule are evaluated on (upsampled to the frame)."""
    dilate: float = 0.04
    """Rule (a): growth of the rig silhouette, in face heights (tracking error, soft tissue)."""
    neck_depth: float = 0.035
    """Rule (a): the rig is drawn down to this many metres below its chin (rest pose): the upper neck."""
    hair_line: float = 0.1
    """Rule (b): person pixels near the head are kept above this height over the chin, in face heights."""
    hair_reach: float = 0.5
    """Rule (b): how far from the rig silhouette hair/ears may reach, in face heights."""
    batch: int = 16
    """Frames posed together (batched rig posing)."""
    temporal_radius: int = 2
    """Frames on each side whose person probability is averaged into each frame's, warped by the head's motion
    (0 = off): the segmentation's hair edges flicker by a pixel or two from frame to frame, which no avatar
    can reproduce (see training.mask_smoothing)."""


# ------------------------------------------------------------------------------------------ the rule
def head_faces(rig, neck_depth: float) -> Tensor:
    """[F] bool: renderable triangles whose rest-pose vertices all lie above `neck_depth` m below the chin."""
    from avatar3d.head.lbs import landmarks

    if not neck_depth >= 0:
        raise InputError(f"neck_depth must be >= 0 metres, got {neck_depth}; use e.g. 0.035")
    template = rig.template.to(torch.float32)
    chin_y = float(landmarks(rig, template[None])[0, CHIN, 1])
    above = template[:, 1] >= chin_y - float(neck_depth)  # [V]; rig space: y up
    return above.to(rig.faces.device)[rig.faces].all(dim=1) & rig.renderable_faces()


def _grow(mask: Tensor, radius: int) -> Tensor:
    """mask: [h,w] float -> dilated by a square of half-size `radius` (separable max-pool)."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    x = mask[None, None]
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return x[0, 0]


def _height_above_chin(H: int, W: int, chin: Tensor, forehead: Tensor) -> Tensor:
    """s: [H,W] height of each pixel centre above the chin along chin->forehead, in face heights."""
    axis = (forehead - chin).to(torch.float32)
    face_h = float(torch.linalg.norm(axis))
    if not face_h > 1e-6:
        raise InputError("the chin and forehead project to the same pixel; the tracked pose is degenerate — "
                         "re-run `avatar3d track`")
    up = axis / face_h
    ys = torch.arange(H, device=chin.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=chin.device, dtype=torch.float32) + 0.5
    return ((xs[None, :] - chin[0]) * up[0] + (ys[:, None] - chin[1]) * up[1]) / face_h


def cut_torso(person: np.ndarray,  # [H,W] float in [0,1], person probability
              silhouette: Tensor,  # [h,w] bool rig silhouette `S` (any grid with the frame's aspect)
              chin: np.ndarray,  # [2] chin (x, y), frame pixels, pixel centres at +0.5
              forehead: np.ndarray,  # [2] forehead top, frame pixels
              config: MaskConfig = MaskConfig()) -> np.ndarray:
    """The torso-cut rule of the module docstring for one frame: uint8 [H,W] mask (255 = head/hair/neck).

    The dilations run on the silhouette's (coarse) grid and are upsampled bilinearly, which feathers
    their edges; the hair line is evaluated per frame pixel with a one-pixel ramp.
    """
    H, W = person.shape
    h, w = silhouette.shape
    chin_t = torch.as_tensor(np.asarray(chin, np.float32))
    fore_t = torch.as_tensor(np.asarray(forehead, np.float32))
    face_h_work = float(torch.linalg.norm(fore_t - chin_t)) * w / W
    sil = silhouette.detach().to("cpu", torch.float32)
    grown = torch.stack([_grow(sil, int(round(config.dilate * face_h_work))),
                         _grow(sil, int(round(config.hair_reach * face_h_work)))])  # [2,h,w]
    if (h, w) != (H, W):
        grown = F.interpolate(grown[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    near, reach = grown[0], grown[1]
    s = _height_above_chin(H, W, chin_t, fore_t)
    face_h = float(torch.linalg.norm(fore_t - chin_t))
    above = ((s - config.hair_line) * face_h + 0.5).clamp(0, 1)  # 1-pixel ramp across the hair line
    gate = torch.maximum(near, reach * above)
    value = torch.from_numpy(np.ascontiguousarray(person, dtype=np.float32)) * gate
    return (value.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def read_person(path: Path) -> Optional[np.ndarray]:  # -> [H,W] uint8, or None
    """The whole-person channel of a mask file (None for masks written before it was stored)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.getchannel("A")) if image.mode == "LA" else None


# ------------------------------------------------------------------------------------------ segmentation
class SelfieSegmenter:
    """MediaPipe selfie segmentation (model inside the mediapipe 0.10.21 wheel): frame -> person probability."""

    def __init__(self, model_selection: int = 0):
        if model_selection not in (0, 1):
            raise InputError(f"model_selection must be 0 (general) or 1 (landscape), got {model_selection}")
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as exc:
            raise BackendUnavailableError(
                f"MediaPipe is needed for foreground segmentation but does not import ({exc}); install "
                f"mediapipe==0.10.21 (pip install --no-deps mediapipe==0.10.21 plus requirements/mediapipe.txt)"
            ) from exc
        with quiet_native_logs():
            self._seg = selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
        self._quiet_first_call = True  # TensorFlow Lite prints its banners on the first frame

    def __call__(self, frame: np.ndarray) -> np.ndarray:  # frame: [H,W,3] uint8 RGB -> [H,W] float32
        quiet = quiet_native_logs() if self._quiet_first_call else contextlib.nullcontext()
        self._quiet_first_call = False
        with quiet:
            out = self._seg.process(np.ascontiguousarray(frame)).segmentation_mask
        if out is None:
            return np.zeros(frame.shape[:2], np.float32)
        return np.clip(np.asarray(out, np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


# ------------------------------------------------------------------------------------------ the stream
def _work_camera(K: Tensor, resolution: int, work: int) -> Tensor:  # K: [3,3] -> [3,3]
    """Intrinsics of the frame resampled to `work` pixels (pixel centres at +0.5 scale with the image)."""
    Kw = K.clone()
    Kw[:2] *= work / resolution
    return Kw


def compute_masks(frames_dir: os.PathLike, seq, rig, out_dir: os.PathLike, *,
                  config: Optional[MaskConfig] = None,
                  segmenter: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                  progress: Optional[Callable[[int], None]] = None) -> dict:
    """Write `out_dir/NNNNNN.png` (uint8 masks) for every frame of `seq`; returns statistics.

    frames_dir: the tracked crop frames (`NNNNNN.png`, `seq.resolution` pixels square)
    seq: the `TrackedSequence` of those frames; rig: the `HeadRig` it was tracked with
    segmenter: frame uint8 [H,W,3] -> person probability [H,W] (default: `SelfieSegmenter`)
    progress(i): called after each frame. The folder is built beside `out_dir` and swapped in at the
    end, so an interrupted run leaves any earlier masks intact.
    """
    from avatar3d.io.atomic import atomic_dir

    cfg = config or MaskConfig()
    _check_inputs(seq, rig, cfg)
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    own = segmenter is None
    seg = SelfieSegmenter(cfg.model_selection) if own else segmenter
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Per-frame work here is small tensors: intra-op threads cost more in synchronisation than they
    # gain (and collapse when the cores are busy, e.g. with MediaPipe's own threads), so one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with atomic_dir(out_dir, kind="masks", inside_ours=True) as tmp:
            writer = _MaskWriter(Path(tmp), cfg, min(int(cfg.work_resolution), int(seq.resolution)), progress)
            _segment_frames(frames_dir, seq, rig, cfg, seg, writer)
    finally:
        torch.set_num_threads(threads)
        if own:
            seg.close()
    return writer.stats(seq.num_frames, time.perf_counter() - started, cfg)


def _check_inputs(seq, rig, cfg: MaskConfig) -> None:
    if seq.rig_name != rig.name:
        raise InputError(f"the tracking was made with the rig {seq.rig_name!r} but {rig.name!r} was given; "
                         f"load the rig the avatar was tracked with")
    if cfg.temporal_radius < 0:
        raise InputError(f"temporal_radius={cfg.temporal_radius} must be >= 0 (0 turns the smoothing off)")
    if cfg.work_resolution < 32:
        raise InputError(f"work_resolution={cfg.work_resolution} is too coarse; use e.g. 128")


class _MaskWriter:
    """Cuts, writes and measures each frame's mask once its temporally smoothed person probability is ready."""

    def __init__(self, folder: Path, cfg: MaskConfig, work: int, progress: Optional[Callable[[int], None]]):
        self.folder, self.cfg, self.work, self.progress = folder, cfg, work, progress
        self.pending: dict[int, tuple[Tensor, np.ndarray]] = {}  # frame -> (silhouette, chin/forehead px)
        self.coverage: list[float] = []
        self.removed: list[float] = []
        self.agreement: list[float] = []

    def finish(self, i: int, person: np.ndarray) -> None:  # person: [H,W] probability
        from PIL import Image

        sil, key = self.pending.pop(i)
        mask = cut_torso(person, sil, key[0], key[1], self.cfg)
        whole = (np.clip(person, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        Image.fromarray(np.stack([mask, whole], -1), mode="LA").save(self.folder / FRAME_PATTERN.format(i),
                                                                      compress_level=1)
        # statistics on the work grid: cheap and resolution-independent
        p_work = F.interpolate(torch.from_numpy(person)[None, None], size=(self.work, self.work), mode="area")[0, 0]
        kept = mask.mean() / 255.0
        total = float(person.mean())
        self.coverage.append(kept)
        self.removed.append(1.0 - kept / total if total > 1e-6 else 0.0)
        self.agreement.append(float(p_work[sil.cpu()].mean()) if bool(sil.any()) else 0.0)
        if self.progress is not None:
            self.progress(i)

    def stats(self, frames: int, seconds: float, cfg: MaskConfig) -> dict:
        agreement = np.asarray(self.agreement)
        stats = {
            "frames": frames,
            "seconds": round(seconds, 2),
            "ms_per_frame": round(1000 * seconds / max(frames, 1), 2),
            "coverage_mean": round(float(np.mean(self.coverage)), 4),
            "torso_removed_mean": round(float(np.mean(self.removed)), 4),
            "silhouette_agreement_mean": round(float(agreement.mean()), 4),
            "silhouette_agreement_min": round(float(agreement.min()), 4),
            "model_selection": cfg.model_selection,
            "warnings": [],
        }
        bad = np.flatnonzero(agreement < 0.7)
        if bad.size:
            stats["warnings"].append(
                f"on {bad.size} of {frames} frames (first: {int(bad[0])}) the segmentation covers less than 70% of "
                f"the fitted head; check the tracking overlay (the fit may be off) or film against a plainer "
                f"background")
        for w in stats["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        return stats


def _segment_frames(frames_dir: Path, seq, rig, cfg: MaskConfig, seg, writer: _MaskWriter) -> None:
    """Pose the rig a batch of frames at a time; per frame, its silhouette, the person probability, and the
    smoother's output handed to `writer`."""
    from avatar3d.head.lbs import landmarks, pose_vertices
    from avatar3d.render.mesh_raster import project_vertices, rasterize_triangles
    from avatar3d.tracking.pipeline import read_frame

    R, T, dev, work = int(seq.resolution), seq.num_frames, rig.device, writer.work
    K = torch.as_tensor(seq.K, dtype=torch.float32, device=dev)
    viewmat = torch.as_tensor(seq.viewmat, dtype=torch.float32, device=dev)
    K_work = _work_camera(K, R, work)
    faces = rig.faces.to(dev)
    drawn = head_faces(rig, cfg.neck_depth).to(dev)
    params = seq.params(device=dev)
    smoother = TemporalSmoother(cfg.temporal_radius)
    warp_points = head_point_indices(rig, drawn)  # [P]
    for s in range(0, T, cfg.batch):
        idx = slice(s, min(s + cfg.batch, T))
        with torch.no_grad():
            batch = params.slice(idx)
            verts = pose_vertices(rig, batch)  # [B,V,3]
            lms = landmarks(rig, verts)[:, [CHIN, FOREHEAD]]  # [B,2,3]
            key_px = project_vertices(lms.reshape(-1, 3), K, viewmat)[0].reshape(-1, 2, 2).cpu().numpy()
            rigid = head_points(rig, batch, warp_points)  # [B,P,3]
            rigid_px = project_vertices(rigid.reshape(-1, 3), K, viewmat)[0].reshape(
                rigid.shape[0], -1, 2).cpu().numpy()
        for j in range(verts.shape[0]):
            i = s + j
            frame = read_frame(frames_dir, i)
            if frame.shape[:2] != (R, R):
                raise InputError(f"{frames_dir}/{FRAME_PATTERN.format(i)} is {frame.shape[1]}x{frame.shape[0]} "
                                 f"but the tracking says {R}x{R}; the frames and tracking.npz do not "
                                 f"belong together — re-run `avatar3d track`")
            with torch.no_grad():
                sil = rasterize_triangles(verts[j], faces, K_work, viewmat, work, work,
                                          backfaces="draw", face_mask=drawn).mask
            person = seg(frame)
            if person.shape != (R, R):
                raise InputError(f"the segmenter returned {person.shape} for a {R}x{R} frame; it must "
                                 f"return one probability per pixel")
            writer.pending[i] = (sil, key_px[j])
            for done, steady in smoother.push(i, person, rigid_px[j]):
                writer.finish(done, steady)
    for done, steady in smoother.flush():
        writer.finish(done, steady)
