"""`track_video`: video in, tracked rig parameters out (the whole of `avatar3d track`).

Stages: decode + detect landmarks (streamed) → one fixed square crop → cropped lossless frames →
staged rig fitting → report, `tracking.npz` and an overlay video. The output folder is assembled in a
temporary sibling and swapped in at the end, so a failed run never damages an earlier result.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from avatar3d.errors import InputError
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.registry import load_rig
from avatar3d.io.atomic import atomic_dir, atomic_write_json
from avatar3d.io.avatar_dir import FRAME_PATTERN
from avatar3d.io.media import AUDIO_RATE, Mp4Writer, VideoReader, read_audio
from avatar3d.io.ownership import check_replaceable
from avatar3d.progress import progress_bar
from avatar3d.tracking.crop import apply_crop, crop_intrinsics, crop_landmarks, framed_crop
from avatar3d.tracking.fit import FitConfig, fit_sequence
from avatar3d.tracking.landmarks import LandmarkTrack, detect_video
from avatar3d.tracking.metrics import cv_mask, tracking_metrics
from avatar3d.tracking.overlay import overlay_frame
from avatar3d.tracking.sequence import TrackedSequence, describe_frames

IRIS_CENTRES = (468, 473)


@dataclass
class TrackOutputs:
    folder: Path
    sequence: TrackedSequence
    report: dict


def _bar(total: int, desc: str):
    return progress_bar(total, desc, unit="frame", dynamic_ncols=True, leave=True)


def _write_frames(video: Path, box, resolution: int, folder: Path, total: int) -> None:
    """Decode again and write the first `total` cropped frames as PNG (lossless; fast compression)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with VideoReader(video) as reader, _bar(total, "crop frames") as bar:
        for i, frame in enumerate(itertools.islice(reader, total)):
            Image.fromarray(apply_crop(frame, box, resolution)).save(folder / FRAME_PATTERN.format(i), compress_level=1)
            bar.update(1)


def read_frame(folder: Path, index: int) -> np.ndarray:
    """A stored crop frame, uint8 [R,R,3]."""
    from PIL import Image

    path = Path(folder) / FRAME_PATTERN.format(index)
    if not path.is_file():
        raise InputError(f"{path} is missing; the tracking folder is incomplete — re-run `avatar3d track`")
    return np.asarray(Image.open(path).convert("RGB"))


def _write_overlay(path: Path, frames_dir: Path, rig, seq: TrackedSequence, fps: float, chunk: int = 50) -> None:
    """The crop with the fitted face wireframe, detected (green) and fitted (red) landmarks, pupils (magenta)."""
    face_mask = rig.face_region_mask("face") & rig.renderable_faces()
    faces = rig.faces[face_mask].cpu().numpy()
    viewmat = torch.as_tensor(seq.viewmat)
    params = seq.params()
    with Mp4Writer(path, fps=fps, preset="veryfast", metadata={"comment": "avatar3d tracking overlay"}) as writer, \
            _bar(seq.num_frames, "overlay") as bar:
        for s in range(0, seq.num_frames, chunk):
            idx = slice(s, min(s + chunk, seq.num_frames))
            with torch.no_grad():
                verts = pose_vertices(rig, params.slice(idx))  # [B,V,3]
                cam = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
            for j, c in enumerate(cam.numpy()):
                i = s + j
                writer.write(overlay_frame(read_frame(frames_dir, i), c, seq.K, faces, seq.landmarks[i],
                                           seq.landmarks_fit[i], seq.landmarks_fit[i, list(IRIS_CENTRES)]))
                bar.update(1)


def track_video(video: Path, out: Path, *, head_model: Optional[str] = None, resolution: int = 512,
                device: str = "cpu", fit_config: Optional[FitConfig] = None, overlay: bool = True,
                max_frames: Optional[int] = None, force: bool = False, framing: str = "head") -> TrackOutputs:
    """Track `video` (its first `max_frames` frames when given) into the folder `out`.

    An existing `out` is replaced only when avatar3d made it (or with `force`): checked before any work.
    `framing`: the crop, `head` (the head alone) or `portrait` (head and shoulders; tracking/crop.py).

    See `TrackedSequence` for the schema of `tracking.npz`.
    """
    if not force:
        check_replaceable(Path(out))
    if max_frames is not None and max_frames < 2:
        raise InputError(f"max_frames={max_frames} is too small; track at least 2 frames (better: a few seconds)")
    video, out = Path(video), Path(out)
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available; use --device cpu")
    started = time.perf_counter()
    source = _detect(video, head_model, device, max_frames)
    track = source.track
    box = framed_crop(track, *source.size, framing=framing)
    K_crop = crop_intrinsics(None, box, resolution, image_size=source.size)
    points = crop_landmarks(track.points, box, resolution).astype(np.float32)
    held = cv_mask()
    with atomic_dir(out, kind="tracking", force=force) as tmp:
        tmp = Path(tmp)
        _write_frames(video, box, resolution, tmp / "frames", track.num_frames)
        fit = _fit(source.rig, points, track.confidence, resolution, K_crop, held, fit_config, device)
        seq = _sequence(source, fit, box, points, resolution)
        seq.save(tmp / "tracking.npz")
        np.save(tmp / "confidence.npy", seq.confidence)
        metrics = tracking_metrics(fit.projected.cpu(), torch.from_numpy(points), fit.head_rotation.cpu(),
                                   held_out=held, frames=torch.from_numpy(track.detected))
        if overlay:
            _write_overlay(tmp / "overlay.mp4", tmp / "frames", source.rig.to("cpu"), seq, source.fps)
        report = _report(seq, track, fit, metrics, source.rig, resolution, time.perf_counter() - started)
        atomic_write_json(tmp / "track_report.json", report)
    return TrackOutputs(out, seq, report)


@dataclass
class _Source:
    """What detection read from the video."""

    rig: object
    track: LandmarkTrack
    fps: float
    size: tuple[int, int]  # (width, height) of the source frames
    timestamps: np.ndarray  # [T] seconds
    audio: np.ndarray  # [A] float32 at AUDIO_RATE (empty when the video has none)


def _detect(video: Path, head_model: Optional[str], device: str, max_frames: Optional[int]) -> _Source:
    """Landmarks of the subject in every frame (the first `max_frames`), and the audio of those frames."""
    with VideoReader(video) as reader:  # opening validates the file before anything slow happens
        rig = load_rig(head_model, device=device)
        fps, total, size = float(reader.fps), reader.num_frames, (reader.width, reader.height)
        total = total if max_frames is None else min(total, max_frames)
        has_audio = reader.has_audio
        timestamps = np.asarray(reader.timestamps, dtype=np.float64)[:total]
        with _bar(total, "landmarks") as bar:
            track = detect_video(itertools.islice(reader, total), progress=lambda i: bar.update(1))
    for warning in track.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if track.num_frames < 2:
        raise InputError(f"{video} has {track.num_frames} frame(s); tracking needs a clip of at least a few seconds")
    audio = read_audio(video, AUDIO_RATE) if has_audio else np.zeros(0, np.float32)
    if max_frames is not None:  # keep the audio of the tracked frames only
        audio = audio[: int(round(track.num_frames / fps * AUDIO_RATE))]
    return _Source(rig, track, fps, size, timestamps[: track.num_frames], audio)


def _fit(rig, points: np.ndarray, confidence: np.ndarray, resolution: int, K_crop, held, fit_config, device):
    """The rig fitted to the cropped landmarks `points` [T,478,2], with a progress line per fitting stage."""
    with _bar(1, "fit rig") as bar:
        stages = {}

        def on_progress(stage: str, step: int, steps: int) -> None:
            if stages.get("stage") != stage:
                stages["stage"] = stage
                bar.set_postfix_str(stage)

        fit = fit_sequence(rig, torch.from_numpy(points), torch.from_numpy(confidence), (resolution, resolution),
                           K_init=torch.as_tensor(K_crop, dtype=torch.float32), cv_mask=held, config=fit_config,
                           device=device, progress=on_progress)
        bar.update(1)
    return fit


def _sequence(source: _Source, fit, box, points: np.ndarray, resolution: int) -> TrackedSequence:
    rig, track = source.rig, source.track
    p = fit.params.map(lambda t: t.detach().cpu())
    return TrackedSequence(
        rig_name=rig.name, rig_checksum=rig.checksum(), fps=source.fps, timestamps=source.timestamps,
        resolution=resolution, source_size=np.asarray(source.size, np.int64), crop_box=box.as_array(),
        K=fit.K.detach().cpu().numpy().astype(np.float32), viewmat=fit.viewmat.cpu().numpy().astype(np.float32),
        shape=p.shape.numpy(), expr=p.expr.numpy(), global_rot=p.global_rot.numpy(), neck=p.neck.numpy(),
        jaw=p.jaw.numpy(), eyes=p.eyes.numpy(), transl=p.transl.numpy(), landmarks=points,
        landmarks_fit=fit.projected.detach().cpu().numpy().astype(np.float32),
        confidence=track.confidence.astype(np.float32), detected=track.detected.astype(bool), audio=source.audio)


def _report(seq: TrackedSequence, track: LandmarkTrack, fit, metrics: dict, rig, resolution: int,
            seconds: float) -> dict:
    """track_report.json."""
    return {
        "frames": seq.num_frames,
        "seconds": round(seconds, 2),
        "ms_per_frame": round(1000 * seconds / seq.num_frames, 2),
        **{k: round(float(v), 4) for k, v in metrics.items()},
        "failed_frames": [int(i) for i in track.failed_frames],
        "fit_seconds": round(fit.seconds, 2),
        "resolution": resolution,
        "focal_px": round(float(seq.K[0, 0]), 2),
        "crop_box": [int(v) for v in seq.crop_box],
        "rig": rig.name,
        "warnings": list(track.warnings),
    }


def print_summary(result: TrackOutputs) -> None:
    r = result.report
    print(json.dumps({k: v for k, v in r.items() if k != "failed_frames"} | {"failed_frames": len(r["failed_frames"])},
                     indent=2))
    print(f"tracked {r['frames']} frames in {r['seconds']:.1f} s ({r['ms_per_frame']:.1f} ms/frame) -> {result.folder}")
    faceless = result.sequence.faceless_frames()
    if faceless:
        print(f"warning: no face detected in {describe_frames(faceless, r['frames'], result.sequence.fps)}; their "
              "parameters are interpolated, and enrollment leaves those frames out of training and evaluation",
              file=sys.stderr)
