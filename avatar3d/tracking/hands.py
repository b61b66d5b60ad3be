"""Hands in a frame: MediaPipe Hands (its palm and hand-landmark models ship inside the mediapipe wheel).

Enrollment's checks use it to notice a hand passing in front of the face: the avatar would learn the hand as part
of the face (pipeline/checks.py). The full landmark model: on German_20s (125 sampled frames, no hands) the lite
one took a talking mouth for a hand once; the full one never did, at the same ~7 ms a frame.
"""
from __future__ import annotations

import contextlib

import numpy as np

from avatar3d.errors import BackendUnavailableError
from avatar3d.runtime import quiet_native_logs

MAX_SIDE = 640  # frames are shrunk to this longer side first: hands near a face are large, and it is 4x faster


class MediaPipeHands:
    """frame uint8 [H,W,3] RGB -> list of hands, each its 21 landmarks [21,2] in the frame's pixels. Each frame is
    looked at on its own (static images: the checks sample frames far apart). `close()` it, or use `with`."""

    def __init__(self, max_num_hands: int = 2, min_detection_confidence: float = 0.6):
        try:
            from mediapipe.python.solutions import hands as mp_hands
        except ImportError as exc:
            raise BackendUnavailableError(
                f"MediaPipe is needed to find hands but does not import ({exc}); install mediapipe==0.10.21 "
                f"(pip install --no-deps mediapipe==0.10.21 plus requirements/mediapipe.txt)") from exc
        self._quiet_first_call = True  # TensorFlow Lite prints its banners on the first frame
        with quiet_native_logs():
            self._solution = mp_hands.Hands(static_image_mode=True, max_num_hands=int(max_num_hands),
                                            model_complexity=1, min_detection_confidence=float(min_detection_confidence))

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:  # frame: [H,W,3] uint8 RGB -> list of [21,2]
        h, w = frame.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        small = frame
        if scale < 1.0:
            import cv2

            small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        quiet = quiet_native_logs() if self._quiet_first_call else contextlib.nullcontext()
        self._quiet_first_call = False
        with quiet:
            result = self._solution.process(np.ascontiguousarray(small))
        hands = result.multi_hand_landmarks or []
        return [np.array([[p.x * w, p.y * h] for p in hand.landmark], np.float32) for hand in hands]

    def close(self) -> None:
        self._solution.close()

    def __enter__(self) -> "MediaPipeHands":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
