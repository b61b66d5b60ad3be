"""Choose the subject among the faces of each frame, warn about a second face, fill failed frames.

Pure numpy on per-frame lists of `FaceObservation`, so it is tested without any detector.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatar3d.errors import InputError
from avatar3d.head.embedding import NUM_LANDMARKS
from avatar3d.tracking.faces import FaceObservation


@dataclass
class SubjectSelection:
    points: np.ndarray  # [T,478,2] float32 pixels, failed frames interpolated
    depth: np.ndarray  # [T,478] float32, failed frames interpolated
    scores: np.ndarray  # [T] float32 detector score of the subject (nan: none matched or failed)
    detected: np.ndarray  # [T] bool
    num_faces: np.ndarray  # [T] int32
    warnings: list[str] = field(default_factory=list)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pick(faces: list[FaceObservation], prev_box, similar_area_ratio: float, min_follow_iou: float) -> int:
    """The largest face; among faces of similar size, the one that continues the previous subject."""
    areas = np.array([f.area for f in faces])
    largest = int(areas.argmax())
    if prev_box is None:
        return largest
    similar = [i for i in range(len(faces)) if areas[i] >= similar_area_ratio * areas[largest]]
    ious = [(_iou(faces[i].box, prev_box), i) for i in similar]
    best_iou, best = max(ious)
    return best if best_iou >= min_follow_iou else largest


def select_subject(per_frame: list[list[FaceObservation]], *, similar_area_ratio: float = 0.5,
                   min_second_face_frames: int = 5, max_missing_fraction: float = 0.5,
                   min_follow_iou: float = 0.3) -> SubjectSelection:
    """Per frame, the subject's landmarks; failed frames interpolated; warnings as messages.

    Raises InputError when more than `max_missing_fraction` of the frames have no face. A second
    face whose area is more than `similar_area_ratio` of the subject's in more than
    `min_second_face_frames` frames gives a warning (the subject may be confused with it).
    """
    T = len(per_frame)
    if T == 0:
        raise InputError("the video has no frames; pass a clip that contains the face")
    points = np.zeros((T, NUM_LANDMARKS, 2), np.float32)
    depth = np.zeros((T, NUM_LANDMARKS), np.float32)
    scores = np.full(T, np.nan, np.float32)
    detected = np.zeros(T, bool)
    num_faces = np.array([len(f) for f in per_frame], np.int32)
    second: list[tuple[int, float]] = []  # (frame, area ratio) where a similar-size face is present
    prev_box = None
    for t, faces in enumerate(per_frame):
        if not faces:
            continue
        k = _pick(faces, prev_box, similar_area_ratio, min_follow_iou)
        subject = faces[k]
        points[t], depth[t], scores[t], detected[t] = subject.points, subject.depth, subject.score, True
        prev_box = subject.box
        others = [f.area for i, f in enumerate(faces) if i != k]
        if others and subject.area > 0:
            ratio = max(others) / subject.area
            if min(ratio, 1.0 / ratio) > similar_area_ratio:
                second.append((t, ratio))

    missing = T - int(detected.sum())
    if missing > max_missing_fraction * T or missing == T:
        raise InputError(f"no face was found in {missing} of {T} frames; film the face frontally, well lit, "
                         f"filling at least a third of the frame")
    messages = []
    if len(second) > min_second_face_frames:
        largest = max(r for _, r in second)
        messages.append(
            f"a second face of similar size (up to {largest:.0%} of the subject's area) appears in "
            f"{len(second)} of {T} frames (first at frame {second[0][0]}); the largest face is tracked. "
            f"If the wrong person is tracked, crop the video to the subject alone")
    return SubjectSelection(points=interpolate_missing(points, detected),
                            depth=interpolate_missing(depth, detected), scores=scores,
                            detected=detected, num_faces=num_faces, warnings=messages)


def interpolate_missing(values: np.ndarray, detected: np.ndarray) -> np.ndarray:  # [T,...], [T] -> [T,...]
    """Fill frames with `detected == False` linearly in time between the nearest detected frames;
    before the first and after the last detected frame the values are held."""
    detected = np.asarray(detected, bool)
    if detected.all():
        return values.copy()
    good = np.flatnonzero(detected)
    if good.size == 0:
        raise InputError("no frame has a detected face, so nothing can be interpolated; film the face "
                         "frontally, well lit, filling at least a third of the frame")
    t = np.arange(len(values))
    nxt = np.clip(np.searchsorted(good, t), 0, good.size - 1)  # first detected frame at or after t
    prv = np.clip(nxt - 1, 0, None)
    prv = np.where(good[nxt] <= t, nxt, prv)  # detected frames (and after the last) map to themselves
    lo, hi = good[prv], good[nxt]
    span = np.maximum(hi - lo, 1)
    w = np.clip((t - lo) / span, 0.0, 1.0)  # 0 before the first detected frame: held
    w = w.reshape((-1,) + (1,) * (values.ndim - 1))
    out = (1.0 - w) * values[lo] + w * values[hi]
    return out.astype(values.dtype)
