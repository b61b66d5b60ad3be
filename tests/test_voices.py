"""Telling voices apart (voiceprint.py, infer.voice_distance) and what the lips do in another voice: the
other-voice viseme table with each class's dominance, the opening levels laid onto the person's range, the rest
pose from the pauses, and the choices made on evidence (fit_blend / viseme_fit)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from avatar3d.audio2expr.features import SAMPLE_RATE, load_audio, pause_frames
from avatar3d.audio2expr.phonetic import COARTIC_S, OPENING_LEVEL, VISEME_NAMES, feature_names
from avatar3d.audio2expr.visemes import (DOMINANCE_OF_CLASS, RANGE_MIN, VisemeConfig, VisemeModel, dominance_weights,
                                         generic_table, prior_weights)
from avatar3d.audio2expr.voiceprint import (OTHER_VOICE, SAME_VOICE, VoicePrint, print_distance, voice_distance,
                                            voice_print)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "audio" / "eng_60s.wav").is_file(),
                                  reason="../shared/data (the development speech clips) is not here")


def synthetic_voice(rng: np.random.Generator, seconds: float, formants: tuple, level: float = 0.1) -> np.ndarray:
    """Noise through two resonances (a vocal tract's formants), switched on and off like syllables and words."""
    n = int(seconds * SAMPLE_RATE)
    x = rng.standard_normal(n)
    for f in formants:  # a two-pole resonance per formant
        r, theta = 0.97, 2 * np.pi * f / SAMPLE_RATE
        x = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], x)
    gate = np.repeat(rng.uniform(0, 1, n // 1600 + 1) > 0.3, 1600)[:n]  # 100 ms syllables, some silent
    x = x * gate
    return (level * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


# ------------------------------------------------------------------------------------------ voice prints
def test_one_voice_is_near_itself_at_any_level_and_far_from_another(seed):
    rng = np.random.default_rng(seed)
    a1, a2 = synthetic_voice(rng, 6.0, (500, 1500)), synthetic_voice(rng, 6.0, (500, 1500))
    b = synthetic_voice(rng, 6.0, (800, 2600))
    pa1, pa2, pb = voice_print(a1), voice_print(a2 * 20.0), voice_print(b)
    assert voice_distance(pa1, pa2) == 0.0  # another stretch of the same voice, 26 dB louder
    assert print_distance(pa1, pa2) < SAME_VOICE
    assert voice_distance(pa1, pb) == 1.0 and print_distance(pa1, pb) > OTHER_VOICE


def test_a_short_clip_of_the_same_voice_is_not_taken_for_a_stranger(seed):
    rng = np.random.default_rng(seed)
    long, short = synthetic_voice(rng, 10.0, (500, 1500)), synthetic_voice(rng, 1.2, (500, 1500))
    pl, ps = voice_print(long), voice_print(short)
    raw = float(np.sqrt(np.mean((pl.mean - ps.mean) ** 2)))  # without the sampling-noise correction
    assert print_distance(pl, ps) < raw and print_distance(pl, ps) < SAME_VOICE


def test_silence_has_no_print_and_a_print_round_trips():
    assert voice_print(np.zeros(3 * SAMPLE_RATE, np.float32)) is None
    rng = np.random.default_rng(5)
    p = voice_print(synthetic_voice(rng, 3.0, (500, 1500)))
    again = VoicePrint.from_json(p.to_json())
    assert again.frames == p.frames and np.allclose(again.mean, p.mean, atol=1e-4)
    assert print_distance(p, again) == 0.0


@needs_shared
def test_real_voices_one_speaker_and_others():
    german = load_audio(SHARED / "video" / "German_20s.mp4")
    first, second = voice_print(german[: 8 * SAMPLE_RATE]), voice_print(german[8 * SAMPLE_RATE: 16 * SAMPLE_RATE])
    assert voice_distance(first, second) == 0.0
    for name in ("eng_60s.wav", "faceformer_test.wav"):  # other men, one near the German speaker's pitch
        assert voice_distance(first, voice_print(load_audio(SHARED / "audio" / name))) == 1.0


def test_the_driving_voice_moves_the_share_by_its_print(seed):
    from avatar3d.audio2expr.infer import LoadedModel, voice_distance as model_voice_distance, voice_mix

    rng = np.random.default_rng(seed)
    enrolled = voice_print(synthetic_voice(rng, 8.0, (500, 1500)))
    config = {"phonetic_share": 0.25, "phonetic_share_other_voice": 1.0, "gain": 1.2, "gain_other_voice": 1.0,
              "voice_f0_hz": 140.0, "voice_print": enrolled.to_json()}
    model = LoadedModel(config, torch.zeros(1), torch.ones(1), torch.zeros(2, 3), [], None)
    same, other = synthetic_voice(rng, 4.0, (500, 1500)), synthetic_voice(rng, 4.0, (800, 2600))
    assert model_voice_distance(model, same) == 0.0 and voice_mix(model, same) == (0.25, 1.2)
    assert model_voice_distance(model, other) == 1.0 and voice_mix(model, other) == (1.0, 1.0)
    assert model_voice_distance(model, np.zeros(SAMPLE_RATE, np.float32)) == 1.0  # unmeasurable: a stranger


# ------------------------------------------------------------------------------------------ the other-voice table
def _class_features(rng: np.random.Generator, frames: int, classes: np.ndarray) -> np.ndarray:
    """Features whose occupancy at every coarticulation offset is one-hot on the given class per frame."""
    names, v = feature_names(), len(VISEME_NAMES)
    feats = np.zeros((frames, len(names)), np.float32)
    for k in range(len(COARTIC_S)):
        feats[np.arange(frames), k * v + classes] = 1.0
    feats[:, len(COARTIC_S) * v:] = rng.uniform(0, 1, (frames, len(names) - len(COARTIC_S) * v))
    return feats


def test_dominance_lets_a_closure_win_against_its_neighbours():
    names, v = feature_names(), len(VISEME_NAMES)
    closed, open_, tongue = (VISEME_NAMES.index(n) for n in ("closed", "open", "tongue"))
    feats = np.zeros((2, len(names)), np.float32)
    centre = COARTIC_S.index(0.0)
    for k in range(len(COARTIC_S)):  # frame 0: a P at the centre between open vowels; frame 1: a T there
        feats[0, k * v + (closed if k == centre else open_)] = 1.0
        feats[1, k * v + (tongue if k == centre else open_)] = 1.0
    plain, dominant = prior_weights(feats), dominance_weights(feats)
    assert np.allclose(dominant.sum(1), 1.0)
    assert dominant[0, closed] > plain[0, closed] * 1.5 and dominant[0, closed] > 0.5  # the P closes the lips
    assert dominant[1, tongue] < plain[1, tongue]  # the T leaves them to the vowels
    assert DOMINANCE_OF_CLASS[closed] > 1.0 > DOMINANCE_OF_CLASS[tongue]


def test_predict_moves_from_the_enrollment_table_to_the_other_voice_table(seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(VISEME_NAMES), 300)
    feats = _class_features(rng, 300, classes)
    target = torch.as_tensor(rng.standard_normal((len(VISEME_NAMES), 6)))[classes].float()
    model = VisemeModel.fit(VisemeConfig(), feats, target, None, None)
    own, other = model.predict(feats, 0.0), model.predict(feats, 1.0)
    assert torch.allclose(other, (torch.as_tensor(dominance_weights(feats)) @ model.table_other).float(), atol=1e-6)
    assert torch.allclose(model.predict(feats, 0.25), 0.25 * other + 0.75 * own, atol=1e-5)
    assert not torch.allclose(own, other, atol=1e-3)
    # a model saved before the other-voice table serves every voice with the enrollment table
    tensors = {k: v for k, v in model.tensors().items() if k != "viseme.table_other"}
    older = VisemeModel.from_tensors(model.cfg.to_json(), tensors)
    assert older.table_other is None and torch.allclose(older.predict(feats, 1.0), older.predict(feats, 0.0))
    assert torch.allclose(older.predict(feats, 0.0), own, atol=1e-5)


def test_other_voice_table_leans_on_the_generic_mouths(seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(VISEME_NAMES), 400)
    feats = _class_features(rng, 400, classes)
    target = torch.as_tensor(rng.standard_normal((400, 5))).float()
    model = VisemeModel.fit(VisemeConfig(prior_frames=1.0, other_prior_frames=1e6), feats, target, None, None)
    generic, rest, _ = generic_table(target.double(), torch.as_tensor(prior_weights(feats)), None)
    expected = generic.clone()
    expected[VISEME_NAMES.index("rest")] = rest  # silence pinned to the rest pose
    assert torch.allclose(model.table_other, expected, atol=1e-3)
    assert (model.table - generic).abs().max() > (model.table_other - generic).abs().max()


def test_generic_levels_span_the_persons_own_range(seed):
    rng = np.random.default_rng(seed)
    n = 500
    opening = rng.standard_normal(n) * 2.0 + 5.0
    y = torch.as_tensor(np.stack([opening, rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)], 1))
    grad = torch.tensor([1.0, 0.0, 0.0])  # channel 0 is the opening
    weights = torch.zeros(n, len(VISEME_NAMES), dtype=torch.float64)
    for parted in (False, True):  # rest at the bottom of the range, or lips parted at rest (mid-range)
        rest_frames = opening < np.quantile(opening, 0.1) if not parted else np.abs(opening - 5.0) < 0.3
        generic, rest, _ = generic_table(y, weights, grad, rest_frames)
        z = lambda v: float((v[0] - y[:, 0].mean()) / y[:, 0].std())  # noqa: E731
        widest = max(OPENING_LEVEL, key=OPENING_LEVEL.get)
        closest = min(OPENING_LEVEL, key=OPENING_LEVEL.get)
        zs = (y[:, 0] - y[:, 0].mean()) / y[:, 0].std()
        z_rest = float(zs[torch.as_tensor(rest_frames)].mean())  # each way at least RANGE_MIN from rest
        top = max(float(torch.quantile(zs, 0.95)), z_rest + RANGE_MIN)
        bottom = min(float(torch.quantile(zs, 0.02)), z_rest - RANGE_MIN)
        assert abs(z(generic[VISEME_NAMES.index(widest)]) - top) < 0.05
        assert abs(z(generic[VISEME_NAMES.index(closest)]) - bottom) < 0.05
        assert torch.allclose(generic[VISEME_NAMES.index("rest")], rest)
        assert torch.allclose(rest, y[torch.as_tensor(rest_frames)].mean(0))


def test_pause_frames_follow_the_start_time(seed):
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(5 * SAMPLE_RATE) * 0.1).astype(np.float32)
    wave[int(2.0 * SAMPLE_RATE): int(2.8 * SAMPLE_RATE)] = 0.0
    at0, later = pause_frames(wave, 25.0, 100), pause_frames(wave, 25.0, 100, t0=0.4)
    assert at0.any() and np.array_equal(later[:-10], at0[10:110])  # 0.4 s = 10 frames earlier in the output


# ------------------------------------------------------------------------------------------ choices on evidence
def test_opening_decorrelation_ignores_scale_and_sees_timing(seed):
    from avatar3d.audio2expr.clips import Clip
    from avatar3d.audio2expr.fit_blend import lip_error, opening_decorrelation

    rng = np.random.default_rng(seed)
    target = torch.as_tensor(rng.standard_normal((80, 9))).float()
    grad = torch.as_tensor(rng.standard_normal(6)).float()
    clip = Clip(np.zeros(10, np.float32), 25.0, 0.0, target, 60, opening_grad=grad)
    assert abs(opening_decorrelation(3.0 * target + 0.5, target, clip)) < 1e-6
    assert abs(opening_decorrelation(-target, target, clip) - 2.0) < 1e-6
    late = torch.roll(target, 3, 0)
    assert opening_decorrelation(late, target, clip) > 0.5
    clip.opening_grad = None  # no rig: the lip error stands in
    assert opening_decorrelation(late, target, clip) == lip_error(late, target, clip)


def test_other_voices_share_can_be_set_and_the_evidence_is_kept(seed):
    from avatar3d.audio2expr.viseme_fit import choose_mix

    rng = np.random.default_rng(seed)
    target = torch.as_tensor(rng.standard_normal((60, 4)))
    near = [target + 0.1 * torch.as_tensor(rng.standard_normal((60, 4))) for _ in range(3)]
    far = [torch.as_tensor(rng.standard_normal((60, 4))) for _ in range(3)]
    mse = lambda p, t: float((p - t).pow(2).mean())  # noqa: E731
    # the acoustic path is near in every voice: the evidence picks it (share 0), the setting overrides it
    mix = choose_mix(far, near, target, (1.0, 0.75, 1.3), [mse], mse, other_share=1.0)
    assert mix["enrollment_voice"]["share"] == 0.0 and mix["other_voices"]["evidence_share"] == 0.0
    assert mix["other_voices"]["share"] == 1.0
    free = choose_mix(far, near, target, (1.0, 0.75, 1.3), [mse], mse)
    assert free["other_voices"]["share"] == free["other_voices"]["evidence_share"] == 0.0
