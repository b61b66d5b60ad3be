"""Emotions as offsets of the rig's named expressions: facial action units on this person's own range.

Each emotion is a few FACS action units (Ekman & Friesen's prototypes, as EMFACS lists them); each unit is one or
two of the rig's named shapes (ICT-FaceKit's ARKit-style names; a rig lacking a shape leaves that unit out). An
offset is `intensity x weight x reach`, where a channel's reach is how far this person moved it in the enrollment
(98th percentile above the mean) but at least MIN_REACH, so someone who never frowned on camera still can.

| emotion | action units | shapes |
|---|---|---|
| neutral | none | none |
| happy | AU6 cheek raiser, AU12 lip-corner puller | cheekRaiser (else cheekSquint), mouthSmile |
| sad | AU1 inner-brow raiser, AU4 brow lowerer, AU15 lip-corner depressor | browInnerUp, browDown, mouthFrown |
| angry | AU4, AU5 upper-lid raiser, AU7 lid tightener, AU23 lip tightener | browDown, eyeWide, eyeSquint, mouthPress |
| surprised | AU1, AU2 outer-brow raiser, AU5, AU26 jaw drop | browInnerUp, browOuterUp, eyeWide, jaw |
| disgusted | AU9 nose wrinkler, AU10 upper-lip raiser, AU15 | noseSneer, mouthUpperUp, mouthFrown |
| fearful | AU1, AU2, AU4, AU5, AU20 lip stretcher, AU26 | browInnerUp, browOuterUp, browDown, eyeWide, mouthStretch, jaw |
| contempt | AU12 and AU14 dimpler, on one side | mouthSmile_R, mouthDimple_R |

Speech keeps the mouth: on the channels that shape speech (drive/dub.py `speech_channels`), the offset fades as
the jaw opens (fully gone at the person's widest opening), so a vowel is never closed by a frown or a press;
the upper face carries the emotion throughout.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from avatar3d.errors import InputError

MIN_REACH = 0.5  # a channel's smallest reach (coefficient units): what an unused shape gets
JAW_DROP_DEG = 12.0  # AU26 at weight 1: degrees of jaw opening

# action unit -> (shape stems, side): side "both" matches NAME, NAME_L/_R, NAMELeft/Right; "R" the right only
UNITS = {
    "AU1": (("browInnerUp",), "both"), "AU2": (("browOuterUp",), "both"), "AU4": (("browDown",), "both"),
    "AU5": (("eyeWide",), "both"), "AU6": (("cheekRaiser", "cheekSquint"), "both"), "AU7": (("eyeSquint",), "both"),
    "AU9": (("noseSneer",), "both"), "AU10": (("mouthUpperUp",), "both"), "AU12": (("mouthSmile",), "both"),
    "AU12R": (("mouthSmile",), "R"), "AU14R": (("mouthDimple",), "R"), "AU15": (("mouthFrown",), "both"),
    "AU20": (("mouthStretch",), "both"), "AU23": (("mouthPress",), "both"),
}
EMOTIONS = {
    "neutral": {},
    "happy": {"AU6": 0.7, "AU12": 1.0},
    "sad": {"AU1": 1.0, "AU4": 0.4, "AU15": 0.8},
    "angry": {"AU4": 1.0, "AU5": 0.3, "AU7": 0.6, "AU23": 0.8},
    "surprised": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU26": 0.7},
    "disgusted": {"AU9": 1.0, "AU10": 0.7, "AU15": 0.5},
    "fearful": {"AU1": 1.0, "AU2": 0.6, "AU4": 0.5, "AU5": 1.0, "AU20": 0.8, "AU26": 0.3},
    "contempt": {"AU12R": 0.7, "AU14R": 0.8},
}


def _side_names(stem: str, side: str) -> tuple[str, ...]:
    right = (f"{stem}_R", f"{stem}Right")
    return right if side == "R" else (stem, f"{stem}_L", f"{stem}Left", *right)


def unit_channels(unit: str, expr_names: list[str]) -> list[int]:
    """The rig's channels of an action unit (the first stem the rig has; none when it has none)."""
    return list(_unit_channels(unit, tuple(expr_names)))


@functools.lru_cache(maxsize=256)
def _unit_channels(unit: str, expr_names: tuple) -> tuple:  # once per rig, not once per rendered frame
    stems, side = UNITS[unit]
    for stem in stems:
        found = tuple(i for i, n in enumerate(expr_names) if n in _side_names(stem, side))
        if found:
            return found
    return ()


@dataclass(frozen=True)
class Emotion:
    """An emotion at an intensity (0: none, 1: the table's prototype; up to 2)."""

    name: str = "neutral"
    intensity: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in EMOTIONS:
            raise InputError(f"unknown emotion {self.name!r}; use one of {', '.join(EMOTIONS)}")
        if not (math.isfinite(self.intensity) and 0.0 <= self.intensity <= 2.0):
            raise InputError(f"emotion intensity {self.intensity} is outside 0..2 (1 is the prototype)")

    def offsets(self, expr_names: list[str], reach: np.ndarray) -> tuple[np.ndarray, float]:
        # reach: [E] this person's reach per channel
        """(expression offsets [E], jaw opening in degrees) of this emotion for this face."""
        expr = np.zeros(len(expr_names), np.float32)
        jaw = 0.0
        for unit, weight in EMOTIONS[self.name].items():
            if unit == "AU26":
                jaw += self.intensity * weight * JAW_DROP_DEG
                continue
            for c in unit_channels(unit, expr_names):
                expr[c] += self.intensity * weight * max(float(reach[c]), MIN_REACH)
        return expr, jaw


def parse_emotion(text: Optional[str]) -> Optional[Emotion]:
    """`happy` or `happy:0.6` -> Emotion (None for no text)."""
    if text is None or not str(text).strip():
        return None
    name, _, level = str(text).strip().partition(":")
    try:
        intensity = float(level) if level else 1.0
    except ValueError:
        raise InputError(f"--emotion {text!r}: write NAME or NAME:INTENSITY, e.g. happy:0.6") from None
    return Emotion(name.strip().lower(), intensity)


@dataclass(frozen=True)
class EmotionPath:
    """Emotions keyframed over time; between two keyframes their offsets blend linearly (docs/emotion.md)."""

    times: tuple  # seconds, increasing
    emotions: tuple  # Emotion per keyframe

    @classmethod
    def load(cls, path: Path) -> "EmotionPath":
        try:
            data = json.loads(Path(path).read_text())
            keys = data["keyframes"]
            times = tuple(float(k["t"]) for k in keys)
            emotions = tuple(_keyframe(k, i, path) for i, k in enumerate(keys))
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{path} is not an emotion path ({type(err).__name__}: {err}); docs/emotion.md shows "
                             f'the format: {{"keyframes": [{{"t": 0, "emotion": "happy", "intensity": 1}}]}}') \
                from None
        if not times or not all(math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            raise InputError(f"{path}: give at least one keyframe, with finite, increasing times t (seconds)")
        return cls(times, emotions)

    def at(self, seconds: float) -> list[tuple[Emotion, float]]:
        """The keyframes that make the moment `seconds`, with their blend weights."""
        i = int(np.searchsorted(self.times, seconds, side="right"))
        if i == 0:
            return [(self.emotions[0], 1.0)]
        if i == len(self.times):
            return [(self.emotions[-1], 1.0)]
        a, b = self.times[i - 1], self.times[i]
        w = (seconds - a) / (b - a)
        return [(self.emotions[i - 1], 1.0 - w), (self.emotions[i], w)]


def _keyframe(key: dict, index: int, path: Path) -> Emotion:
    try:
        return Emotion(str(key.get("emotion", "neutral")).lower(), float(key.get("intensity", 1.0)))
    except InputError as err:
        raise InputError(f"{path} keyframe {index + 1}: {err}") from None


def blended_offsets(parts: list[tuple[Emotion, float]], expr_names: list[str], reach: np.ndarray) -> tuple:
    """Offsets of a weighted blend of emotions (a keyframed moment)."""
    expr = np.zeros(len(expr_names), np.float32)
    jaw = 0.0
    for emotion, weight in parts:
        e, j = emotion.offsets(expr_names, reach)
        expr += weight * e
        jaw += weight * j
    return expr, jaw


def speech_fade(jaw_open: float, reach: float) -> float:
    """How much of an emotion's mouth offsets remains when speech opens the jaw by `jaw_open` (radians above
    rest) out of the person's `reach`: 1 with the mouth at rest, 0 at the widest opening."""
    return float(np.clip(1.0 - max(jaw_open, 0.0) / max(reach, 1e-3), 0.0, 1.0))
