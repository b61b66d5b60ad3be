"""Dubbing (drive/dub.py): the speech's mouth in another driver's motion, as long as the speech."""
from __future__ import annotations

import numpy as np
import pytest

from avatar3d.drive.dub import dub, ping_pong, speech_channels
from avatar3d.drive.params import DriveParams
from avatar3d.errors import InputError


def test_ping_pong_plays_forward_then_backward_without_jumps():
    assert ping_pong(10, 4, 25.0, 25.0).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert ping_pong(5, 1, 25.0, 25.0).tolist() == [0] * 5
    half = ping_pong(8, 10, 25.0, 12.5)  # a slower motion is held for two frames each
    assert half[0] == 0 and half[-1] == 4 and set(np.diff(half).tolist()) <= {0, 1}
    with pytest.raises(InputError, match="no frames"):
        ping_pong(3, 0, 25.0, 25.0)


def test_speech_channels_are_the_mouths():
    from avatar3d.head.registry import load_rig

    rig = load_rig("synthetic")
    mask = speech_channels(rig)
    speech = {n for n, m in zip(rig.expr_names, mask) if m}
    assert {"mouthSmile_L", "mouthSmile_R", "mouthPucker"} <= speech
    assert not speech & {"eyeBlink_L", "eyeBlink_R", "browInnerUp", "browDown"}


def _params(rng, frames: int, channels: int, fps: float, audio_s=None) -> DriveParams:
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    audio = None if audio_s is None else f(int(audio_s * 16000))
    return DriveParams(f(4), f(frames, channels), f(frames, 3), f(frames, 3), f(frames, 3), f(frames, 2, 3),
                       f(frames, 3), fps=fps, audio=audio)


def test_dub_takes_the_mouth_and_sound_from_speech_and_the_rest_from_motion(seed):
    rng = np.random.default_rng(seed)
    motion, speech = _params(rng, 7, 6, 25.0), _params(rng, 20, 6, 25.0, audio_s=0.8)
    mask = rng.random(6) < 0.5
    out = dub(motion, speech, mask)
    frames = ping_pong(20, 7, 25.0, 25.0)
    assert len(out) == 20 and out.fps == 25.0 and out.source == "dub"
    np.testing.assert_array_equal(out.audio, speech.audio)
    np.testing.assert_array_equal(out.expr[:, mask], speech.expr[:, mask])
    np.testing.assert_array_equal(out.expr[:, ~mask], motion.expr[frames][:, ~mask])
    np.testing.assert_array_equal(out.jaw, speech.jaw)
    for key in ("neck", "global_rot", "eyes", "transl"):
        np.testing.assert_array_equal(getattr(out, key), getattr(motion, key)[frames])
    np.testing.assert_array_equal(out.shape, speech.shape)
    with pytest.raises(InputError, match="expression channels"):
        dub(_params(rng, 7, 5, 25.0), speech, mask)
