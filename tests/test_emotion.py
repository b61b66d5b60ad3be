"""Emotion control (drive/emotion.py): the table on a rig's names, the person's reach, keyframes, and speech
keeping the mouth."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar3d.drive.controls import Controls
from avatar3d.drive.emotion import EMOTIONS, MIN_REACH, Emotion, EmotionPath, parse_emotion, unit_channels
from avatar3d.drive.face import PersonStats, apply_face_controls
from avatar3d.errors import InputError
from avatar3d.head.rig import RigParams

ICT_NAMES = ["browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
             "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
             "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward", "jawLeft", "jawRight",
             "mouthClose", "mouthDimple_L", "mouthDimple_R", "mouthFrown_L", "mouthFrown_R", "mouthFunnel",
             "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R", "mouthPress_L", "mouthPress_R", "mouthPucker",
             "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L",
             "mouthSmile_R", "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L",
             "noseSneer_R"]  # the installed ICT-FaceKit rig's expression channels, in its order


def test_parse_names_and_intensities():
    assert parse_emotion("happy") == Emotion("happy", 1.0)
    assert parse_emotion(" Sad:0.5 ") == Emotion("sad", 0.5)
    assert parse_emotion(None) is None and parse_emotion("") is None
    with pytest.raises(InputError, match="unknown emotion 'joy'; use one of neutral, happy"):
        parse_emotion("joy")
    with pytest.raises(InputError, match="NAME:INTENSITY"):
        parse_emotion("happy:lots")
    with pytest.raises(InputError, match="outside 0..2"):
        parse_emotion("happy:3")


def test_every_emotion_moves_only_its_units_on_ict_names(seed):
    reach = np.random.default_rng(seed).uniform(0.0, 1.0, len(ICT_NAMES)).astype(np.float32)
    for name, units in EMOTIONS.items():
        expr, jaw = Emotion(name, 1.0).offsets(ICT_NAMES, reach)
        wanted = {c for u in units if u != "AU26" for c in unit_channels(u, ICT_NAMES)}
        assert {i for i in range(len(ICT_NAMES)) if expr[i] != 0} == wanted, name
        for c in wanted:  # the person's reach, never under MIN_REACH
            weight = sum(w for u, w in units.items() if u != "AU26" and c in unit_channels(u, ICT_NAMES))
            assert expr[c] == pytest.approx(weight * max(reach[c], MIN_REACH), rel=1e-5)
        assert (jaw > 0) == ("AU26" in units)
    assert [ICT_NAMES[i] for i in unit_channels("AU6", ICT_NAMES)] == ["cheekSquint_L", "cheekSquint_R"]
    with_raiser = [*ICT_NAMES, "cheekRaiser_L", "cheekRaiser_R"]  # a rig with AU6's own shape uses it
    assert [with_raiser[i] for i in unit_channels("AU6", with_raiser)] == ["cheekRaiser_L", "cheekRaiser_R"]
    assert [ICT_NAMES[i] for i in unit_channels("AU12R", ICT_NAMES)] == ["mouthSmile_R"]  # contempt: one side
    half, _ = Emotion("sad", 0.5).offsets(ICT_NAMES, reach)
    np.testing.assert_allclose(half * 2, Emotion("sad", 1.0).offsets(ICT_NAMES, reach)[0], rtol=1e-6)


def test_a_rig_without_the_shapes_leaves_the_units_out():
    names = ["eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "browDown", "mouthPucker"]
    expr, _ = Emotion("happy").offsets(names, np.zeros(len(names), np.float32))
    assert expr.tolist() == [0, 0, MIN_REACH, MIN_REACH, 0, 0, 0]
    expr, _ = Emotion("sad").offsets(names, np.zeros(len(names), np.float32))
    assert expr[4] == MIN_REACH and expr[5] == pytest.approx(0.4 * MIN_REACH)


def test_keyframes_blend_and_hold(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"keyframes": [{"t": 0, "emotion": "neutral"},
                                              {"t": 2, "emotion": "happy", "intensity": 0.8}]}))
    track = EmotionPath.load(path)
    assert track.at(-1.0) == [(Emotion("neutral"), 1.0)] and track.at(5.0) == [(Emotion("happy", 0.8), 1.0)]
    (a, wa), (b, wb) = track.at(0.5)
    assert (a.name, b.name, wa, wb) == ("neutral", "happy", 0.75, 0.25)
    path.write_text(json.dumps({"keyframes": [{"t": 1, "emotion": "happy"}, {"t": 1, "emotion": "sad"}]}))
    with pytest.raises(InputError, match="increasing times"):
        EmotionPath.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="not an emotion path"):
        EmotionPath.load(path)
    path.write_text('{"keyframes": [{"t": NaN, "emotion": "happy"}]}')
    with pytest.raises(InputError, match="finite"):
        EmotionPath.load(path)
    path.write_text('{"keyframes": [{"t": 0, "emotion": "glee"}]}')
    with pytest.raises(InputError, match="keyframe 1: unknown emotion 'glee'"):
        EmotionPath.load(path)
    with pytest.raises(InputError, match="pass an avatar3d.drive.emotion.Emotion"):
        Controls(emotion="happy")


def _stats(rng, names, jaw_reach=0.2):
    t = 50
    expr = rng.uniform(0, 0.6, (t, len(names)))
    stats = PersonStats.from_arrays(expr, np.zeros((t, 3)), np.zeros((t, 3)), np.zeros((t, 2, 3)),
                                    np.zeros((t, 3)), np.zeros((t, 3)), names)
    stats.jaw_reach = jaw_reach
    stats.speech_mask = np.array([n.startswith("mouth") for n in names])
    return stats


def _frame(stats, jaw_open: float) -> RigParams:
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    expr = torch.as_tensor(stats.expr)[None].clone()
    return RigParams(z(4), expr, z(1, 3), z(1, 3), torch.tensor([[jaw_open, 0.0, 0.0]]), z(1, 2, 3), z(1, 3))


def test_speech_keeps_the_mouth_and_the_upper_face_keeps_the_emotion(seed):
    stats = _stats(np.random.default_rng(seed), ICT_NAMES)
    controls = Controls(emotion=Emotion("angry"))
    offsets, _ = Emotion("angry").offsets(ICT_NAMES, stats.reach)
    mouth = stats.speech_mask
    for jaw_open, mouth_share in ((0.0, 1.0), (0.1, 0.5), (0.4, 0.0)):
        out = apply_face_controls(_frame(stats, jaw_open), stats, controls, ICT_NAMES)
        added = (out.expr[0] - torch.as_tensor(stats.expr)).numpy()
        np.testing.assert_allclose(added[~mouth], offsets[~mouth], atol=1e-6)
        np.testing.assert_allclose(added[mouth], mouth_share * offsets[mouth], atol=1e-6)
    surprised = apply_face_controls(_frame(stats, 0.0), stats, Controls(emotion=Emotion("surprised")), ICT_NAMES)
    assert float(surprised.jaw[0, 0]) == pytest.approx(np.deg2rad(0.7 * 12.0), rel=1e-4)  # the jaw drops at rest


def test_an_emotion_changes_the_rendered_face(synthetic_avatar_dir):
    """On the synthetic rig (smiles, brows, no cheeks): every emotion it has shapes for shows in the picture."""
    from avatar3d.api import Avatar

    avatar = Avatar.load(synthetic_avatar_dir, backend="cpu")
    params = avatar.tracked().slice(0, 1)

    def drawn(emotion=None):
        return avatar.render_frame(params, 0, Controls(emotion=emotion), resolution=128).image.astype(np.int16)

    plain = drawn()
    change = {name: np.abs(drawn(Emotion(name)) - plain).max() for name in ("happy", "sad", "surprised", "neutral")}
    assert change["neutral"] == 0
    assert change["happy"] > 4 and change["sad"] > 10 and change["surprised"] > 30, change
