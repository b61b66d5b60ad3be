"""Per-frame face landmarks: a detector adapter around MediaPipe face mesh and `detect_video`.

Coordinates are pixels of the input frame with pixel centres at +0.5 (a point at the left edge of
the image has u = 0, the centre of pixel 0 has u = 0.5); MediaPipe's normalised x, y are scaled by
the frame width and height. `depth` is MediaPipe's relative z scaled by the frame width (the scale
MediaPipe gives it), in pixels: smaller is nearer the camera, zero near the head's centre plane.

The detector is injectable: anything that maps one uint8 `[H,W,3]` frame to a list of
`FaceObservation` works, so the subject/interpolation logic is testable without MediaPipe.

Per-frame confidence (in [0, 1], 0 where detection failed) is the product of
- the MediaPipe face *detector* score of the box matched to the subject's landmarks (MediaPipe's
  mesh only reports landmarks that passed its presence threshold, but not the presence itself);
  on frames where the detector did not run (the graph keeps tracking from the previous landmarks)
  the score carries over from the last earlier frame that has one (at the start, the first), and
- a landmark stability factor: how far the landmarks are from the mean of their two neighbours in
  time, relative to the inter-ocular distance (a glitch or a swap of faces stands out; smooth
  head and mouth motion barely registers). See `landmark_stability`.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.head.embedding import NUM_LANDMARKS
from avatar3d.runtime import quiet_native_logs
from avatar3d.tracking.faces import EYE_OUTER, FaceObservation
from avatar3d.tracking.subject import select_subject

STABILITY_SIGMA = 0.03  # RMS second difference (in inter-ocular distances) where stability is e^-0.5;
# talking at 25 fps stays below ~0.02 (factor > 0.8), a glitch or swap of faces is far above


class TrackingWarning(UserWarning):
    """Something in the video may spoil tracking but did not stop it (e.g. a second face)."""


class FaceDetector(Protocol):
    """A stateful per-video detector: frames are given in order."""

    def __call__(self, frame: np.ndarray) -> list[FaceObservation]:  # frame: [H,W,3] uint8 RGB
        ...


@dataclass
class LandmarkTrack:
    """The subject's landmarks for every frame of a video (failed frames interpolated and marked)."""

    points: np.ndarray  # [T,478,2] float32 pixels (pixel centres at +0.5)
    depth: np.ndarray  # [T,478] float32 relative depth in pixels (smaller = nearer)
    confidence: np.ndarray  # [T] float32 in [0,1]; 0 where detection failed
    detected: np.ndarray  # [T] bool; False: landmarks interpolated from the nearest detected frames
    num_faces: np.ndarray  # [T] int32 faces the detector found (subject included)
    image_size: tuple[int, int]  # (width, height) of the frames
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def failed_frames(self) -> np.ndarray:
        """Indices of frames whose landmarks were interpolated, int64 `[K]`."""
        return np.flatnonzero(~self.detected)


# ----------------------------------------------------------------------------------------- MediaPipe

def _box_overlap(inner: tuple[float, float, float, float], outer: tuple[float, float, float, float]) -> float:
    """Fraction of `inner`'s area inside `outer` (boxes as x0, y0, x1, y1)."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return max(w, 0.0) * max(h, 0.0) / area if area > 0 else 0.0


class MediaPipeFaceMesh:
    """MediaPipe 0.10.21 face mesh (legacy solutions API) in video mode, refined: 478 points with iris.

    `max_num_faces=2` so a second face is seen (and the subject choice can warn about it). The
    graph's face-detector output is observed too, to give each face a detection score. Use one
    instance per video (it tracks from frame to frame) and `close()` it, or use it as a context manager.
    """

    def __init__(self, max_num_faces: int = 2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False):
        for name, value in (("min_detection_confidence", min_detection_confidence),
                            ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}; use e.g. 0.5")
        if int(max_num_faces) < 1:
            raise InputError(f"max_num_faces must be at least 1, got {max_num_faces}; use 2 to notice a "
                             f"second face")
        try:
            from mediapipe.python.solution_base import SolutionBase
            from mediapipe.python.solutions import face_mesh as mp_face_mesh
        except ImportError as exc:
            raise BackendUnavailableError(
                f"MediaPipe is needed for landmark detection but does not import ({exc}); install "
                f"mediapipe==0.10.21 (pip install --no-deps mediapipe==0.10.21 plus "
                f"requirements/mediapipe.txt)") from exc
        # FaceMesh itself only exposes the landmarks; the same graph with its detections observed too.
        self._quiet_first_call = True  # TensorFlow Lite prints its banners on the first frame
        with quiet_native_logs():
            self._solution = SolutionBase(
                binary_graph_path=mp_face_mesh._BINARYPB_FILE_PATH,
                side_inputs={"num_faces": int(max_num_faces), "with_attention": True,
                             "use_prev_landmarks": not static_image_mode},
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                    "TensorsToDetectionsCalculator.min_score_thresh": float(min_detection_confidence),
                    "facelandmarkcpu__ThresholdingCalculator.threshold": float(min_tracking_confidence),
                },
                outputs=["multi_face_landmarks", "face_detections"])

    def __call__(self, frame: np.ndarray) -> list[FaceObservation]:  # frame: [H,W,3] uint8 RGB
        frame = _check_frame(frame)
        h, w = frame.shape[:2]
        quiet = quiet_native_logs() if self._quiet_first_call else contextlib.nullcontext()
        self._quiet_first_call = False
        with quiet:
            result = self._solution.process({"image": frame})
        faces = []
        for lms in result.multi_face_landmarks or []:
            xyz = np.array([(p.x, p.y, p.z) for p in lms.landmark], dtype=np.float32)  # [478,3]
            if xyz.shape[0] != NUM_LANDMARKS:
                raise BackendUnavailableError(
                    f"MediaPipe returned {xyz.shape[0]} landmarks instead of {NUM_LANDMARKS}; the refined "
                    f"(iris) model is required: install mediapipe==0.10.21")
            faces.append(FaceObservation(points=xyz[:, :2] * np.array([w, h], np.float32),
                                         depth=xyz[:, 2] * np.float32(w)))
        boxes = []
        for det in result.face_detections or []:
            rb = det.location_data.relative_bounding_box
            boxes.append(((rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h),
                          float(det.score[0]) if len(det.score) else math.nan))
        for face in faces:  # a detection box (eyes to mouth) lies mostly inside its face's landmark box
            overlaps = [(_box_overlap(box, face.box), score) for box, score in boxes]
            best = max(overlaps, default=(0.0, math.nan))
            if best[0] >= 0.5:
                face.score = best[1]
        return faces

    def close(self) -> None:
        self._solution.close()

    def __enter__(self) -> "MediaPipeFaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_frame(frame: np.ndarray) -> np.ndarray:  # frame: [H,W,3] uint8
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"a frame must be uint8 RGB [H,W,3], got {arr.dtype} {tuple(arr.shape)}; convert it "
                         f"first (e.g. (image * 255).round().astype(np.uint8), drop alpha)")
    return np.ascontiguousarray(arr)


# ----------------------------------------------------------------------------------------- confidence

def inter_ocular(points: np.ndarray) -> np.ndarray:  # points: [...,478,2] -> [...]
    """Outer-eye-corner distance in pixels (the face-size normaliser)."""
    return np.linalg.norm(points[..., EYE_OUTER[0], :] - points[..., EYE_OUTER[1], :], axis=-1)


def landmark_stability(points: np.ndarray, detected: np.ndarray,  # points: [T,478,2], detected: [T]
                       sigma: float = STABILITY_SIGMA) -> np.ndarray:
    """Per-frame factor in (0, 1]: exp(-0.5 (r/sigma)^2), r = RMS over the landmarks of half their
    second difference in time (p_t - (p_t-1 + p_t+1)/2), over the inter-ocular distance. Steady motion
    costs nothing. Next to a failed frame the second difference is taken one-sided (t, t-1, t-2 or
    t, t+1, t+2); a frame without two detected neighbours on either side gets 1."""
    T = points.shape[0]
    ok = np.asarray(detected, bool)
    p = points.astype(np.float64)
    r = np.zeros(T, dtype=np.float64)
    done = ~ok
    # (neighbour offsets) in order of preference: centred, backward, forward
    for a, b in ((-1, 1), (-1, -2), (1, 2)):
        t = np.arange(T)
        valid = ~done & (t + min(a, b) >= 0) & (t + max(a, b) < T)
        idx = t[valid]
        idx = idx[ok[idx + a] & ok[idx + b]]
        if idx.size:
            if (a, b) == (-1, 1):
                second = p[idx] - 0.5 * (p[idx + a] + p[idx + b])
            else:  # p_t - 2 p_t+a + p_t+b, halved to match the centred form
                second = 0.5 * (p[idx] - 2.0 * p[idx + a] + p[idx + b])
            r[idx] = _rms(second)
            done[idx] = True
    iod = np.maximum(inter_ocular(p), 1e-6)
    return np.exp(-0.5 * (r / iod / sigma) ** 2).astype(np.float32)


def _rms(diff: np.ndarray) -> np.ndarray:  # diff: [K,478,2] -> [K]
    return np.sqrt((diff ** 2).sum(-1).mean(-1))


def _fill_scores(scores: np.ndarray, detected: np.ndarray) -> np.ndarray:  # [T], [T] -> [T]
    """Carry detector scores into detected frames that lack one (nearest earlier, else later; 1 if none)."""
    out = scores.astype(np.float64).copy()
    have = detected & np.isfinite(out)
    if not have.any():
        out[detected] = 1.0
        return out
    idx = np.flatnonzero(have)
    # last frame with a score at or before t; before the first one, the first one
    source = idx[np.clip(np.searchsorted(idx, np.arange(len(out)), side="right") - 1, 0, None)]
    fill = detected & ~have
    out[fill] = out[source[fill]]
    return out


# ----------------------------------------------------------------------------------------- the video

def detect_video(frames: Iterable[np.ndarray],  # each [H,W,3] uint8 RGB
                 detector: FaceDetector | None = None, *,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 max_missing_fraction: float = 0.5, progress: Callable[[int], None] | None = None,
                 ) -> LandmarkTrack:
    """Detect the subject's landmarks on every frame of a stream; only landmarks are kept.

    `detector` defaults to a fresh `MediaPipeFaceMesh` (closed at the end). The subject is the
    largest face (followed by overlap from frame to frame); a second face of similar size gives a
    warning; more than `max_missing_fraction` of frames without a face raises InputError. Frames
    where detection failed get landmarks interpolated in time and `detected=False`.
    `progress(i)` is called after each frame.
    """
    own = detector is None
    if own:
        detector = MediaPipeFaceMesh(min_detection_confidence=min_detection_confidence,
                                     min_tracking_confidence=min_tracking_confidence)
    per_frame: list[list[FaceObservation]] = []
    size: tuple[int, int] | None = None
    try:
        for i, frame in enumerate(frames):
            frame = _check_frame(frame)
            h, w = frame.shape[:2]
            if size is None:
                size = (w, h)
            elif size != (w, h):
                raise InputError(f"frame {i} is {w}x{h} but the video started at {size[0]}x{size[1]}; "
                                 f"every frame must have the same size (re-encode the clip)")
            per_frame.append(list(detector(frame)))
            if progress is not None:
                progress(i)
    finally:
        if own:
            detector.close()
    if size is None:
        raise InputError("the video has no frames; pass a clip that contains the face")

    sel = select_subject(per_frame, max_missing_fraction=max_missing_fraction)
    for message in sel.warnings:
        warnings.warn(message, TrackingWarning, stacklevel=2)
    stability = landmark_stability(sel.points, sel.detected)
    confidence = np.where(sel.detected, _fill_scores(sel.scores, sel.detected) * stability, 0.0)
    return LandmarkTrack(points=sel.points, depth=sel.depth,
                         confidence=np.clip(confidence, 0.0, 1.0).astype(np.float32),
                         detected=sel.detected, num_faces=sel.num_faces, image_size=size,
                         warnings=list(sel.warnings))
