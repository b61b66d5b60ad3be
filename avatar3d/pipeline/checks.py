"""Input checks run before tracking and training (`avatar3d enroll`): is this clip good enough?

A quick pass, seconds not minutes: the video's header (length, size, sound), the sound's level, and
MediaPipe landmarks on a subsample of the frames, from which come
- face size: inter-ocular distance (outer eye corners) and the side of the head crop tracking will cut
  (`crop.DEFAULT_MARGIN` x the landmark box) in source pixels;
- head turn: yaw and pitch per sampled frame from a weak-perspective fit (a quick PnP without intrinsics:
  affine fit of MediaPipe's canonical face to the 2D landmarks, projected onto the nearest rotation),
  reported as the 5th..95th percentile range in degrees (DESIGN.md's signs: yaw > 0 turns the face to
  the subject's left, pitch > 0 looks down);
- mouth motion: inner-lip gap (landmarks 13/14) over the inter-ocular distance, 5th..95th percentile range;
- hands: MediaPipe Hands on the sampled frames with a face; a hand whose landmark box covers more than a tenth of
  the face's is in front of it (the avatar would learn the hand as part of the face); two such frames warn.

Problems that make enrollment pointless are `errors` (the caller raises `InputError`); problems that
give a weaker avatar are `warnings`, each with concrete advice. The landmark detector is injectable
(any callable frame -> list of `FaceObservation`), so the rules are testable without MediaPipe.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from avatar3d.errors import InputError
from avatar3d.io.media import AUDIO_RATE

MIN_SECONDS, GOOD_SECONDS = 2.0, 5.0
MIN_CROP_PX = 256  # head crop side (source pixels) below which training upsamples: blurry avatar
MIN_INTEROCULAR_PX = 12.0  # below this the landmark fit itself fails
MIN_FACE_FRACTION, GOOD_FACE_FRACTION = 0.5, 0.9
MIN_YAW_RANGE_DEG = 15.0
MIN_PITCH_RANGE_DEG = 5.0
MIN_MOUTH_RANGE = 0.05  # inner-lip gap range in inter-ocular distances; a closed mouth ~0.01, the dev
# clips (both talking throughout) 0.07 (a reserved news anchor) and 0.21
MIN_AUDIO_RMS = 3e-3  # below: the sound track is (nearly) silent
TARGET_SAMPLES_PER_SECOND = 6.0
MAX_SAMPLES = 150
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
HAND_OVER_FACE = 0.1  # a hand's landmark box covering more than this share of the face's: a hand in front of it
MIN_HAND_FRAMES = 2  # sampled frames (~1/6 s apart) with one before warning: a hand passing stays that long


@dataclass
class CheckReport:
    """The outcome of `check_video`."""

    warnings: list[str] = field(default_factory=list)
    """Weak-avatar risks, each with advice; enrollment goes on."""
    errors: list[str] = field(default_factory=list)
    """Problems that stop enrollment (the caller raises InputError with them)."""
    stats: dict = field(default_factory=dict)
    """Measured figures (seconds, pixels, degrees)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise `InputError` listing every error (no-op when there is none)."""
        if self.errors:
            raise InputError("the video cannot be enrolled: " + "; ".join(self.errors))


# ------------------------------------------------------------------------------------------ geometry
_CANONICAL: Optional[np.ndarray] = None


def canonical_face() -> np.ndarray:
    """MediaPipe's canonical face, [468,3] metres, rig axes (x subject's left, y up, z out of the face)."""
    global _CANONICAL
    if _CANONICAL is None:
        from avatar3d.head.embedding import load_canonical_face

        _CANONICAL = load_canonical_face()[0].astype(np.float64)
    return _CANONICAL


def head_angles(points: np.ndarray,  # [K,>=468,2] landmarks, image pixels (x right, y down)
                ) -> tuple[np.ndarray, np.ndarray]:
    """(yaw [K], pitch [K]) in degrees from a weak-perspective fit of the canonical face per frame."""
    X = canonical_face()
    Xc = X - X.mean(axis=0)  # [468,3]
    pinv = np.linalg.pinv(Xc)  # [3,468]
    pts = np.asarray(points, np.float64)[:, : X.shape[0]]
    uv = pts - pts.mean(axis=1, keepdims=True)
    uv[..., 1] *= -1.0  # image y down -> rig y up; image x right is the subject's left (camera facing them)
    A = np.einsum("vn,knc->kcv", pinv, uv)  # [K,2,3]: uv ~ Xc @ A^T (scaled first two rows of R)
    U, _, Vt = np.linalg.svd(A, full_matrices=False)
    rows = U @ Vt  # [K,2,3] nearest orthonormal rows
    r3 = np.cross(rows[:, 0], rows[:, 1])
    R = np.concatenate([rows, r3[:, None]], axis=1)  # [K,3,3], R = Ry(yaw) Rx(pitch) (roll ignored)
    yaw = np.degrees(np.arctan2(R[:, 0, 2], R[:, 2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(-R[:, 1, 2], -1.0, 1.0)))
    return yaw, pitch


def _spread(values: np.ndarray) -> float:
    """5th..95th percentile range (robust to a few bad detections)."""
    if values.size == 0:
        return 0.0
    lo, hi = np.percentile(values, [5, 95])
    return float(hi - lo)


# ------------------------------------------------------------------------------------------ the rules
def analyse_landmarks(points: np.ndarray,  # [K,478,2] landmarks of the frames with a face, pixels
                      sampled: int, report: CheckReport) -> None:
    """Face size, head turn and mouth motion rules on the sampled landmarks (adds to `report`)."""
    from avatar3d.tracking.crop import DEFAULT_MARGIN
    from avatar3d.tracking.landmarks import inter_ocular

    found = int(points.shape[0])
    fraction = found / sampled if sampled else 0.0
    report.stats["face_fraction"] = round(fraction, 3)
    if found == 0:
        report.errors.append("no face was found in the sampled frames; film the face from the front, well lit "
                             "and unobstructed, filling a good part of the frame")
        return
    if fraction < MIN_FACE_FRACTION:
        report.errors.append(f"a face is visible in only {100 * fraction:.0f}% of the sampled frames; keep the "
                             f"whole face in view for the entire clip (trim the parts without it)")
    elif fraction < GOOD_FACE_FRACTION:
        report.warnings.append(f"the face is lost in {100 * (1 - fraction):.0f}% of the sampled frames (frames "
                               f"without a face are left out of training and evaluation); keep the face in view and "
                               f"unobstructed throughout")
    iod = inter_ocular(points)  # [K]
    box = points.max(axis=1) - points.min(axis=1)  # [K,2]
    face_w = float(np.median(box[:, 0]))
    crop = float(np.median(box.max(axis=1))) * DEFAULT_MARGIN
    report.stats.update(inter_ocular_px=round(float(np.median(iod)), 1), face_width_px=round(face_w, 1),
                        crop_px=round(crop, 1))
    if float(np.median(iod)) < MIN_INTEROCULAR_PX:
        report.errors.append(f"the face is tiny (eyes {np.median(iod):.0f} px apart): landmarks cannot be fitted; "
                             f"move much closer to the camera so the face fills at least a third of the frame")
    elif crop < MIN_CROP_PX:
        report.warnings.append(f"move closer or film at a higher resolution: the face is only {face_w:.0f} px "
                               f"wide (a {crop:.0f} px head crop, upsampled for training, gives a blurry avatar; "
                               f"aim for a face at least {MIN_CROP_PX / DEFAULT_MARGIN:.0f} px wide)")
    yaw, pitch = head_angles(points)
    yaw_range, pitch_range = _spread(yaw), _spread(pitch)
    gap = np.linalg.norm(points[:, UPPER_INNER_LIP] - points[:, LOWER_INNER_LIP], axis=-1) / np.maximum(iod, 1e-6)
    mouth_range = _spread(gap)
    report.stats.update(yaw_range_deg=round(yaw_range, 1), pitch_range_deg=round(pitch_range, 1),
                        yaw_deg=[round(float(yaw.min()), 1), round(float(yaw.max()), 1)],
                        pitch_deg=[round(float(pitch.min()), 1), round(float(pitch.max()), 1)],
                        mouth_open_range=round(mouth_range, 3))
    if yaw_range < MIN_YAW_RANGE_DEG:
        report.warnings.append(f"the head turns only {yaw_range:.0f} degrees in this clip: turn your head left "
                               f"and right once (about 20 degrees each way) so the avatar also looks right "
                               f"from the side")
    if pitch_range < MIN_PITCH_RANGE_DEG:
        report.warnings.append(f"the head hardly tilts ({pitch_range:.0f} degrees): look slightly up and down "
                               f"once (a small nod) so views from above and below are learnt too")
    if mouth_range < MIN_MOUTH_RANGE:
        report.warnings.append(f"the mouth hardly moves (inner-lip gap varies by {mouth_range:.2f} eye "
                               f"distances): speak throughout the clip, with the mouth opening naturally, so "
                               f"the mouth interior and lip shapes are learnt")


def _check_header(duration: float, width: int, height: int, report: CheckReport) -> None:
    report.stats.update(duration_s=round(duration, 2), width=int(width), height=int(height))
    if duration < MIN_SECONDS:
        report.errors.append(f"the clip is only {duration:.1f} s long; record at least {GOOD_SECONDS:.0f} s "
                             f"(better 10-20 s) of yourself talking")
    elif duration < GOOD_SECONDS:
        report.warnings.append(f"the clip is only {duration:.1f} s long: record 10-20 s of talking for a better "
                               f"avatar (more expressions and views)")


def _check_audio(path: Path, has_audio: bool, report: CheckReport) -> None:
    report.stats["has_audio"] = bool(has_audio)
    if not has_audio:
        report.warnings.append("the clip has no sound track: audio-to-expression cannot be trained from it; "
                               "record with sound and speak throughout the clip")
        return
    from avatar3d.io.media import read_audio

    audio = read_audio(path, AUDIO_RATE)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    report.stats["audio_rms"] = round(rms, 5)
    if rms < MIN_AUDIO_RMS:
        report.warnings.append("the sound track is (nearly) silent: speak throughout the clip, close enough to "
                               "the microphone, so audio-to-expression can be trained")


def _largest_face(faces) -> Optional[np.ndarray]:
    if not faces:
        return None
    return np.asarray(max(faces, key=lambda f: f.area).points, np.float32)


def check_video(path: os.PathLike, *, sample_every: Optional[int] = None,
                detector: Optional[Callable[[np.ndarray], list]] = None,
                hands: Optional[Callable[[np.ndarray], list]] = None) -> CheckReport:
    """Check an enrollment video; returns a `CheckReport` (errors are not raised here).

    sample_every: run landmarks on every n-th frame (default: about 6 per second, at most 150 frames)
    detector: frame uint8 [H,W,3] -> list of `FaceObservation` (default: MediaPipe face mesh)
    hands: frame -> list of hand landmarks [21,2] pixels, run on the sampled frames with a face (default:
    MediaPipe Hands)
    """
    from avatar3d.io.media import VideoReader

    started = time.perf_counter()
    path = Path(path)
    report = CheckReport()
    with VideoReader(path) as video:  # MediaError for a missing/broken file
        fps, total = float(video.fps), int(video.num_frames)
        duration = total / fps if fps > 0 else 0.0
        _check_header(duration, video.width, video.height, report)
        _check_audio(path, video.has_audio, report)
        if sample_every is None:
            sample_every = max(int(round(fps / TARGET_SAMPLES_PER_SECOND)), math.ceil(total / MAX_SAMPLES), 1)
        if int(sample_every) < 1:
            raise InputError(f"sample_every must be at least 1, got {sample_every}")
        found, covered, sampled = _sample_faces(video, int(sample_every), detector, hands)
    points = np.stack(found) if found else np.zeros((0, 478, 2), np.float32)
    report.stats.update(fps=round(fps, 3), frames=total, sample_every=int(sample_every), sampled_frames=sampled)
    analyse_landmarks(points, sampled, report)
    analyse_hands([i / fps if fps > 0 else 0.0 for i in covered], len(found), report)
    report.stats["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _sample_faces(video, sample_every: int, detector, hands) -> tuple[list[np.ndarray], list[int], int]:
    """(the largest face's landmarks per sampled frame that has one, the frames where a hand covers that face,
    the number of frames sampled); the detectors default to MediaPipe's and are closed here when they are ours."""
    own_faces, own_hands = detector is None, hands is None
    if own_faces:
        from avatar3d.tracking.landmarks import MediaPipeFaceMesh

        detector = MediaPipeFaceMesh(max_num_faces=1)
    if own_hands:
        from avatar3d.tracking.hands import MediaPipeHands

        hands = MediaPipeHands()
    found, covered, sampled = [], [], 0
    try:
        for i, frame in enumerate(video):
            if i % sample_every:
                continue
            sampled += 1
            face = _largest_face(detector(frame))
            if face is None:
                continue
            found.append(face)
            if any(hand_over_face(hand, face) > HAND_OVER_FACE for hand in hands(frame)):
                covered.append(i)
    finally:
        if own_faces:
            detector.close()
        if own_hands:
            hands.close()
    return found, covered, sampled


def hand_over_face(hand: np.ndarray, face: np.ndarray) -> float:  # hand: [21,2], face: [478,2] pixels
    """The share of the face's landmark box that the hand's landmark box covers."""
    lo = np.maximum(hand.min(0), face.min(0))
    hi = np.minimum(hand.max(0), face.max(0))
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    area = float(np.prod(face.max(0) - face.min(0)))
    return inter / area if area > 0 else 0.0


def analyse_hands(covered: list[float], with_face: int, report: CheckReport) -> None:
    """The hand rule: a warning when a hand covers the face in any sampled frame (`covered`: their times, seconds)."""
    report.stats["hand_over_face_frames"] = len(covered)
    if len(covered) < MIN_HAND_FRAMES:
        return
    times = ", ".join(f"{t:.1f} s" for t in covered[:5]) + (" ..." if len(covered) > 5 else "")
    report.warnings.append(f"a hand passes in front of the face in {len(covered)} of {with_face} sampled frames "
                           f"(at {times}): the avatar learns the hand as part of the face there; film with the "
                           f"hands away from the face, or trim those moments")


def format_report(report: CheckReport) -> str:
    """Human-readable lines for the enroll summary."""
    lines = [f"error: {e}" for e in report.errors] + [f"warning: {w}" for w in report.warnings]
    s = report.stats
    if "inter_ocular_px" in s:
        lines.append(f"input: {s.get('duration_s')} s, face {s['face_width_px']:.0f} px wide, head turn "
                     f"{s.get('yaw_range_deg', 0):.0f} deg, nod {s.get('pitch_range_deg', 0):.0f} deg, mouth range "
                     f"{s.get('mouth_open_range', 0):.2f}, sound {'yes' if s.get('has_audio') else 'no'}")
    return "\n".join(lines)
