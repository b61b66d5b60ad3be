"""Identity distance (eval/identity.py): dlib's face-recognition embedding tells one person from another, and a
picture without a face is counted, never dropped."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("dlib", reason="identity scores need dlib-bin (installed by make)")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("identity scores need face_recognition_models (installed by make)", allow_module_level=True)

from avatar3d.eval.identity import SAME_PERSON, FaceEmbedder, distance_to_person, paired_distance  # noqa: E402


@pytest.fixture(scope="module")
def embed():
    return FaceEmbedder()


def _frames(video, indices):
    from avatar3d.io.media import VideoReader

    wanted, out = set(indices), {}
    with VideoReader(video) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                out[i] = frame
            if len(out) == len(wanted):
                break
    return [out[i] for i in indices]


def test_pictures_without_a_face_are_counted(embed, seed):
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
    assert embed(noise[0]) is None
    score = paired_distance(embed, noise, noise)
    assert (score.mean, score.pairs, score.no_face_real, score.no_face_render) == (None, 0, 3, 3)
    assert score.as_dict()["identity_no_face_render"] == 3


def test_one_person_is_near_and_another_far(embed, shared):
    german = _frames(shared / "data" / "video" / "German_20s.mp4", [0, 300])
    may = _frames(shared / "data" / "video" / "May_5s.mp4", [0])
    g0, g1, m0 = (embed(f) for f in (*german, *may))
    assert g0 is not None and g1 is not None and m0 is not None and g0.shape == (128,)
    same, other = float(np.linalg.norm(g0 - g1)), float(np.linalg.norm(g0 - m0))
    assert same < SAME_PERSON < other
    score = distance_to_person([g0, None], [german[1], may[0], np.zeros((64, 64, 3), np.uint8)], embed)
    assert score.no_face_real == 1 and score.no_face_render == 1 and score.pairs == 2
    assert score.mean == pytest.approx((same + other) / 2, rel=1e-5)
