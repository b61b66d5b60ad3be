"""Training the audio-to-expression model on an enrolled video's own audio and tracked parameters.

1. Audio/video offset: the tracked mouth opening (inner-lip distance of the fitted rig's landmarks) is
   cross-correlated with the audio envelope over +-200 ms; the lag (ms, positive: the audio lags the
   picture) is reported and corrected (frame i reads audio at i/fps + offset).
2. Windowed training on the TRAINING part only (the held-out tail is never read, audio included), with
   gain, noise and +-5% speed augmentation. A k-fold ensemble (`folds` blocks, `repeats` networks per
   block, default 5 x 2): each network is early-stopped on its own contiguous block of the training part
   and trained on the rest; inference averages them (with ~15 s of speech one network's output depends
   much on its seed and its validation slice; their mean is steadier and closer). `folds: 1`: networks
   validated on the last `val_fraction`.
3. Too little speech for the networks (under `min_speech_s`): the phonetic path alone (6.) when there are
   1 s of trusted phones, else a clear message and a fallback model (audio energy -> jaw opening regression)
   that still animates.
4. `pretrain`: first train on every other tracked clip under a folder (same head model), then fine-tune.
5. A closed-form lip regressor (ridge.py) fitted beside the transformers; its share of the output is the
   one with the smallest lip error on the out-of-fold predictions (every training frame predicted by the
   networks that never saw it, and by a regressor fitted without its block). `network: false` keeps the
   regressor only (seconds of training).
6. The phonetic path (phonetic.py, visemes.py, viseme_fit.py): pocketsphinx phones -> the person's visemes + a
   phonetic regressor, blended with the acoustic path (1.-5.) by a share and a gain chosen out of fold, once in
   the enrollment voice and once in that audio resampled into other voices (voices.py).

Writes `OUT/audio2expr/model.safetensors` + `config.json` (atomically; config.json last, as the commit
point). Deterministic for a seed (up to the optional wall-clock cap, which is a safety net).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import Tensor

from avatar3d.audio2expr.clips import Clip, channel_names, fold_clips, person_stats, prepare_clip, training_frames
from avatar3d.audio2expr.features import SAMPLE_RATE, make_extractor, speech_seconds
from avatar3d.audio2expr.fit_blend import (RIDGE_FEATURES, acoustic_voices_oof, choose_blend, fit_energy_jaw,
                                           fit_phonetic, fit_ridge, out_of_fold, phonetic_entries)
from avatar3d.audio2expr.fit_network import ensure_table, fit_network
from avatar3d.audio2expr.model import ExpressionPrior
from avatar3d.audio2expr.ridge import LipRidge
from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json
from avatar3d.tracking.sequence import TrackedSequence

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
BLINK_NAMES = (("eyeBlink_L", "eyeBlinkLeft"), ("eyeBlink_R", "eyeBlinkRight"))


# ------------------------------------------------------------------------------------------ phonetic path


def _train_phonetic_only(seq: TrackedSequence, out_dir: Path, n_train: int, stats: dict, cfg: A2ETrainConfig,
                         rig, common: dict, base_tensors: dict, report: dict, started: float,
                         say: Callable[[str], None]) -> Optional[dict]:
    """Too little speech for the networks: the phonetic path alone (the visemes shrunk towards generic ones)."""
    if not cfg.phonetic or report["speech_s"] < cfg.min_phonetic_speech_s:
        return None
    clip, found = prepare_clip(seq, n_train, stats, cfg, rig, say)
    phon = fit_phonetic(clip, fold_clips(clip, cfg.folds), cfg, None, say)
    if phon is None:
        return None
    tensors, entries = phonetic_entries(phon)
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    report.update(found, kind="phonetic", seconds=round(time.perf_counter() - started, 1), out=str(out_dir),
                  phonetic_share=1.0)
    save_model(out_dir, {**base_tensors, **tensors},
               {**common, **entries, "kind": "phonetic", "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                "av_offset_estimate_ms": found["av_offset_ms"], "report": report})
    return report


# ------------------------------------------------------------------------------------------ entry point
def _load_source(source: Path) -> TrackedSequence:
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source} is not a folder; pass an avatar folder (from `avatar3d enroll`) or a track "
                         "output folder (from `avatar3d track VIDEO --out DIR`)")
    if not (source / "tracking.npz").is_file():
        raise InputError(f"{source} has no tracking.npz; pass an avatar folder or the --out folder of "
                         "`avatar3d track VIDEO --out DIR`")
    return TrackedSequence.load(source / "tracking.npz")


def _try_rig(name: str, say):
    from avatar3d.errors import HeadModelError
    from avatar3d.head.registry import load_rig

    try:
        return load_rig(name)
    except HeadModelError as err:
        say(f"note: head model {name!r} not available ({err}); training without the lip-vertex loss")
        return None


def blink_indices(names: list[str]) -> list[int]:
    out = []
    for options in BLINK_NAMES:
        for n in options:
            if n in names:
                out.append(names.index(n))
                break
    return out


def save_model(out_dir: Path, tensors: dict[str, Tensor], config: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / MODEL_FILE, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    atomic_write_json(out_dir / CONFIG_FILE, config)  # last: the commit point


def _pretrain_clips(folder: Path, target: Path, rig_name: str, cfg: A2ETrainConfig, rig, say) -> list[Clip]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--pretrain {folder} is not a folder; pass a folder holding enrolled avatars "
                         "(or track outputs), each with a tracking.npz")
    clips = []
    for path in sorted(folder.rglob("tracking.npz")):
        if path.parent.resolve() == Path(target).resolve():
            continue
        seq = TrackedSequence.load(path)
        if seq.rig_name != rig_name:
            say(f"  skipping {path.parent} (head model {seq.rig_name!r}, this avatar uses {rig_name!r})")
            continue
        if seq.audio.size == 0 or speech_seconds(seq.audio) < cfg.min_speech_s:
            say(f"  skipping {path.parent} (too little speech)")
            continue
        n = training_frames(seq, path.parent, cfg.holdout)
        clip, _ = prepare_clip(seq, n, person_stats(seq, n), cfg, rig, say)
        clips.append(clip)
        say(f"  pretraining clip {path.parent} ({n} frames)")
    if not clips:
        raise InputError(f"--pretrain {folder}: no other tracked clip with speech and head model {rig_name!r} "
                         "was found; enroll more people there, or drop --pretrain")
    return clips


def train_audio2expr(source: Path, out_dir: Optional[Path] = None, *, audio_encoder: Optional[Path] = None,
                     pretrain: Optional[Path] = None, seed: int = 0, config: Optional[A2ETrainConfig] = None,
                     say: Callable[[str], None] = print) -> dict:
    """Train on `source` (avatar or track folder with tracking.npz); writes OUT/{model.safetensors,config.json}.

    Returns a report (offset, speech seconds, steps, seconds, kind: "transformer" or "energy").
    """
    cfg = copy.deepcopy(config) if config is not None else A2ETrainConfig()
    source = Path(source)
    out_dir = Path(out_dir) if out_dir is not None else source / "audio2expr"
    started = time.perf_counter()
    seq = _load_source(source)
    n_train = training_frames(seq, source, cfg.holdout)
    if n_train < 16:
        raise InputError(f"{source} has only {n_train} training frames; audio-to-expression needs a video of a "
                         "few seconds or more (enroll a longer clip)")
    stats = person_stats(seq, n_train)
    rig = _try_rig(seq.rig_name, say)
    common = _common_config(seq, n_train, stats, rig, seed)
    base_tensors = {"mean": torch.as_tensor(stats["mean"]).float(), "std": torch.as_tensor(stats["std"]).float(),
                    "eyes_mean": torch.as_tensor(stats["eyes_mean"]).float()}
    train_audio = np.asarray(seq.audio, np.float32)[: int(round(n_train / seq.fps * SAMPLE_RATE))]
    speech = speech_seconds(train_audio) if train_audio.size else 0.0
    report = {"speech_s": round(speech, 2), "frames_train": n_train}
    if speech < cfg.min_speech_s:
        return _little_speech(seq, out_dir, n_train, stats, cfg, rig, common, base_tensors, report,
                              started, speech, say)

    torch.manual_seed(seed)
    ex = make_extractor(None, audio_encoder) if audio_encoder is not None else make_extractor(
        {"per_frame": cfg.model.per_frame, "n_mels": cfg.model.in_dim})
    cfg.model.in_dim, cfg.model.per_frame, cfg.model.num_expr = ex.dim, ex.per_frame, int(seq.expr.shape[1])
    clip, found = prepare_clip(seq, n_train, stats, cfg, rig, say)
    report.update(found)
    say(f"audio/video offset: {found['av_offset_ms']:+.0f} ms (peak correlation {found['av_offset_peak_corr']:.2f}; "
        f"applied {found['av_offset_applied_ms']:+.0f} ms); {speech:.1f} s of speech in {n_train} training frames")
    ridge_ex = make_extractor(RIDGE_FEATURES)
    if not cfg.network:
        members = fold_clips(clip, cfg.folds)
        phon = fit_phonetic(clip, members, cfg, acoustic_voices_oof([], members, None, cfg.ridge, ridge_ex, 1.0,
                                                                    cfg.voice_factors), say) if cfg.phonetic else None
        ridge = fit_ridge(clip, cfg.ridge, np.arange(n_train), ridge_ex)
        return _save_ridge_only(out_dir, base_tensors, common, ridge, clip, found, report, seq, n_train, started,
                                phon)
    ensure_table(clip, ex)  # once, shared by the members
    members = fold_clips(clip, cfg.folds) * max(1, cfg.repeats)
    pretrained = _pretrain(pretrain, source, seq, clip, ex, cfg, rig, seed, report, say) if pretrain else None
    nets, fits = _fit_members(members, ex, cfg, seed, pretrained, say)
    # the lip regressor's share, from out-of-fold predictions; then the regressor on every training frame
    net_oof, ridge_oof, target_oof = out_of_fold(nets, members, ex, cfg.ridge, ridge_ex)
    blend, blend_scores = choose_blend(net_oof, ridge_oof, target_oof, clip, cfg.blend_grid)
    say(f"lip regressor share {blend:.2f} (out-of-fold lip error by share: {blend_scores})")
    phon = None
    if cfg.phonetic:
        acoustic = acoustic_voices_oof(nets, members, ex, cfg.ridge, ridge_ex, blend, cfg.voice_factors)
        phon = fit_phonetic(clip, members, cfg, acoustic, say)
    ridge = fit_ridge(clip, cfg.ridge, np.arange(n_train), ridge_ex)
    report.update(kind="transformer", members=len(nets), steps=[f["steps"] for f in fits],
                  best_val=[f["best_val"] for f in fits], params=sum(net.num_params() for net in nets),
                  out=str(out_dir), blend=blend)
    _save_networks(out_dir, nets, fits, ridge, phon, clip, seq, n_train, ex, cfg, common, base_tensors, found,
                   report, blend, blend_scores, started)
    return report


def _common_config(seq: TrackedSequence, n_train: int, stats: dict, rig, seed: int) -> dict:
    """config.json entries every kind of model carries."""
    names = channel_names(rig.expr_names if rig is not None else [], seq.expr.shape[1])
    return {
        "format_version": FORMAT_VERSION, "fps": float(seq.fps), "rig_name": seq.rig_name,
        "rig_checksum": seq.rig_checksum, "channels": names, "num_expr": int(seq.expr.shape[1]),
        "blink_channels": blink_indices(names), "seed": int(seed), "frames_train": int(n_train),
        "head_motion_std": stats["std"][-3:].tolist(),
    }


def _little_speech(seq: TrackedSequence, out_dir: Path, n_train: int, stats: dict,
                   cfg: A2ETrainConfig, rig, common: dict, base_tensors: dict, report: dict, started: float,
                   speech: float, say) -> dict:
    """Too little speech for the networks: the phonetic path alone when it has enough phones, else the energy
    fallback (the jaw opens with the audio energy), with a message saying why."""
    short = _train_phonetic_only(seq, out_dir, n_train, stats, cfg, rig, common, base_tensors, report, started, say)
    if short is not None:
        say(f"note: the training part of the video has only {speech:.1f} s of speech (the lip networks need "
            f"{cfg.min_speech_s:.0f} s); its phones and the person's visemes drive the lips alone")
        return short
    say(f"WARNING: the training part of the video has only {speech:.1f} s of speech (at least "
        f"{cfg.min_speech_s:.0f} s are needed to learn lip sync); using the fallback that opens the jaw with "
        "the audio energy. Enroll a video in which the person talks for longer to get real lip sync.")
    energy = fit_energy_jaw(seq, n_train)
    save_model(out_dir, base_tensors, {**common, "kind": "energy", "energy": energy, "av_offset_ms": 0.0,
                                       "report": report})
    report.update(kind="energy", seconds=round(time.perf_counter() - started, 1), out=str(out_dir))
    return report


def _pretrain(folder: Path, source: Path, seq: TrackedSequence, clip: Clip, ex, cfg: A2ETrainConfig, rig, seed: int,
              report: dict, say):
    """A network trained on every other tracked clip under `folder` (and this one), to fine-tune from."""
    others = _pretrain_clips(folder, source, seq.rig_name, cfg, rig, say)
    say(f"pretraining on {len(others)} clip(s)")
    pretrained, pre = fit_network(others + [clip], others + [clip], ex, cfg, seed, None, steps=cfg.pretrain_steps,
                                  say=say)
    report["pretrain"] = {"clips": len(others), "steps": pre["steps"]}
    return pretrained


def _fit_members(members: list[Clip], ex, cfg: A2ETrainConfig, seed: int, pretrained, say) -> tuple[list, list]:
    """One network per member clip (each early-stopped on its own block), sharing the time budget."""
    member_cfg = dataclasses.replace(cfg, max_seconds=cfg.max_seconds / len(members))
    e3 = cfg.model.num_expr + 3
    nets, fits = [], []
    for k, member in enumerate(members):
        lo, hi = member.val_range
        say(f"network {k + 1}/{len(members)} ({'fine-tuning' if pretrained is not None else 'from scratch'}) on "
            f"{len(member.fit_frames())} frames, validating on frames {lo}-{hi - 1}")
        prior = ExpressionPrior.fit(member.target[member.fit_frames(), :e3])
        net, fit = fit_network([member], [member], ex, member_cfg, seed + 1 + k, prior,
                               net=copy.deepcopy(pretrained) if pretrained is not None else None, say=say)
        nets.append(net)
        fits.append(fit)
    return nets, fits


def _save_networks(out_dir: Path, nets: list, fits: list, ridge: LipRidge, phon: Optional[dict], clip: Clip,
                   seq: TrackedSequence, n_train: int, ex, cfg: A2ETrainConfig, common: dict, base_tensors: dict,
                   found: dict, report: dict, blend: float, blend_scores: dict, started: float) -> None:
    """model.safetensors + config.json of the transformer kind (networks, prior, regressor, phonetic path)."""
    phon_tensors, phon_entries = phonetic_entries(phon)
    prior = ExpressionPrior.fit(clip.target[:, :cfg.model.num_expr + 3])
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    tensors = {**base_tensors, **{f"net{m}.{k}": v for m, net in enumerate(nets) for k, v in net.state_dict().items()},
               **{f"prior.{k}": v for k, v in prior.state_dict().items()}, **ridge.tensors(), **phon_tensors}
    report.update(seconds=round(time.perf_counter() - started, 1), phonetic_share=phon_entries["phonetic_share"])
    features = ex.config() if hasattr(ex, "config") else {"kind": ex.kind}
    save_model(out_dir, tensors, {**common, **phon_entries, "kind": "transformer", "model": cfg.model.to_json(),
                                  "features": features, "ridge": cfg.ridge.to_json(), "ridge_features": RIDGE_FEATURES,
                                  "blend": blend, "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                                  "av_offset_estimate_ms": found["av_offset_ms"], "members": len(nets),
                                  "report": {**report, "history": [f["history"] for f in fits],
                                             "blend_scores": blend_scores}})


def _save_ridge_only(out_dir: Path, base_tensors: dict, common: dict, ridge: LipRidge, clip: Clip, found: dict,
                     report: dict, seq: TrackedSequence, n_train: int, started: float, phon: Optional[dict]) -> dict:
    energy = fit_energy_jaw(seq, n_train, clip.offset_s)
    phon_tensors, phon_entries = phonetic_entries(phon)
    report.update(kind="ridge", steps=0, seconds=round(time.perf_counter() - started, 1),
                  params=int(ridge.weight.numel()), out=str(out_dir), blend=1.0,
                  phonetic_share=phon_entries["phonetic_share"])
    save_model(out_dir, {**base_tensors, **ridge.tensors(), **phon_tensors},
               {**common, **phon_entries, "kind": "ridge", "ridge": ridge.cfg.to_json(), "ridge_features": RIDGE_FEATURES,
                "blend": 1.0, "energy": energy, "av_offset_ms": found["av_offset_applied_ms"],
                "av_offset_estimate_ms": found["av_offset_ms"], "report": report})
    return report

