"""The phonetic front-end (pocketsphinx phones -> per-frame features), prosody, voices and the person's visemes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar3d.audio2expr.features import SAMPLE_RATE, load_audio, speech_seconds
from avatar3d.audio2expr.phones import SILENCE, PhoneSegments, _fill_gaps, chunk_bounds, decode_phones
from avatar3d.audio2expr.phonetic import (COARTIC_S, PHONE_TO_VISEME, VISEME_NAMES, feature_names, judge,
                                          phonetic_frames, speech_features, viseme_of)
from avatar3d.audio2expr.prosody import analysis_tracks, median_f0
from avatar3d.audio2expr.visemes import VisemeConfig, VisemeModel, prior_weights
from avatar3d.audio2expr.voices import heard_timing, resample_voice

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "audio" / "eng_60s.wav").is_file(),
                                  reason="../shared/data (the development speech clips) is not here")
pocketsphinx = pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (requirements/base.txt)")


def tone(f0: float, seconds: float, harmonics: int = 6) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1)) * 0.2).astype(np.float32)


def random_segments(rng: np.random.Generator, duration: float) -> PhoneSegments:
    """Overlapping, unsorted, partly out-of-range raw segments, as a decoder could leave them."""
    n = int(rng.integers(1, 40))
    starts = rng.uniform(-0.2, duration, n)
    ends = starts + rng.uniform(0.01, 0.4, n)
    phones = list(rng.choice(["AA", "M", "S", "SIL", "+SPN+", "IY"], n))
    return _fill_gaps(phones, starts, ends, duration)


# ------------------------------------------------------------------------------------------ segments and chunks
def test_filled_segments_tile_the_clip(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        duration = float(rng.uniform(0.5, 5.0))
        seg = random_segments(rng, duration)
        assert seg.starts[0] == 0.0 and abs(seg.ends[-1] - duration) < 1e-9
        assert np.all(seg.ends > seg.starts)
        assert np.allclose(seg.starts[1:], seg.ends[:-1])  # contiguous: every instant has exactly one phone


def test_chunk_cuts_land_in_the_quietest_stretch(seed):
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(int(75 * SAMPLE_RATE)) * 0.1).astype(np.float32)
    # within the 3 s search of where each 30 s chunk ends (the second chunk starts at the first cut, in gap 1)
    first = 30.0 + rng.uniform(-2.5, 2.45)
    gaps = [first, first + 30.0 + rng.uniform(-2.5, 2.45)]
    for g in gaps:
        wave[int(g * SAMPLE_RATE): int((g + 0.05) * SAMPLE_RATE)] = 0.0
    bounds = chunk_bounds(wave, chunk_s=30.0)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(wave)
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:]))
    cuts = [b for _, b in bounds[:-1]]
    assert len(cuts) == 2
    for cut, g in zip(cuts, gaps):
        assert g <= cut / SAMPLE_RATE <= g + 0.05


def test_every_phone_has_a_viseme_class():
    from avatar3d.audio2expr.phones import PHONES

    assert len(PHONE_TO_VISEME) == len(PHONES) and PHONE_TO_VISEME.min() >= 0
    assert viseme_of("M") == viseme_of("B") == viseme_of("P") == "closed"
    assert viseme_of(SILENCE) == "rest" and viseme_of("AA") == "open" and viseme_of("F") == "lip_teeth"
    assert set(VISEME_NAMES) == {VISEME_NAMES[int(i)] for i in PHONE_TO_VISEME}


# ------------------------------------------------------------------------------------------ features
def _segments(*items) -> PhoneSegments:
    phones, starts, ends = zip(*items)
    return PhoneSegments(list(phones), np.array(starts), np.array(ends), ends[-1])


def test_phonetic_features_know_what_is_spoken_before_and_after():
    seg = _segments(("SIL", 0.0, 0.5), ("M", 0.5, 0.6), ("AA", 0.6, 0.9), ("SIL", 0.9, 1.2))
    wave = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    feats = phonetic_frames(seg, wave, 25.0, 30)
    names = feature_names()
    assert feats.shape == (30, len(names)) and np.isfinite(feats).all()
    col = lambda name: names.index(name)  # noqa: E731
    v = len(VISEME_NAMES)
    for k in range(len(COARTIC_S)):  # each offset's class occupancy sums to one
        assert np.allclose(feats[:, k * v:(k + 1) * v].sum(1), 1.0)
    assert feats[14, col("closed@+0ms")] == 1.0  # 0.56 s: inside /m/
    assert feats[11, col("closed@+80ms")] == 1.0 and feats[11, col("rest@+0ms")] == 1.0  # 0.44 s: /m/ comes next
    assert feats[17, col("closed@-120ms")] == 1.0 and feats[17, col("open@+0ms")] == 1.0  # 0.68 s: /m/ was before
    assert feats[17, col("closed@-80ms")] == 0.5  # 0.60 s: the window straddles /m/ and /a/
    # 0.2 s sits in a 0.5 s pause whose only speech side is 0.3 s away (the clip's start is not speech)
    assert np.isclose(feats[5, col("pause_length")], 0.5) and np.isclose(feats[5, col("to_speech")], 0.6)
    assert feats[14, col("pause_length")] == 0.0 and feats[14, col("to_speech")] == 0.0


def test_chunked_features_equal_whole_clip_features(seed):
    rng = np.random.default_rng(seed)
    seg = random_segments(rng, 12.0)
    wave = (rng.standard_normal(12 * SAMPLE_RATE) * 0.05).astype(np.float32)
    whole = phonetic_frames(seg, wave, 25.0, 300)
    chunked = phonetic_frames(seg, wave, 25.0, 300, chunk=37)
    assert np.allclose(whole, chunked)


@pytest.mark.parametrize("f0", [110.0, 180.0, 260.0])
def test_pitch_tracks_a_harmonic_tone(f0):
    _, pitch, voicing = analysis_tracks(tone(f0, 1.0))
    inner = slice(10, -10)
    assert np.all(voicing[inner] > 0.8)
    assert np.median(np.abs(pitch[inner] / f0 - 1.0)) < 0.03
    assert abs(median_f0(tone(f0, 1.0)) / f0 - 1.0) < 0.03


def test_noise_is_unvoiced_and_silence_has_no_pitch(seed):
    rng = np.random.default_rng(seed)
    _, _, voicing = analysis_tracks((rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32))
    assert np.median(voicing) < 0.45
    assert median_f0(np.zeros(SAMPLE_RATE, np.float32)) is None


def test_resampled_voice_scales_pitch_and_time():
    wave = tone(150.0, 2.0)
    for factor in (0.85, 1.15):
        heard = resample_voice(wave, factor)
        assert abs(len(heard) - len(wave) / factor) <= 2
        assert abs(median_f0(heard) / (150.0 * factor) - 1.0) < 0.03
        fps, offset = heard_timing(25.0, 0.1, factor)
        assert np.isclose(offset + 10 / fps, (0.1 + 10 / 25.0) / factor)  # frame 10 hears the same sound


# ------------------------------------------------------------------------------------------ decoding real speech
@needs_shared
def test_real_speech_decodes_into_plausible_phones_and_chunks_change_little():
    wave = load_audio(SHARED / "audio" / "eng_60s.wav")[: 40 * SAMPLE_RATE]
    whole = decode_phones(wave, chunk_s=60.0)
    chunked = decode_phones(wave, chunk_s=12.0)
    for seg in (whole, chunked):
        speech = seg.speech_seconds()
        assert 25.0 < speech <= 40.0
        rate = sum(p not in ("SIL", "+NSN+", "+SPN+") for p in seg.phones) / speech
        assert 6.0 < rate < 18.0
    assert abs(whole.speech_seconds() - chunked.speech_seconds()) < 0.1 * whole.speech_seconds()


@needs_shared
@pytest.mark.parametrize("rate", [8000, 48000])
def test_any_sample_rate_and_stereo_decode_alike(rate):
    wave = load_audio(SHARED / "audio" / "RD_Radio31_000.wav")  # 16 kHz stereo file, mixed down
    ref = decode_phones(wave).speech_seconds()
    n = int(len(wave) * rate / SAMPLE_RATE)
    other = np.interp(np.arange(n) * SAMPLE_RATE / rate, np.arange(len(wave)), wave).astype(np.float32)
    stereo = np.stack([other, other * 0.5], 1)
    back = load_audio(stereo, sample_rate=rate)
    assert abs(decode_phones(back).speech_seconds() - ref) < 0.25 * ref


def test_noise_and_silence_are_not_trusted(seed):
    rng = np.random.default_rng(seed)
    for wave in (np.zeros(5 * SAMPLE_RATE, np.float32), (rng.standard_normal(5 * SAMPLE_RATE) * 0.1).astype(np.float32)):
        seg = decode_phones(wave)
        report = judge(seg, speech_seconds(wave))
        assert not report.reliable and "speech" in report.reason


@needs_shared
def test_speech_is_trusted_and_averaged_over_decodes():
    wave = load_audio(SHARED / "audio" / "RD_Radio31_000.wav")
    feats, report = speech_features(wave, 25.0, 200)
    assert report.reliable and report.phones > 40
    v = len(VISEME_NAMES)
    occ = feats[:, 4 * v: 5 * v]  # offset 0 ms
    assert np.allclose(occ.sum(1), 1.0, atol=1e-5)
    assert ((occ > 0.01) & (occ < 0.99)).any()  # decodes disagree somewhere: the average is soft


# ------------------------------------------------------------------------------------------ the person's visemes
def _viseme_data(rng: np.random.Generator, frames: int, channels: int, seen: list[int]):
    """Features whose class occupancy is one-hot on `seen` classes; targets from a known table (+ noise)."""
    names = feature_names()
    v = len(VISEME_NAMES)
    cls = rng.choice(seen, frames)
    feats = np.zeros((frames, len(names)), np.float32)
    for k in range(len(COARTIC_S)):
        feats[np.arange(frames), k * v + cls] = 1.0
    feats[:, len(COARTIC_S) * v:] = rng.uniform(0, 1, (frames, len(names) - len(COARTIC_S) * v))
    table = torch.as_tensor(rng.standard_normal((v, channels)))
    target = table[cls] + 0.01 * torch.as_tensor(rng.standard_normal((frames, channels)))
    return feats, target.float(), table, cls


def test_viseme_table_recovers_each_class_and_pins_silence_to_rest(seed):
    rng = np.random.default_rng(seed)
    rest = VISEME_NAMES.index("rest")
    seen = [rest, VISEME_NAMES.index("closed"), VISEME_NAMES.index("open"), VISEME_NAMES.index("round")]
    feats, target, table, cls = _viseme_data(rng, 600, 9, seen)
    model = VisemeModel.fit(VisemeConfig(prior_frames=1.0, regressor=False), feats, target, None, None)
    from avatar3d.audio2expr.visemes import generic_table

    generic, _, _ = generic_table(target.double(), torch.as_tensor(prior_weights(feats)), None)
    for c in seen:  # one-hot frames: the class mean, shrunk by one frame's worth towards the generic mouth
        n = int((cls == c).sum())
        shrunk = (target[cls == c].double().sum(0) + generic[c]) / (n + 1.0)
        if c != rest:
            assert torch.allclose(model.table[c], shrunk, atol=1e-6)
        assert torch.allclose(model.table[c].float(), table[c].float(), atol=0.1)  # and near the truth
    assert torch.allclose(model.rest.float(), target[cls == rest].mean(0), atol=1e-5)
    pred = model.predict(feats)
    assert pred.shape == target.shape and float((pred - target).abs().mean()) < 0.05


def test_unseen_classes_fall_back_to_the_generic_mouth(seed):
    rng = np.random.default_rng(seed)
    seen = [VISEME_NAMES.index("rest"), VISEME_NAMES.index("open")]
    feats, target, _, _ = _viseme_data(rng, 400, 6, seen)
    model = VisemeModel.fit(VisemeConfig(prior_frames=5.0, regressor=False), feats, target, None, None)
    from avatar3d.audio2expr.visemes import generic_table

    generic, _, _ = generic_table(target.double(), torch.as_tensor(prior_weights(feats)), None)
    unseen = VISEME_NAMES.index("lateral")
    assert torch.allclose(model.table[unseen], generic[unseen], atol=1e-6)


def test_viseme_model_round_trips_through_its_tensors(seed):
    rng = np.random.default_rng(seed)
    feats, target, _, _ = _viseme_data(rng, 300, 5, list(range(len(VISEME_NAMES))))
    model = VisemeModel.fit(VisemeConfig(), feats, target, None, None)
    again = VisemeModel.from_tensors(model.cfg.to_json(), model.tensors())
    assert torch.allclose(model.predict(feats), again.predict(feats), atol=1e-5)


# ------------------------------------------------------------------------------------------ using it
def test_the_phonetic_share_and_gain_follow_the_driving_voice():
    from avatar3d.audio2expr.infer import LoadedModel, voice_mix

    config = {"phonetic_share": 0.25, "phonetic_share_other_voice": 0.75, "gain": 1.2, "gain_other_voice": 1.7,
              "voice_f0_hz": 140.0}
    model = LoadedModel(config, torch.zeros(1), torch.ones(1), torch.zeros(2, 3), [], None)
    assert np.allclose(voice_mix(model, tone(140.0, 1.0)), (0.25, 1.2), atol=0.03)  # the enrollment voice
    assert np.allclose(voice_mix(model, tone(220.0, 1.0)), (0.75, 1.7))  # another voice
    assert 0.3 < voice_mix(model, tone(148.0, 1.0))[0] < 0.7  # in between
    assert voice_mix(model, np.zeros(SAMPLE_RATE, np.float32)) == (0.75, 1.7)  # no pitch: the stranger's choice


def test_pauses_are_the_long_quiet_stretches(seed):
    from avatar3d.audio2expr.features import pause_frames

    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(4 * SAMPLE_RATE) * 0.1).astype(np.float32)
    wave[int(1.0 * SAMPLE_RATE): int(1.6 * SAMPLE_RATE)] = 0.0  # a 0.6 s pause
    wave[int(3.0 * SAMPLE_RATE): int(3.12 * SAMPLE_RATE)] = 0.0  # a 0.12 s gap: not a pause
    pauses = pause_frames(wave, 25.0, 100)
    assert pauses[27:38].all() and not pauses[:24].any() and not pauses[42:].any()
