"""A face as the landmark detector reports it (`FaceObservation`), and the eye corners that scale it
(the landmark count and the other face-mesh indices live with the mesh, in head/embedding.py).

Shared by the detector adapter (landmarks.py) and the subject selection (subject.py), which reads only these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EYE_OUTER = (33, 263)  # outer eye corners (image-left eye, image-right eye for a frontal face)


@dataclass
class FaceObservation:
    """One face found in one frame."""

    points: np.ndarray  # [478,2] float32 pixels
    depth: np.ndarray  # [478] float32 pixels (relative)
    score: float = math.nan  # detector score of the matched detection box; nan when none matched

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Landmark bounding box (x0, y0, x1, y1) in pixels."""
        lo, hi = self.points.min(axis=0), self.points.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
