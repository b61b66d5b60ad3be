"""Per-frame phonetic features from phone segments: what is spoken around each video frame.

Phones are grouped into viseme classes (sounds that look alike on the lips). For frame time t the features are
- viseme-class occupancy (the share of a 40 ms window each class covers) at the offsets COARTIC_S around t:
  what came before and what comes next, so a model can anticipate (the lips close before a /b/ is heard);
- phone occupancy at t (the identity, finer than the class);
- time since the current phone began and until it ends (clipped at BOUNDARY_CLIP_S, scaled to [0, 1]);
- silence: the length of the pause t sits in and the distance to the nearest speech (both clipped);
- prosody: energy (dB relative to the clip's speech level, scaled) and pitch (log f0 relative to the clip's
  median, 0 where unvoiced) with the voicing strength.

The class table is ours, written from how the mouth forms each sound (the grouping animation tools such as
Rhubarb Lip Sync use: closed lips for P/B/M, lower lip to teeth for F/V, rounded for W/UW/OW, wide for AA...).
`OPENING_LEVEL` is a rough speaker-independent mouth opening per class, in units of a person's spread of
opening above their rest pose: the weak prior for a class the enrollment video never shows, and (with each
class's `DOMINANCE` over its neighbours) the strong prior of how the person speaks in a voice not their own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar3d.audio2expr.phones import NOISE_PHONES, PHONE_INDEX, PHONES, SAMPLE_RATE, SILENCE, PhoneSegments
from avatar3d.audio2expr.prosody import energy_pitch

VISEMES = {
    "rest": (SILENCE, "+NSN+"),
    "closed": ("P", "B", "M"),
    "lip_teeth": ("F", "V"),
    "dental": ("TH", "DH"),
    "tongue": ("T", "D", "N", "K", "G", "NG", "HH", "Y"),
    "sibilant": ("S", "Z"),
    "postalveolar": ("CH", "JH", "SH", "ZH"),
    "lateral": ("L",),
    "rhotic": ("R", "ER"),
    "round": ("W", "UW", "UH", "OW", "OY"),
    "front_close": ("IH", "IY"),
    "front_mid": ("EH", "AE", "EY"),
    "open": ("AA", "AH", "AY", "AW", "AO"),
    "unknown": ("+SPN+",),
}
VISEME_NAMES = tuple(VISEMES)
OPENING_LEVEL = {"rest": 0.0, "closed": -0.5, "lip_teeth": 0.0, "dental": 0.8, "tongue": 0.8, "sibilant": 0.4,
                 "postalveolar": 0.7, "lateral": 1.0, "rhotic": 0.9, "round": 0.3, "front_close": 1.0,
                 "front_mid": 1.8, "open": 2.5, "unknown": 1.0}
"""Rounded sounds (W, UW, OW...) protrude the lips around a small aperture: their vertical opening is small, not
mid-range; lips pressed together (P/B/M) sit below the rest pose, whose lips may be parted; F/V tuck the lower lip
under the teeth, about as closed as rest."""
DOMINANCE = {"closed": 3.0, "lip_teeth": 2.0, "tongue": 0.3}
"""How strongly a class sets the lips against its neighbours (the dominance of Cohen and Massaro's coarticulation
model; classes not named: 1). P/B/M must close the lips and F/V put the lip to the teeth whatever surrounds them;
for T/D/N/K/G/NG/HH/Y the tongue does the work and the lips keep the shape of the vowels around them."""
PHONE_TO_VISEME = np.array([next(k for k, (_, ps) in enumerate(VISEMES.items()) if p in ps) for p in PHONES], np.int64)
VISEME_OF_PHONE = np.eye(len(VISEME_NAMES))[PHONE_TO_VISEME]  # [P,V] one-hot class of each phone
COARTIC_S = (-0.16, -0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, 0.16)
WINDOW_S = 0.04  # occupancy window
BOUNDARY_CLIP_S = 0.3
PAUSE_CLIP_S = 1.0
NEAR_SPEECH_CLIP_S = 0.5
SUBSTEPS = 8  # samples per occupancy window


def viseme_of(phone: str) -> str:
    return VISEME_NAMES[int(PHONE_TO_VISEME[PHONE_INDEX.get(phone, PHONE_INDEX[SILENCE])])]


def _segment_at(seg: PhoneSegments, times: np.ndarray) -> np.ndarray:  # times: [...] -> [...] segment index
    idx = np.searchsorted(seg.ends, times, side="right")
    return np.clip(idx, 0, len(seg) - 1)


def phone_occupancy(seg: PhoneSegments, times: np.ndarray, window: float = WINDOW_S) -> np.ndarray:
    # times: [T] seconds -> [T,P] share of [t - window/2, t + window/2] each phone covers (outside: silence)
    offsets = (np.arange(SUBSTEPS) + 0.5) / SUBSTEPS * window - window / 2
    samples = times[:, None] + offsets[None]  # [T,S]
    ids = seg.ids()[_segment_at(seg, samples)] if len(seg) else np.full(samples.shape, PHONE_INDEX[SILENCE])
    ids = np.where((samples < 0) | (samples >= seg.duration), PHONE_INDEX[SILENCE], ids)
    rows = np.repeat(np.arange(len(times)), SUBSTEPS) * len(PHONES) + ids.reshape(-1)
    counts = np.bincount(rows, minlength=len(times) * len(PHONES))
    return counts.reshape(len(times), len(PHONES)) / SUBSTEPS


def viseme_occupancy(seg: PhoneSegments, times: np.ndarray, window: float = WINDOW_S) -> np.ndarray:
    # times: [T] -> [T,V]
    return phone_occupancy(seg, times, window) @ VISEME_OF_PHONE


def _boundary_features(seg: PhoneSegments, times: np.ndarray) -> np.ndarray:  # [T] -> [T,2]
    if not len(seg):
        return np.ones((len(times), 2))
    i = _segment_at(seg, times)
    since = np.clip(times - seg.starts[i], 0, BOUNDARY_CLIP_S) / BOUNDARY_CLIP_S
    until = np.clip(seg.ends[i] - times, 0, BOUNDARY_CLIP_S) / BOUNDARY_CLIP_S
    return np.stack([since, until], 1)


def _pause_features(seg: PhoneSegments, times: np.ndarray) -> np.ndarray:  # [T] -> [T,2]
    """Length of the silence t sits in (0 in speech) and the distance to the nearest speech, both in [0, 1]."""
    silent = np.array([p in (SILENCE,) + NOISE_PHONES for p in seg.phones], bool)
    if not len(seg) or silent.all():
        return np.ones((len(times), 2))
    # each run of silent segments is one pause [begin, end); speech lies on the sides that are not the clip's ends
    begin, end = seg.starts.copy(), seg.ends.copy()
    for k in range(1, len(seg)):
        if silent[k] and silent[k - 1]:
            begin[k] = begin[k - 1]
    for k in range(len(seg) - 2, -1, -1):
        if silent[k] and silent[k + 1]:
            end[k] = end[k + 1]
    i = _segment_at(seg, times)
    in_pause = silent[i]
    before = np.where(begin[i] > 0, times - begin[i], np.inf)
    after = np.where(end[i] < seg.duration, end[i] - times, np.inf)
    near = np.where(in_pause, np.minimum(before, after), 0.0)
    length = np.where(in_pause, end[i] - begin[i], 0.0)
    return np.stack([np.clip(length, 0, PAUSE_CLIP_S) / PAUSE_CLIP_S,
                     np.clip(near, 0, NEAR_SPEECH_CLIP_S) / NEAR_SPEECH_CLIP_S], 1)


def feature_names() -> list[str]:
    names = [f"{v}@{int(round(d * 1000)):+d}ms" for d in COARTIC_S for v in VISEME_NAMES]
    names += [f"phone:{p}" for p in PHONES]
    return names + ["since_start", "until_end", "pause_length", "to_speech", "energy", "log_f0", "voicing"]


def phonetic_frames(seg: PhoneSegments, wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0,
                    chunk: int = 4096, prosody: np.ndarray | None = None) -> np.ndarray:
    # wave: [A] 16 kHz of the same clip as seg -> [T,F] float32 for frames at t0 + i/fps
    # prosody: [T,3] energy_pitch of these frames when already computed (it depends on the audio, not the phones)
    """The phonetic features of `num_frames` frames (module doc), computed in chunks (constant memory)."""
    if prosody is None:
        prosody = energy_pitch(wave, fps, num_frames, t0)
    out = []
    for s in range(0, num_frames, chunk):
        times = t0 + (np.arange(s, min(num_frames, s + chunk)) / fps)
        parts = [viseme_occupancy(seg, times + d) for d in COARTIC_S]
        parts += [phone_occupancy(seg, times), _boundary_features(seg, times), _pause_features(seg, times)]
        out.append(np.concatenate(parts, 1))
    feats = np.concatenate(out, 0) if out else np.zeros((0, len(feature_names()) - 3))
    return np.concatenate([feats, prosody], 1).astype(np.float32)


DECODE_SHIFTS_S = (0.0, 0.0033, 0.0067)
"""The audio is decoded once per shift of its start (a third of the decoder's 10 ms frame apart) and the features
averaged: one decode's phone choices and boundaries are noisy, their average is steadier (on German_20s's
held-out tail the mouth-opening correlation rose from 0.68 to 0.70 and the lip error fell by 6 %)."""
MIN_PHONE_SPEECH_S = 1.0  # less speech in the phones than this: they are not trusted...
MIN_SPEECH_SHARE = 0.3  # ...or, in a clip shorter than about 3 s, less than this share of it
PHONE_RATE = (4.0, 25.0)  # plausible phones per second of speech


@dataclass
class PhoneticReport:
    speech_s: float  # seconds of speech phones (first decode)
    phones: int
    reliable: bool
    reason: str = ""

    def to_json(self) -> dict:
        return {"speech_s": round(self.speech_s, 2), "phones": self.phones, "reliable": self.reliable,
                "reason": self.reason}


def judge(seg: PhoneSegments, energy_speech_s: float) -> PhoneticReport:
    """Whether the phones of a clip can be trusted: enough speech, at a speech-like rate, and the loudness
    agreeing that someone speaks (noise and music decode into phones too)."""
    speech = seg.speech_seconds()
    n = sum(p not in (SILENCE,) + NOISE_PHONES for p in seg.phones)
    rate = n / speech if speech > 0 else 0.0
    need = min(MIN_PHONE_SPEECH_S, MIN_SPEECH_SHARE * seg.duration)  # a short clip needs less
    if speech < need or energy_speech_s < need:
        reason = f"only {min(speech, energy_speech_s):.1f} s of speech detected"
    elif not PHONE_RATE[0] <= rate <= PHONE_RATE[1]:
        reason = f"{rate:.1f} phones per second of speech (speech has {PHONE_RATE[0]:.0f}-{PHONE_RATE[1]:.0f})"
    else:
        reason = ""
    return PhoneticReport(speech, n, not reason, reason)


def speech_features(wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0,
                    shifts: tuple = DECODE_SHIFTS_S) -> tuple[np.ndarray, PhoneticReport]:
    # wave: [A] 16 kHz -> ([T,F] features of frames at t0 + i/fps averaged over the decodes, report)
    """The phonetic features of a clip (decoded once per start shift, averaged) and whether to trust them."""
    from avatar3d.audio2expr.features import speech_seconds
    from avatar3d.audio2expr.phones import decode_phones

    wave = np.asarray(wave, np.float32)
    prosody = energy_pitch(wave, fps, num_frames, t0)  # once: the decodes differ, the audio does not
    total, report = None, None
    for shift in shifts:
        pad = int(round(shift * SAMPLE_RATE))
        seg = decode_phones(np.concatenate([np.zeros(pad, np.float32), wave]))
        seg = PhoneSegments(seg.phones, seg.starts - pad / SAMPLE_RATE, seg.ends - pad / SAMPLE_RATE,
                            len(wave) / SAMPLE_RATE)
        feats = phonetic_frames(seg, wave, fps, num_frames, t0, prosody=prosody)
        total = feats if total is None else total + feats
        if report is None:
            report = judge(seg, speech_seconds(wave))
    return total / len(shifts), report
