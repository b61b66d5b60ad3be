"""Fitting the phonetic path on an enrollment clip, and choosing it against the acoustic one on evidence.

Every choice is made on out-of-fold predictions: each fold's block of training frames is predicted by a
viseme model fitted on the other blocks only (the same blocks the acoustic networks are early-stopped on), so
the regressor's strength and the phonetic share are picked by how well they predict frames they never saw,
heard in the enrollment voice and in the same audio resampled into other voices (voices.py): the main use is
another person's voice, and a model that learned this voice rather than the words loses there.
The clips passed in are train.py's `Clip`s (its fold copies): `val_range`, `fit_frames()`, `target`,
`lip_jacobian`, `opening_grad`; `error(pred, target)` is the lip error the acoustic path is chosen by.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from avatar3d.audio2expr.visemes import VisemeConfig, VisemeModel

ALPHA_GRID = (3.0, 10.0, 30.0, 100.0)  # out of fold on German_20s: flat beyond 100
SHARE_GRID = tuple(k / 10 for k in range(11))


def folds_of(members: list) -> list:
    """One clip per distinct validation block, in order (the ensemble repeats each block)."""
    seen, out = set(), []
    for m in members:
        if m.val_range not in seen and m.val_range[1] - m.val_range[0] >= 2:
            seen.add(m.val_range)
            out.append(m)
    return out


def out_of_fold(features: np.ndarray, heard: list[np.ndarray], folds: list, cfg: VisemeConfig,
                others: Optional[list[float]] = None,
                pauses: Optional[np.ndarray] = None) -> tuple[list[Tensor], Tensor]:
    """Each fold's block predicted by a model fitted on the other blocks of `features` (the enrollment voice),
    from each of `heard` (the same frames' features in other voices, voices.py) with the matching voice distance
    of `others` (VisemeModel.predict's `other`; default 0): ([N,C] per voice, target [N,C]). pauses: [T] bool,
    the clip's pause frames (VisemeModel.fit)."""
    others = [0.0] * len(heard) if others is None else others
    preds, targets = [[] for _ in heard], []
    for clip in folds:
        lo, hi = clip.val_range
        fit = clip.fit_frames()
        model = VisemeModel.fit(cfg, features[fit], clip.target[fit], clip.lip_jacobian, clip.opening_grad,
                                None if pauses is None else pauses[fit])
        for rows, feats, other in zip(preds, heard, others):
            rows.append(model.predict(feats[lo:hi], other))
        targets.append(clip.target[lo:hi])
    return [torch.cat(rows) for rows in preds], torch.cat(targets)


def mean_error(preds: list[Tensor], target: Tensor, error: Callable[[Tensor, Tensor], float]) -> float:
    return float(np.mean([error(p, target) for p in preds]))


def choose_alpha(features: np.ndarray, heard: list[np.ndarray], folds: list, cfg: VisemeConfig,
                 error: Callable[[Tensor, Tensor], float],
                 others: Optional[list[float]] = None,
                 pauses: Optional[np.ndarray] = None) -> tuple[VisemeConfig, list[Tensor], dict]:
    """The regressor strength with the smallest out-of-fold lip error over the voices: (config, its OOF
    predictions per voice, scores). others, pauses: as out_of_fold."""
    best, scores = None, {}
    for alpha in ALPHA_GRID:
        trial = dataclasses.replace(cfg, alpha=alpha)
        preds, target = out_of_fold(features, heard, folds, trial, others, pauses)
        scores[alpha] = round(mean_error(preds, target, error), 4)
        if best is None or scores[alpha] < scores[best[0].alpha]:
            best = (trial, preds)
    return best[0], best[1], scores


def choose_share(phonetic: list[Tensor], acoustic: list[Tensor], target: Tensor,
                 errors: Sequence[Callable[[Tensor, Tensor], float]]) -> tuple[float, dict]:
    """The phonetic path's share of the output (the rest is the acoustic path's) nearest to the best by every one
    of `errors`: each criterion's out-of-fold error (averaged over the voices given) is divided by its smallest
    over the shares, and the share with the smallest sum wins. Lists hold [N,C] per voice, in the same order.
    Returns (share, {share: [error per criterion]})."""
    table = {w: [float(np.mean([err(w * p + (1 - w) * a, target) for p, a in zip(phonetic, acoustic)]))
                 for err in errors] for w in SHARE_GRID}
    best = [min(row[k] for row in table.values()) for k in range(len(errors))]
    excess = {w: sum(v / max(b, 1e-12) for v, b in zip(row, best)) for w, row in table.items()}
    return min(excess, key=excess.get), {w: [round(v, 4) for v in row] for w, row in table.items()}


GAIN_GRID = (1.0, 1.2, 1.4, 1.7, 2.0)
"""Gains on the blended output (its deviation from the person's mean) tried out of fold: averaging networks, two
paths and decodes damps the motion below what the least-squares fit of each would give."""


def choose_gain(preds: list[Tensor], target: Tensor, error: Callable[[Tensor, Tensor], float]) -> tuple[float, dict]:
    """The gain on [N,C] predictions (one per voice) with the smallest out-of-fold lip error averaged over them."""
    scores = {g: round(float(np.mean([error(g * p, target) for p in preds])), 4) for g in GAIN_GRID}
    return min(scores, key=scores.get), scores


def choose_mix(phonetic: list[Tensor], acoustic: Optional[list[Tensor]], target: Tensor, factors: tuple,
               share_errors: Sequence[Callable[[Tensor, Tensor], float]],
               gain_error: Callable[[Tensor, Tensor], float],
               other_share: Optional[float] = None) -> dict:
    """The phonetic share and the output gain, chosen once for the enrollment voice (factor 1) and once for the
    other voices: {"enrollment_voice": {...}, "other_voices": {...}}, each {"share", "gain", "share_scores",
    "gain_scores", "evidence_share"}. Without an acoustic path the share is 1. Lists hold [N,C] per factor, in
    `factors` order. The share is the one nearest to the best by every one of `share_errors` (choose_share), the
    gain the one with the smallest `gain_error`; other_share, when given, is the other voices' share whatever the
    evidence says ("evidence_share" keeps what it said)."""
    groups = {"enrollment_voice": [k for k, f in enumerate(factors) if f == 1.0],
              "other_voices": [k for k, f in enumerate(factors) if f != 1.0]}
    out = {}
    for name, ks in groups.items():
        if not ks:
            continue
        phon = [phonetic[k] for k in ks]
        share, share_scores = 1.0, {}
        mixed = phon
        if acoustic is not None:
            ac = [acoustic[k] for k in ks]
            share, share_scores = choose_share(phon, ac, target, share_errors)
        evidence = share
        if name == "other_voices" and other_share is not None:
            share = float(other_share)
        if acoustic is not None:
            mixed = [share * p + (1 - share) * a for p, a in zip(phon, ac)]
        gain, gain_scores = choose_gain(mixed, target, gain_error)
        out[name] = {"share": share, "gain": gain, "share_scores": share_scores, "gain_scores": gain_scores,
                     "evidence_share": evidence}
    for name, other in (("enrollment_voice", "other_voices"), ("other_voices", "enrollment_voice")):
        out.setdefault(name, out.get(other))
    return out
