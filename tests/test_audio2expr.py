"""Audio-to-expression: features, the model, offset estimation, training, chunked inference, evaluation."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from avatar3d.audio2expr.clips import Clip, estimate_offset, fold_clips
from avatar3d.audio2expr.features import (SAMPLE_RATE, LogMel, PretrainedEncoder, frame_energy, load_audio,
                                          loudness_reference, sub_frame_times)
from avatar3d.audio2expr.fit_network import fit_network, sample_batch
from avatar3d.audio2expr.infer import LoadedModel, animate, load_model, run_network
from avatar3d.audio2expr.model import Audio2Expr, ExpressionPrior, ModelConfig
from avatar3d.audio2expr.train import train_audio2expr
from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.errors import InputError, MediaError

TINY = ModelConfig(in_dim=16, per_frame=2, num_expr=7, width=32, layers=2, heads=2, ff=64, radius=4, dropout=0.0)


def am_speech(seconds: float, rng: np.random.Generator, fps: float = 25.0):
    """Noise carrier under a random syllable-rate envelope: (wave [A], envelope per frame [T])."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    env = np.zeros(n)
    pos = 0.0
    while pos < seconds:  # syllables of 120-300 ms separated by gaps
        dur = rng.uniform(0.12, 0.3)
        env += np.exp(-0.5 * ((t - pos - dur / 2) / (dur / 4)) ** 2) * rng.uniform(0.5, 1.0)
        pos += dur + rng.uniform(0.05, 0.35)
    wave = (rng.standard_normal(n) * 0.2 * env + 0.002 * rng.standard_normal(n)).astype(np.float32)
    frames = int(round(seconds * fps))
    env_frames = np.interp(np.arange(frames) / fps, t, env)
    return wave, env_frames


def synthetic_sequence(rng: np.random.Generator, seconds: float = 12.0, silent: bool = False):
    """A TrackedSequence on the synthetic rig whose jaw opens with the audio envelope."""
    from avatar3d.head.registry import load_rig
    from avatar3d.tracking.sequence import TrackedSequence

    rig = load_rig("synthetic")
    fps = 25.0
    wave, env = am_speech(seconds, rng, fps)
    if silent:
        wave = np.zeros_like(wave)
    t = len(env)
    expr = np.zeros((t, rig.num_expr), np.float32)
    expr[:, 2] = 0.3 * env  # a smile channel moving with speech too
    jaw = np.zeros((t, 3), np.float32)
    jaw[:, 0] = 0.25 * env
    neck = (0.02 * rng.standard_normal((t, 3))).astype(np.float32)
    lm = np.zeros((t, 478, 2), np.float32)
    lm[:, 33], lm[:, 263] = (100, 100), (160, 100)
    lm[:, 13], lm[:, 14] = (130, 150), np.stack([np.full(t, 130.0), 150 + 20 * env], 1)
    for a, b in ((82, 87), (312, 317)):
        lm[:, a], lm[:, b] = lm[:, 13], lm[:, 14]
    return TrackedSequence(
        rig_name=rig.name, rig_checksum=rig.checksum(), fps=fps, timestamps=np.arange(t) / fps, resolution=256,
        source_size=np.array([256, 256]), crop_box=np.array([0, 0, 256]), K=np.eye(3, dtype=np.float32),
        viewmat=np.eye(4, dtype=np.float32), shape=np.zeros(rig.num_shape, np.float32), expr=expr,
        global_rot=np.zeros((t, 3), np.float32), neck=neck, jaw=jaw, eyes=np.zeros((t, 2, 3), np.float32),
        transl=np.zeros((t, 3), np.float32), landmarks=lm, landmarks_fit=lm, confidence=np.ones(t, np.float32),
        detected=np.ones(t, bool), audio=wave)


def track_folder(path, seq):
    """`path` made into a tracked folder (tracking.npz of `seq`), as audio2expr training expects."""
    path.mkdir()
    seq.save(path / "tracking.npz")
    return path


def tiny_train_config(**kw) -> A2ETrainConfig:
    cfg = A2ETrainConfig(window=32, batch=6, max_steps=40, eval_every=20, patience=3, min_speech_s=2.0,
                         model=ModelConfig(**{**TINY.to_json(), "in_dim": 16, "per_frame": 2}))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# ------------------------------------------------------------------------------------------ features
def test_logmel_shape_and_frame_alignment(seed):
    rng = np.random.default_rng(seed)
    fps = float(rng.choice([24.0, 25.0, 30.0]))
    wave = 1e-4 * rng.standard_normal(4 * SAMPLE_RATE).astype(np.float32)
    frame = int(rng.integers(10, 80))
    centre = int(frame / fps * SAMPLE_RATE)
    wave[centre - 160: centre + 160] += np.sin(np.arange(320) * 0.3).astype(np.float32)  # 20 ms burst at the frame
    ex = LogMel(n_mels=80, per_frame=4)
    t = int(4 * fps)
    f = ex.frames(wave, fps, t)
    assert f.shape == (t, 4, 80)
    assert int(f.mean(dim=(1, 2)).argmax()) == frame
    times = sub_frame_times(fps, t, 4)
    assert torch.allclose(times.mean(1), torch.arange(t, dtype=torch.float64) / fps)
    # a window featurised on its own equals the same frames of the whole clip
    part = ex.frames(wave, fps, 20, t0=30 / fps)
    assert torch.allclose(part, f[30:50], atol=1e-4)


def test_tiny_random_wav2vec2_encoder_runs(tmp_path, seed):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=48, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path / "enc")
    ex = PretrainedEncoder(tmp_path / "enc", per_frame=2)
    wave = np.random.default_rng(seed).standard_normal(2 * SAMPLE_RATE).astype(np.float32) * 0.1
    f = ex.frames(wave, 25.0, 50)
    assert f.shape == (50, 2, 32) and torch.isfinite(f).all()
    net = Audio2Expr(ModelConfig(**{**TINY.to_json(), "in_dim": 32}))
    assert net(f[None]).shape == (1, 50, 13)
    assert not any(p.requires_grad for p in ex.model.parameters())
    with pytest.raises(InputError, match="config.json"):
        PretrainedEncoder(tmp_path)


def test_bad_audio_gives_clear_errors(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="wav|audio"):
        load_audio(text)
    with pytest.raises(MediaError, match="empty"):
        load_audio(empty)
    with pytest.raises(MediaError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(InputError, match="NaN"):
        load_audio(np.full(100, np.nan, np.float32), 16000)
    import soundfile

    nan_wav = tmp_path / "speech_nan.wav"  # a float wav with NaN samples: the error names the file
    samples = np.sin(np.arange(16000) / 10.0).astype(np.float32)
    samples[100:110] = np.nan
    soundfile.write(nan_wav, samples, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match=r"speech_nan.wav has 10 NaN or infinite samples"):
        load_audio(nan_wav)


# ------------------------------------------------------------------------------------------ offset
def test_offset_estimator_recovers_a_known_shift(seed):
    rng = np.random.default_rng(seed)
    fps = 25.0
    wave, env = am_speech(12.0, rng, fps)
    shift_ms = float(rng.uniform(-150, 150))
    shift = int(round(shift_ms / 1000 * SAMPLE_RATE))
    late = np.roll(wave, shift)  # the sound of frame i now sits at i/fps + shift
    offset, peak = estimate_offset(env, late, fps, 200.0)
    assert abs(offset - shift_ms) < 15.0, (offset, shift_ms)
    assert peak > 0.5


# ------------------------------------------------------------------------------------------ model / training
def _synthetic_clip(rng, seconds, ex):
    wave, env = am_speech(seconds, rng)
    target = torch.zeros(len(env), TINY.out_dim)
    smooth = np.convolve(env, np.ones(3) / 3, mode="same")
    target[:, TINY.num_expr] = torch.as_tensor((smooth - smooth.mean()) / smooth.std(), dtype=torch.float32)
    return Clip(wave / np.abs(wave).max(), 25.0, 0.0, target, int(len(env) * 0.85)), smooth


def test_model_learns_a_synthetic_mapping_and_is_deterministic(seed):
    rng = np.random.default_rng(seed)
    ex = LogMel(n_mels=16, per_frame=2)
    clip, _ = _synthetic_clip(rng, 16.0, ex)
    cfg = tiny_train_config(max_steps=120, eval_every=40, patience=10, lr=3e-3)
    quiet = lambda msg: None  # noqa: E731
    net, report = fit_network([clip], [clip], ex, cfg, seed, None, say=quiet)
    test_clip, smooth = _synthetic_clip(np.random.default_rng(seed + 1), 6.0, ex)
    with torch.no_grad():
        pred = net(ex.frames(test_clip.wave, 25.0, len(smooth))[None])[0, :, TINY.num_expr].numpy()
    r = np.corrcoef(pred, smooth)[0, 1]
    assert r > 0.6, r
    net2, _ = fit_network([clip], [clip], ex, tiny_train_config(max_steps=20, eval_every=10, lr=3e-3), seed, None,
                          say=quiet)
    net3, _ = fit_network([clip], [clip], ex, tiny_train_config(max_steps=20, eval_every=10, lr=3e-3), seed, None,
                          say=quiet)
    for (k, a), (_, b) in zip(net2.state_dict().items(), net3.state_dict().items()):
        assert torch.equal(a, b), k


def test_folds_partition_the_clip_and_training_windows_never_touch_their_validation_block(seed):
    rng = np.random.default_rng(seed)
    ex = LogMel(n_mels=16, per_frame=2)
    t = int(rng.integers(150, 400))
    wave = (0.1 * rng.standard_normal(int(t / 25.0 * SAMPLE_RATE))).astype(np.float32)
    target = torch.zeros(t, TINY.out_dim)
    target[:, 0] = torch.arange(t, dtype=torch.float32)  # channel 0 names the frame a target came from
    clip = Clip(wave, 25.0, 0.0, target, int(t * 0.85))
    assert fold_clips(clip, 1) == [clip] and clip.val_range == (int(t * 0.85), t)
    folds = int(rng.integers(2, 7))
    members = fold_clips(clip, folds)
    ranges = [m.val_range for m in members]
    assert ranges[0][0] == 0 and ranges[-1][1] == t and len(members) == folds
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:]))  # contiguous, disjoint, complete
    cfg = tiny_train_config(window=int(rng.integers(16, 48)), batch=8)
    for member in members:
        lo, hi = member.val_range
        assert set(member.fit_frames()) == set(range(t)) - set(range(lo, hi))
        seen = []
        for _ in range(12):
            _, targets, _ = sample_batch([member], ex, cfg, rng)
            frames = targets[..., 0][~torch.isnan(targets[..., 0])]
            seen.append(frames)
        frames = torch.cat(seen)
        assert bool(((frames <= lo - 1 + 1e-4) | (frames >= hi - 1e-4)).all()), (lo, hi)
        if lo >= 2 and t - hi >= 2:  # a middle block: both sides train
            assert bool((frames < lo).any()) and bool((frames >= hi).any())


def test_prior_penalises_only_beyond_the_tracked_spread(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(500, 6, generator=g) @ torch.diag(torch.tensor([2.0, 1.0, 0.5, 0.2, 0.1, 0.05]))
    prior = ExpressionPrior.fit(z, percentile=99.0)
    assert float(prior.penalty(z[:100] * 0.5)) == 0.0
    far = z[:10] * 10
    assert float(prior.penalty(far)) > 0.0
    grad = torch.autograd.grad(prior.penalty(far.requires_grad_()), far)[0]
    assert (grad * far).sum() > 0  # pulls towards the mean, softly (finite, non-zero)


def _random_loaded_model(seed) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY.to_json(), "radius": 3})
    net = Audio2Expr(cfg)
    torch.nn.init.normal_(net.head.weight, std=0.5)
    net.eval()
    c = cfg.out_dim
    return LoadedModel({"kind": "transformer", "num_expr": cfg.num_expr, "fps": 25.0}, torch.zeros(c), torch.ones(c),
                       torch.zeros(2, 3), [net], LogMel(n_mels=16, per_frame=2))


def test_chunked_inference_equals_whole_clip_and_has_no_seams(seed):
    model = _random_loaded_model(seed)
    rng = np.random.default_rng(seed)
    wave, _ = am_speech(14.0, rng)
    t = int(14.0 * 25)
    whole = run_network(model, wave, 25.0, t, chunk=10**6)
    reach = model.nets[0].cfg.reach
    chunk = int(rng.integers(2 * reach + 20, 4 * reach + 40))
    chunked = run_network(model, wave, 25.0, t, chunk=chunk)
    assert torch.allclose(chunked, whole, atol=1e-4), float((chunked - whole).abs().max())
    # a plain cut (no overlap) differs near the borders: the test can see seams
    cut = torch.cat([run_network(model, wave[i * 80000:(i + 1) * 80000], 25.0, 125, chunk=10**6) for i in range(2)])
    assert float((cut - whole[:250]).abs().max()) > 1e-3


# ------------------------------------------------------------------------------------------ end to end
def test_train_animate_and_evaluate_on_a_synthetic_track_folder(tmp_path, seed, capsys):
    from avatar3d.audio2expr.lipsync import evaluate_lipsync

    rng = np.random.default_rng(seed)
    seq = synthetic_sequence(rng)
    folder = track_folder(tmp_path / "track", seq)
    report = train_audio2expr(folder, seed=seed, config=tiny_train_config(), say=lambda m: None)
    assert report["kind"] == "transformer"
    assert (folder / "audio2expr" / "model.safetensors").is_file() and (folder / "audio2expr" / "config.json").is_file()
    assert abs(report["av_offset_ms"]) < 60.0
    wave, _ = am_speech(7.3, rng)
    a = animate(folder, wave, 30.0, seed=3, sample_rate=SAMPLE_RATE)
    b = animate(folder, wave, 30.0, seed=3, sample_rate=SAMPLE_RATE)
    c = animate(folder, wave, 30.0, seed=4, sample_rate=SAMPLE_RATE)
    t = int(round(7.3 * 30))
    assert a["expr"].shape == (t, 7) and a["jaw"].shape == (t, 3) and a["eyes"].shape == (t, 2, 3)
    for k in ("expr", "jaw", "neck", "eyes"):
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["eyes"], c["eyes"])
    result = evaluate_lipsync(folder, say=lambda m: None)
    assert result["frames_eval"] == seq.num_frames - int(seq.num_frames * 0.8)
    assert set(result["baselines"]) == {"zero", "mean", "energy"}
    for r in [result, *result["baselines"].values()]:
        assert {"lve_mm", "mouth_open_corr", "mouth_open_corr_ci90"} <= set(r) and "lmd_px" not in r and r["lve_mm"] >= 0
    assert result["baselines"]["mean"]["mouth_open_corr"] is None  # a constant mouth has no correlation
    assert result["realtime_factor"] > 0
    # the ensemble: one network per fold, averaged
    model = load_model(folder)
    assert len(model.nets) == report["members"] == tiny_train_config().folds * tiny_train_config().repeats
    short, _ = am_speech(3.0, rng)
    mixed = run_network(model, short, 25.0, 75)
    alone = [run_network(dataclasses.replace(model, nets=[net]), short, 25.0, 75) for net in model.nets]
    assert torch.allclose(mixed, torch.stack(alone).mean(0), atol=1e-5)
    assert float((alone[0] - alone[1]).abs().max()) > 1e-4  # the members differ
    # a model saved before ensembles (one `net.*`, no "members") still loads, as that one network
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old" / "audio2expr"
    old.mkdir(parents=True)
    tensors = {(k.replace("net0.", "net.", 1) if k.startswith("net0.") else k): v
               for k, v in load_file(str(folder / "audio2expr" / "model.safetensors")).items()
               if not k.startswith("net") or k.startswith("net0.")}
    save_file(tensors, str(old / "model.safetensors"))
    config = json.loads((folder / "audio2expr" / "config.json").read_text())
    config.pop("members")
    (old / "config.json").write_text(json.dumps(config))
    legacy = load_model(old)
    assert len(legacy.nets) == 1
    assert torch.allclose(run_network(legacy, short, 25.0, 75), alone[0], atol=1e-6)


def test_pretrain_uses_every_other_speaking_clip_then_fine_tunes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    people = tmp_path / "people"
    people.mkdir()
    for name in ("ann", "bob"):
        track_folder(people / name, synthetic_sequence(rng, seconds=10.0))
    track_folder(people / "mute", synthetic_sequence(rng, seconds=8.0, silent=True))
    target = track_folder(people / "me", synthetic_sequence(rng, seconds=10.0))  # inside DIR: never its own prior
    messages = []
    cfg = tiny_train_config(pretrain_steps=20, folds=2, repeats=1)
    report = train_audio2expr(target, pretrain=people, seed=seed, config=cfg, say=messages.append)
    assert report["pretrain"]["clips"] == 2 and report["members"] == 2
    assert any("mute" in m and "too little speech" in m for m in messages)
    assert not any(str(target) in m and "pretraining clip" in m for m in messages)
    from avatar3d.tracking.sequence import TrackedSequence

    same = TrackedSequence.load(target / "tracking.npz")
    scratch = train_audio2expr(track_folder(tmp_path / "me2", same), seed=seed,
                               config=tiny_train_config(folds=2, repeats=1), say=lambda m: None)
    assert "pretrain" not in scratch
    wave, _ = am_speech(4.0, rng)
    tuned = animate(target, wave, 25.0, seed=0, sample_rate=SAMPLE_RATE, procedural=False)
    fresh = animate(tmp_path / "me2", wave, 25.0, seed=0, sample_rate=SAMPLE_RATE, procedural=False)
    assert not np.allclose(tuned["jaw"], fresh["jaw"])  # the pretrained start changed the result
    with pytest.raises(InputError, match="not a folder"):
        train_audio2expr(target, pretrain=tmp_path / "nowhere", seed=seed, config=cfg, say=lambda m: None)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with pytest.raises(InputError, match="no other tracked clip"):
        train_audio2expr(target, pretrain=lonely, seed=seed, config=cfg, say=lambda m: None)


def test_silent_clip_falls_back_and_still_blinks(tmp_path, seed):
    rng = np.random.default_rng(seed)
    seq = synthetic_sequence(rng, seconds=8.0, silent=True)
    folder = track_folder(tmp_path / "avatar", seq)
    messages = []
    report = train_audio2expr(folder, seed=seed, config=tiny_train_config(), say=messages.append)
    assert report["kind"] == "energy"
    assert any("speech" in m and "fallback" in m for m in messages)
    out = animate(folder, np.zeros(60 * 8000, np.float32), 25.0, seed=seed, sample_rate=8000)
    blink = out["expr"][:, 0]  # eyeBlink_L of the synthetic rig
    closed = blink > 0.5
    blinks = int(np.sum(closed[1:] & ~closed[:-1]))
    assert 10 <= blinks <= 30, blinks
    # energy fallback: louder audio opens the jaw more
    loud, _ = am_speech(5.0, rng)
    driven = animate(folder, loud, 25.0, seed=seed, sample_rate=SAMPLE_RATE)
    energy = frame_energy(loud / max(loudness_reference(loud), 0.01), 25.0, driven["jaw"].shape[0]).numpy()
    assert np.corrcoef(driven["jaw"][:, 0], energy)[0, 1] > 0.9


# ------------------------------------------------------------------------------------------ lip regressor
def test_lip_regressor_learns_the_envelope_and_chunks_do_not_matter(seed):
    from avatar3d.audio2expr.ridge import LipRidge, RidgeConfig, band_frames

    rng = np.random.default_rng(seed)
    ex = LogMel(n_mels=80, per_frame=4)
    cfg = RidgeConfig(bands=20, context=4, components=2, alpha=0.1)
    wave, env = am_speech(16.0, rng)
    wave = wave / loudness_reference(wave)
    t = len(env)
    target = torch.zeros(t, 5, dtype=torch.float64)
    target[:, 1] = torch.as_tensor((env - env.mean()) / env.std())  # the "mouth" channel follows the loudness
    target[:, 3] = torch.as_tensor(rng.standard_normal(t))  # a channel audio cannot explain
    bands = band_frames(ex, wave, 25.0, t + 2 * cfg.context, -cfg.context / 25.0, cfg.bands)
    ridge = LipRidge.fit(cfg, bands, target.float(), np.arange(t), None, None)
    test_wave, test_env = am_speech(8.0, np.random.default_rng(seed + 1))
    test_wave = 3.0 * test_wave / loudness_reference(test_wave)  # another level: per-clip normalisation absorbs it
    n = len(test_env)
    whole = ridge.predict(ex, test_wave, 25.0, n, chunk=10**6)
    assert whole.shape == (n, 5)
    assert np.corrcoef(whole[:, 1].numpy(), test_env)[0, 1] > 0.7
    assert float(whole[:, 3].std()) < 0.5 * float(whole[:, 1].std())  # noise is not "learned"
    chunked = ridge.predict(ex, test_wave, 25.0, n, chunk=int(rng.integers(20, 90)))
    assert torch.allclose(chunked, whole, atol=1e-4)
    # state round trip
    again = LipRidge.from_tensors(cfg.to_json(), ridge.tensors())
    assert torch.allclose(again.predict(ex, test_wave, 25.0, n), whole, atol=1e-4)


def test_regressor_only_training_and_blend_choice(tmp_path, seed):
    rng = np.random.default_rng(seed)
    seq = synthetic_sequence(rng)
    folder = track_folder(tmp_path / "track", seq)
    report = train_audio2expr(folder, seed=seed, config=tiny_train_config(network=False), say=lambda m: None)
    assert report["kind"] == "ridge"
    config = json.loads((folder / "audio2expr" / "config.json").read_text())
    assert config["kind"] == "ridge" and config["blend"] == 1.0
    wave, env = am_speech(9.0, rng)
    out = animate(folder, wave, 25.0, seed=seed, sample_rate=SAMPLE_RATE)
    n = min(len(env), out["jaw"].shape[0])
    assert np.corrcoef(out["jaw"][:n, 0], env[:n])[0, 1] > 0.6  # the jaw opens with the syllables
    # with the network, the regressor's share is one of the grid's, chosen on the validation slice
    report = train_audio2expr(folder, seed=seed, config=tiny_train_config(blend_grid=(0.0, 1.0)), say=lambda m: None)
    config = json.loads((folder / "audio2expr" / "config.json").read_text())
    assert report["kind"] == "transformer" and config["blend"] in (0.0, 1.0)
    scores = config["report"]["blend_scores"]
    assert config["blend"] == float(min(scores, key=scores.get))


def test_presets_have_a_valid_audio2expr_section():
    from avatar3d.config import load_preset, preset_section

    for name in ("fast", "default", "quality"):
        assert "audio2expr" in load_preset(name)
        cfg = preset_section(name, "audio2expr", A2ETrainConfig)
        assert cfg.max_steps > 0 and cfg.max_seconds > 0
    with pytest.raises(InputError, match="unknown setting"):
        from avatar3d.config import from_dict
        from_dict(A2ETrainConfig, {"max_stpes": 3})


def test_output_smoothing_removes_frame_jitter_and_keeps_syllables(seed):
    from avatar3d.audio2expr.infer import SMOOTH_S, smooth_frames

    rng = np.random.default_rng(seed)
    t = torch.arange(250, dtype=torch.float64) / 25.0
    syllables = torch.sin(2 * np.pi * 4.0 * t)[:, None]  # 4 Hz: the speech rhythm
    jitter = torch.as_tensor(rng.choice([-1.0, 1.0], 250))[:, None] * 0.5  # frame-to-frame flicker
    const = torch.full((250, 1), float(rng.uniform(-2, 2)), dtype=torch.float64)
    out = smooth_frames(torch.cat([syllables + jitter, const], 1), SMOOTH_S * 25.0)
    assert out.shape == (250, 2)
    assert torch.allclose(out[:, 1], const[:, 0])  # a constant stays put, edges included
    resid = out[10:-10, 0] - syllables[10:-10, 0]
    assert float(resid.std()) < 0.8 * float(jitter.std())  # the flicker is damped...
    assert float(out[10:-10, 0].std()) > 0.6 * float(syllables[10:-10, 0].std())  # ...the rhythm is not


def test_text_chart_draws_each_series_over_time(seed):
    from avatar3d.audio2expr.long_audio import SPARKS, sparkline, text_chart

    rng = np.random.default_rng(seed)
    assert sparkline(np.arange(8)) == SPARKS  # a ramp climbs every level once
    assert sparkline(np.full(5, rng.normal())) == SPARKS[0] * 5
    values = rng.normal(size=40)
    line = sparkline(values)
    assert line[int(values.argmax())] == SPARKS[-1] and line[int(values.argmin())] == SPARKS[0]
    fps = 25.0
    rising = np.repeat(np.arange(6.0), 25)  # 6 s, one level per second
    falling = rising[::-1].copy()
    chart = text_chart({"up": rising, "down": falling}, fps)
    assert chart[0].endswith("|" + sparkline(np.arange(6.0)) + "|") and chart[0].lstrip().startswith("up |")
    assert chart[1].endswith("|" + sparkline(np.arange(6.0))[::-1] + "|")
    assert "1 s" in chart[2]


def test_longest_still_run_counts_only_speech_frames():
    from avatar3d.audio2expr.long_audio import longest_still_run

    opening = np.array([5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0, 6.0, 6.0])
    speech = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert longest_still_run(opening, speech) == 3  # frames 1-3; the still pause at the end does not count
    assert longest_still_run(opening, np.zeros(9, bool)) == 0


def test_long_audio_report_measures_drift_and_plots(tmp_path, seed):
    from PIL import Image

    from avatar3d.audio2expr.long_audio import long_audio_report
    from avatar3d.head.registry import load_rig

    rng = np.random.default_rng(seed)
    seq = synthetic_sequence(rng)
    folder = track_folder(tmp_path / "track", seq)
    train_audio2expr(folder, seed=seed, config=tiny_train_config(network=False), say=lambda m: None)
    wave, _ = am_speech(30.0, rng)
    report = long_audio_report(folder, wave, load_rig(seq.rig_name), plot=tmp_path / "jaw.png",
                               sample_rate=SAMPLE_RATE)
    assert report["frames"] == int(round(30.0 * seq.fps)) and len(report["opening_mm_per_10s"]) == 3
    low, high = report["opening_range_mm"]
    assert high > low and report["drift_mm"] < 0.5 * (high - low)  # the same speech all along: no drift
    assert report["longest_still_speech_frames"] < seq.fps  # never frozen for a second while speaking
    assert report["corr_with_envelope"] > 0.3 and report["realtime_factor"] > 0
    envelope_line, opening_line = (line.split("|")[1] for line in report["chart"][:2])
    assert len(envelope_line) == len(opening_line) == 30  # one column per second
    with Image.open(tmp_path / "jaw.png") as png:
        assert png.size[0] > 600 and png.size[1] > 300
