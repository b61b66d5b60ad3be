"""What is fitted beside and over the networks: the closed-form lip regressor, out-of-fold predictions, the
shares that blend the acoustic and phonetic paths, and the energy -> jaw fallback."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr import viseme_fit
from avatar3d.audio2expr.clips import Clip, all_seen_frames, voice_clip
from avatar3d.audio2expr.features import (MIN_REF, SAMPLE_RATE, FeatureExtractor, LogMel, frame_energy,
                                          loudness_reference, pause_frames)
from avatar3d.audio2expr.fit_network import feature_window
from avatar3d.audio2expr.model import Audio2Expr
from avatar3d.audio2expr.phonetic import speech_features
from avatar3d.audio2expr.prosody import median_f0
from avatar3d.audio2expr.ridge import LipRidge, RidgeConfig, band_frames
from avatar3d.audio2expr.train_config import A2ETrainConfig
from avatar3d.audio2expr.visemes import VisemeModel
from avatar3d.audio2expr.voiceprint import voice_print
from avatar3d.tracking.sequence import TrackedSequence

RIDGE_FEATURES = {"kind": "logmel", "n_mels": 80, "per_frame": 4}  # the regressor's own features


def fit_ridge(clip: Clip, cfg: RidgeConfig, frames: np.ndarray, ex: LogMel) -> LipRidge:
    """The closed-form lip regressor on `frames` of the clip (context read around them)."""
    c = cfg.context
    bands = band_frames(ex, clip.wave, clip.fps, clip.target.shape[0] + 2 * c, clip.offset_s - c / clip.fps,
                        cfg.bands)  # [T+2c,B]
    return LipRidge.fit(cfg, bands, clip.target, frames, clip.lip_jacobian, clip.opening_grad)


def lip_error(pred: Tensor, target: Tensor, clip: Clip) -> float:
    """Mean squared lip displacement error (relative to the clip's spread) of pred vs target [T,C];
    the channel MSE when no rig is known."""
    err = (pred - target).double()
    if clip.lip_jacobian is None:
        return float(err.pow(2).mean())
    e3 = clip.lip_jacobian.shape[1]
    return float((err[:, :e3] @ clip.lip_jacobian.double().T).pow(2).mean() / clip.lip_scale)


def lip_vertex_error(pred: Tensor, target: Tensor, clip: Clip) -> float:
    """The evaluation's lip vertex error (per frame the largest lip-vertex distance, mean over frames; millimetres,
    through the linearised lip Jacobian) of pred vs target [T,C]; the channel MSE when no rig is known."""
    err = (pred - target).double()
    if clip.lip_jacobian is None:
        return float(err.pow(2).mean())
    e3 = clip.lip_jacobian.shape[1]
    disp = (err[:, :e3] @ clip.lip_jacobian.double().T).reshape(err.shape[0], -1, 3)  # [T,L,3]
    return float(disp.norm(dim=-1).amax(1).mean()) * 1000.0


def opening_decorrelation(pred: Tensor, target: Tensor, clip: Clip) -> float:
    """1 - the Pearson correlation of the mouth opening (through the linearised opening gradient) of pred and
    target [T,C]: how far their opening and closing disagree in time, whatever the scale; the lip error when no
    rig is known."""
    if clip.opening_grad is None:
        return lip_error(pred, target, clip)
    g = clip.opening_grad.double()
    a, b = pred[:, : g.shape[0]].double() @ g, target[:, : g.shape[0]].double() @ g
    a, b = a - a.mean(), b - b.mean()
    return 1.0 - float((a * b).sum() / ((a.norm() * b.norm()).clamp_min(1e-12)))  # constant: no correlation


def out_of_fold(nets: list[Audio2Expr], members: list[Clip], ex: FeatureExtractor, ridge_cfg: RidgeConfig,
                ridge_ex: LogMel) -> tuple[Tensor, Tensor, Tensor]:
    """(networks [N,C], regressor [N,C], target [N,C]) on every fold's validation slice, each predicted by
    models that never saw its targets: the mean of the networks validated there, and a regressor fitted on
    the fold's training frames."""
    net_rows, ridge_rows, target_rows = [], [], []
    for fold in dict.fromkeys(m.val_range for m in members):  # each fold once, in order
        lo, hi = fold
        own = [(net, m) for net, m in zip(nets, members) if m.val_range == fold]
        clip = own[0][1]
        if hi - lo < 2:
            continue
        ridge = fit_ridge(clip, ridge_cfg, clip.fit_frames(), ridge_ex)
        ridge_rows.append(ridge.predict(ridge_ex, clip.wave, clip.fps, hi - lo, clip.offset_s + lo / clip.fps))
        f, _ = feature_window(clip, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
        with torch.no_grad():
            net_rows.append(torch.stack([net(f[None])[0] for net, _ in own]).mean(0))
        target_rows.append(clip.target[lo:hi])
    return torch.cat(net_rows), torch.cat(ridge_rows), torch.cat(target_rows)


def choose_blend(net_pred: Tensor, ridge_pred: Tensor, target: Tensor, clip: Clip, grid: tuple) -> tuple[float, dict]:
    """The regressor's share (from `grid`) with the smallest lip error; all [N,C] out-of-fold."""
    if target.shape[0] < 2:
        return 1.0, {}
    scores = {float(w): round(lip_error(w * ridge_pred + (1 - w) * net_pred, target, clip), 4) for w in grid}
    best = min(scores, key=scores.get)
    return best, scores


def fit_energy_jaw(seq: TrackedSequence, n_train: int, offset_s: float = 0.0) -> dict:
    """Least-squares jaw rotation = a + b * energy on the training frames (the fallback and the baseline)."""
    audio = np.asarray(seq.audio, np.float32)[: int(round((n_train / seq.fps + max(offset_s, 0)) * SAMPLE_RATE))]
    jaw = np.asarray(seq.jaw[:n_train], np.float64)
    ref = max(loudness_reference(audio), MIN_REF) if audio.size else 1.0
    if audio.size:
        e = frame_energy(audio, seq.fps, n_train, offset_s, ref).numpy().astype(np.float64)
    else:
        e = np.zeros(n_train)
    if e.std() < 1e-3:  # no usable audio: a generic opening (about 8 degrees at full speech level)
        return {"a": jaw.mean(0).tolist(), "b": [0.14, 0.0, 0.0], "fitted": False}
    A = np.stack([np.ones_like(e), e], 1)
    coef = np.linalg.solve(A.T @ A + 1e-6 * np.eye(2), A.T @ jaw)  # [2,3]
    return {"a": coef[0].tolist(), "b": coef[1].tolist(), "fitted": True}


def acoustic_voices_oof(nets: list[Audio2Expr], members: list[Clip], ex: FeatureExtractor, ridge_cfg: RidgeConfig,
                        ridge_ex: LogMel, blend: float, factors: tuple) -> list[Tensor]:
    """[N,C] per voice: the acoustic path's out-of-fold predictions over the folds of `members` (networks
    validated on each fold, a regressor fitted without it, blended), from the audio heard in each voice."""
    out = []
    for factor in factors:
        rows = []
        for fold in viseme_fit.folds_of(members):
            lo, hi = fold.val_range
            heard = voice_clip(fold, factor)
            pred = 0.0
            if blend > 0.0 or not nets:
                ridge = fit_ridge(fold, ridge_cfg, fold.fit_frames(), ridge_ex)
                r = ridge.predict(ridge_ex, heard.wave, heard.fps, hi - lo, heard.offset_s + lo / heard.fps)
                pred = r * (blend if nets else 1.0)
            own = [net for net, m in zip(nets, members) if m.val_range == fold.val_range]
            if own and blend < 1.0:
                f, _ = feature_window(heard, ex, float(lo), hi - lo, 1.0, 1.0, None, np.random.default_rng(0))
                with torch.no_grad():
                    pred = pred + (1.0 - blend) * torch.stack([net(f[None])[0] for net in own]).mean(0)
            rows.append(pred)
        out.append(torch.cat(rows))
    return out


def _voice_features(clip: Clip, factor: float) -> np.ndarray:  # -> [T,F] the clip's phonetic features in a voice
    heard = voice_clip(clip, factor)
    return speech_features(heard.wave, heard.fps, clip.target.shape[0], heard.offset_s)[0]


def fit_phonetic(clip: Clip, members: list[Clip], cfg: A2ETrainConfig, acoustic: Optional[list[Tensor]],
                 say: Callable[[str], None]) -> Optional[dict]:
    """The phonetic path on the clip: {"model", "mix", "report"} ("mix": the share and gain chosen per voice, see
    viseme_fit.choose_mix), or None when the phones are not trusted.

    acoustic: [N,C] per voice of cfg.voice_factors, the acoustic path's out-of-fold predictions over the folds of
    `members` (None: no acoustic path, the share is 1)."""
    n = clip.target.shape[0]
    features, judged = speech_features(clip.wave, clip.fps, n, clip.offset_s)
    pauses = pause_frames(clip.wave, clip.fps, n, clip.offset_s)  # the rest pose is learnt there
    report = {"phones": judged.to_json(), "voice_factors": list(cfg.voice_factors)}
    if not judged.reliable:
        say(f"phonetic lip sync: not used ({judged.reason}); the acoustic path drives the lips")
        return None
    error, timing_error, sized_error, vertex_error = _criteria(clip)
    folds = viseme_fit.folds_of(members)
    vcfg = cfg.visemes
    mix = {v: {"share": 1.0, "gain": 1.0} for v in ("enrollment_voice", "other_voices")}
    if folds:
        heard = [features if f == 1.0 else _voice_features(clip, f) for f in cfg.voice_factors]
        others = [0.0 if f == 1.0 else 1.0 for f in cfg.voice_factors]  # resampled: heard as another voice
        vcfg, phon_oof, alpha_scores = viseme_fit.choose_alpha(features, heard, folds, cfg.visemes, error, others,
                                                               pauses)
        target = torch.cat([f.target[slice(*f.val_range)] for f in folds])
        mix = viseme_fit.choose_mix(phon_oof, acoustic, target, cfg.voice_factors, (timing_error, sized_error),
                                    vertex_error, cfg.other_voice_share)
        report.update(alpha_scores=alpha_scores, oof_error_by_voice={
            f"{f:g}": {"phonetic": round(error(p, target), 4),
                       **({} if acoustic is None else {"acoustic": round(error(acoustic[k], target), 4)})}
            for k, (f, p) in enumerate(zip(cfg.voice_factors, phon_oof))})
    frames = all_seen_frames(clip)
    model = VisemeModel.fit(vcfg, features[frames], clip.target[frames], clip.lip_jacobian, clip.opening_grad,
                            pauses[frames])
    vprint = voice_print(clip.wave)
    report.update(mix=mix, alpha=vcfg.alpha, voice_f0_hz=median_f0(clip.wave),
                  voice_print=None if vprint is None else vprint.to_json())
    say(_summary(judged, mix, report))
    return {"model": model, "mix": mix, "report": report}


def _criteria(clip: Clip) -> tuple[Callable, Callable, Callable, Callable]:
    """(lip error, timing error, sized error, vertex error), each (pred, target) [N,C] -> float, on the clip's lips.

    The evaluation's two figures: when the mouth opens and closes (the opening's correlation, scale-free) and how
    far the lips are off (the vertex error; "sized": at its best gain, as the gain sets the size afterwards). The
    phonetic share is chosen nearest to the best by timing and sized error, the gain by the vertex error; the plain
    lip error picks the regressor's strength."""
    error = lambda pred, target: lip_error(pred, target, clip)  # noqa: E731
    timing = lambda pred, target: opening_decorrelation(pred, target, clip)  # noqa: E731
    vertex = lambda pred, target: lip_vertex_error(pred, target, clip)  # noqa: E731
    sized = lambda pred, target: min(vertex(g * pred, target) for g in viseme_fit.GAIN_GRID)  # noqa: E731
    return error, timing, sized, vertex


def _summary(judged, mix: dict, report: dict) -> str:
    same, other = mix["enrollment_voice"], mix["other_voices"]
    evidence = other.get("evidence_share", other["share"])
    oof = report.get("oof_error_by_voice")
    return (f"phonetic lip sync: {judged.phones} phones in {judged.speech_s:.1f} s of speech; share "
            f"{same['share']:.2f}, gain {same['gain']:.1f} in the enrollment voice; share {other['share']:.2f} (the "
            f"resampled voices' evidence: {evidence:.2f}), gain {other['gain']:.1f} in other voices"
            + (f" (out-of-fold lip error by voice: {oof})" if oof else ""))


def phonetic_entries(phon: Optional[dict]) -> tuple[dict, dict]:
    """(tensors, config entries) that save the phonetic path (empty when there is none)."""
    if phon is None:
        return {}, {"phonetic_share": 0.0}
    same, other = phon["mix"]["enrollment_voice"], phon["mix"]["other_voices"]
    return phon["model"].tensors(), {"visemes": phon["model"].cfg.to_json(), "phonetic_share": same["share"],
                                     "phonetic_share_other_voice": other["share"], "gain": same["gain"],
                                     "gain_other_voice": other["gain"], "voice_f0_hz": phon["report"]["voice_f0_hz"],
                                     "voice_print": phon["report"]["voice_print"],
                                     "phonetic": phon["report"]}
