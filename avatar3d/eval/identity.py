"""Identity distance: is the render still this person? dlib's face-recognition embedding, offline.

dlib (the `dlib-bin` wheel) finds the face (its HOG detector) and its five landmarks, and its ResNet (the
`face_recognition_models` wheel) maps the aligned face to 128 numbers; two pictures of one person are usually
under SAME_PERSON apart (the field's CSIM asks the same question with another network). A picture where no face is
found is counted, never silently dropped.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from avatar3d.errors import BackendUnavailableError

SAME_PERSON = 0.6  # dlib's usual threshold between one person and two
_INSTALL = ("identity scores need dlib and its face models: `pip install dlib-bin face_recognition_models` (`make` "
            "installs both)")


def _models_folder() -> Path:
    """face_recognition_models' model files, found without importing it (its module needs the pkg_resources that
    recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(_INSTALL)
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    needed = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")
    if not all((folder / name).is_file() for name in needed):
        raise BackendUnavailableError(f"face_recognition_models is installed without its model files; {_INSTALL}")
    return folder


class FaceEmbedder:
    """The embedding of the largest face in a picture (None when there is none)."""

    def __init__(self, upsample: int = 0):
        try:
            import dlib
        except ImportError as err:
            raise BackendUnavailableError(_INSTALL) from err
        models = _models_folder()
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._network = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = int(upsample)

    def __call__(self, image: np.ndarray) -> Optional[np.ndarray]:  # image: [H,W,3] uint8 RGB -> [128] or None
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        faces = self._detector(image, self.upsample)
        if not len(faces):
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = self._landmarks(image, face)
        return np.asarray(self._network.compute_face_descriptor(image, shape), dtype=np.float32)


def embedder_or_none() -> Optional[FaceEmbedder]:
    """A FaceEmbedder, or None where dlib is not installed (the scores are then left out, not faked)."""
    try:
        return FaceEmbedder()
    except BackendUnavailableError:
        return None


@dataclass
class IdentityScore:
    """Distances between renders and real pictures of the person."""

    mean: Optional[float]  # mean distance over the pairs where both faces were found
    pairs: int  # pairs scored
    no_face_real: int  # real pictures where no face was found
    no_face_render: int  # renders where no face was found

    def as_dict(self, prefix: str = "identity") -> dict:
        return {f"{prefix}_distance": self.mean, f"{prefix}_pairs": self.pairs,
                f"{prefix}_no_face_real": self.no_face_real, f"{prefix}_no_face_render": self.no_face_render}


def paired_distance(embed: FaceEmbedder, reals: Sequence[np.ndarray], renders: Sequence[np.ndarray]) -> IdentityScore:
    """Each render against its own real frame (the held-out tail)."""
    real_e = [embed(r) for r in reals]
    render_e = [embed(r) for r in renders]
    d = [float(np.linalg.norm(a - b)) for a, b in zip(real_e, render_e) if a is not None and b is not None]
    return IdentityScore(float(np.mean(d)) if d else None, len(d), sum(e is None for e in real_e),
                         sum(e is None for e in render_e))


def distance_to_person(real_embeddings: Sequence[Optional[np.ndarray]], renders: Sequence[np.ndarray],
                       embed: FaceEmbedder) -> IdentityScore:
    """Renders under changed controls against every real picture of the person: the mean over all pairs."""
    real = np.stack([e for e in real_embeddings if e is not None]) if any(e is not None for e in real_embeddings) \
        else np.zeros((0, 128), np.float32)
    render_e = [embed(r) for r in renders]
    found = [e for e in render_e if e is not None]
    d = [float(np.linalg.norm(real - e, axis=1).mean()) for e in found] if len(real) else []
    return IdentityScore(float(np.mean(d)) if d else None, len(d) * len(real),
                         sum(e is None for e in real_embeddings), sum(e is None for e in render_e))
