"""Keyframed cameras for `avatar3d render --camera-path FILE.json`.

The file is JSON: an object with a `keyframes` list (or just the list itself). Each keyframe sets a moment
and any of the camera fields; a field a keyframe leaves out is interpolated from the keyframes that set it.

```json
{
  "interpolation": "catmull-rom",
  "angles": "continuous",
  "keyframes": [
    {"t": 0.0, "yaw": -30, "pitch": 0, "distance_scale": 1.0, "target_offset": [0, 0, 0]},
    {"t": 0.5, "yaw": 0,   "pitch": 8, "distance_scale": 0.7, "target_offset": [0, 0.01, 0]},
    {"t": 1.0, "yaw": 30,  "pitch": 0, "distance_scale": 1.0, "target_offset": [0, 0, 0]}
  ]
}
```

Keyframe keys:

| key | meaning |
|---|---|
| `time` | seconds from the start of the clip (>= 0) |
| `t` | fraction of the clip, 0..1 (every keyframe of a file uses `time`, or every one uses `t`) |
| `distance` | metres from the camera to the head centre |
| `distance_scale` | distance relative to the enrolled camera's (0.5: twice as close); a file uses this or `distance` |
| `yaw` | degrees about the head's up axis; positive moves the camera towards the subject's left |
| `pitch` | degrees in [-90, 90]; positive raises the camera (it looks down at the face) |
| `fov` | vertical field of view, degrees in (0, 180) |
| `target_offset` | `[x, y, z]` metres added to the orbit target (the head centre), in the head's frame |

Top-level options: `interpolation` is `catmull-rom` (default: smooth, C1, through every keyframe, with a
monotone limiter so no value overshoots its neighbouring keyframes; two keyframes give a steady linear
move, so `yaw` 0 -> 360 is a turntable at constant speed), `smoothstep` (eases in and out of every keyframe)
or `linear`. `angles` is `continuous` (default: yaw and pitch are taken as written, never wrapped, so
0 -> 720 turns twice) or `shortest` (each yaw step is wrapped into [-180, 180), e.g. 350 -> 10 turns +20).
Before the first keyframe and after the last one that sets a field, its value holds; a field no keyframe
sets is absent from `at()` (the caller's default applies). `distance`, `distance_scale` and `fov` are
interpolated in the logarithm (an even zoom that never reaches zero).

Times are strictly increasing; unknown keys, NaN/Infinity, wrong types and out-of-range values are refused
with a message that names the keyframe and the fix.
"""
from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from avatar3d.errors import InputError

SCALAR_FIELDS = ("distance", "distance_scale", "yaw", "pitch", "fov")
VECTOR_FIELDS = ("target_offset",)
CAMERA_FIELDS = SCALAR_FIELDS + VECTOR_FIELDS
TIME_KEYS = ("time", "t")
KEYFRAME_KEYS = TIME_KEYS + CAMERA_FIELDS
TOP_KEYS = ("keyframes", "interpolation", "angles", "version", "comment")
INTERPOLATIONS = ("catmull-rom", "smoothstep", "linear")
ANGLE_MODES = ("continuous", "shortest")
FORMAT_HINT = "see docs/camera_path.md for the format"


def _fail(where: str, problem: str, fix: str) -> InputError:
    return InputError(f"{where}: {problem}; {fix} ({FORMAT_HINT})")


def _unknown(key: str, known: Sequence[str], where: str) -> InputError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return _fail(where, f"unknown key {key!r}", f"{hint}")


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"{key} must be a number, got {json.dumps(value)}", f"write e.g. \"{key}\": 1.0")
    if not math.isfinite(value):
        raise _fail(where, f"{key} is {value}", "use a finite number")
    return float(value)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


@dataclass
class _Track:
    """One field's keyframes: times [K] (seconds or clip fractions) and values [K,D]."""

    times: np.ndarray  # [K] float64, strictly increasing
    values: np.ndarray  # [K,D] float64
    log: bool = False  # interpolate the logarithm (positive quantities: zooms feel uniform, never <= 0)


class CameraPath:
    """A validated camera path; `at(seconds, clip_seconds)` gives the camera fields at a moment."""

    def __init__(self, keyframes: list[dict], *, interpolation: str = "catmull-rom", angles: str = "continuous",
                 source: str = "camera path"):
        self.source = source
        if interpolation not in INTERPOLATIONS:
            raise _fail(source, f"interpolation {interpolation!r} is not known",
                        f"use one of {', '.join(INTERPOLATIONS)}")
        if angles not in ANGLE_MODES:
            raise _fail(source, f"angles {angles!r} is not known", f"use one of {', '.join(ANGLE_MODES)}")
        self.interpolation, self.angles = interpolation, angles
        self.keyframes = [self._check_keyframe(k, i) for i, k in enumerate(keyframes)]
        if not self.keyframes:
            raise _fail(source, "there are no keyframes", "add at least one, e.g. {\"t\": 0, \"yaw\": 0}")
        kinds = {next(k for k in TIME_KEYS if k in kf) for kf in self.keyframes}
        if len(kinds) > 1:
            raise _fail(source, "some keyframes use \"time\" (seconds) and others \"t\" (clip fraction)",
                        "use one of the two in every keyframe")
        self.time_key = kinds.pop()
        times = np.array([kf[self.time_key] for kf in self.keyframes], dtype=np.float64)
        for i in range(1, len(times)):
            if not times[i] > times[i - 1]:
                raise _fail(f"{source}, keyframe {i}",
                            f"{self.time_key}={times[i]:g} does not come after keyframe {i - 1}'s {times[i - 1]:g}",
                            "list the keyframes in strictly increasing time")
        if any("distance" in kf for kf in self.keyframes) and any("distance_scale" in kf for kf in self.keyframes):
            raise _fail(source, "keyframes mix \"distance\" (metres) and \"distance_scale\" (relative)",
                        "use one of the two throughout the file")
        self.tracks: dict[str, _Track] = {}
        for key in CAMERA_FIELDS:
            rows = [(t, kf[key]) for t, kf in zip(times, self.keyframes) if key in kf]
            if not rows:
                continue
            values = np.array([np.atleast_1d(v) for _, v in rows], dtype=np.float64)  # [K,D]
            if key == "yaw" and angles == "shortest":
                steps = np.diff(values[:, 0])
                values[1:, 0] = values[0, 0] + np.cumsum((steps + 180.0) % 360.0 - 180.0)
            self.tracks[key] = _Track(np.array([t for t, _ in rows]), values,
                                      log=key in ("distance", "distance_scale", "fov"))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> "CameraPath":
        """Read and validate a camera-path JSON file."""
        p = Path(path)
        if not p.is_file():
            where = "is a folder" if p.is_dir() else "does not exist"
            raise InputError(f"camera path {p} {where}; pass a .json file ({FORMAT_HINT}; an example is "
                             f"docs/examples/orbit_zoom.json)")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"camera path {p} cannot be read ({err}); pass a UTF-8 JSON file") from err
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as err:
            raise InputError(f"camera path {p} is not valid JSON: {err.msg} at line {err.lineno}, column "
                             f"{err.colno}; fix the syntax (a JSON linter shows it)") from err
        except ValueError as err:
            raise _fail(str(p), str(err), "use finite numbers (NaN and Infinity are not allowed)") from err
        return cls.from_json(data, source=str(p))

    @classmethod
    def from_json(cls, data: Any, source: str = "camera path") -> "CameraPath":
        """Build from parsed JSON: an object with `keyframes` (and options) or a bare list of keyframes."""
        if isinstance(data, list):
            data = {"keyframes": data}
        if not isinstance(data, dict):
            raise _fail(source, f"the top level is a {type(data).__name__}",
                        "write an object {\"keyframes\": [...]} or a list of keyframes")
        for key in data:
            if key not in TOP_KEYS:
                raise _unknown(key, TOP_KEYS, source)
        if "keyframes" not in data:
            raise _fail(source, "there is no \"keyframes\" list",
                        "add one, e.g. \"keyframes\": [{\"t\": 0, \"yaw\": 0}]")
        keyframes = data["keyframes"]
        if not isinstance(keyframes, list):
            raise _fail(source, "\"keyframes\" is not a list", "write \"keyframes\": [{...}, {...}]")
        if data.get("version", 1) != 1:
            raise _fail(source, f"version {data['version']!r} is not supported", "use version 1 (or leave it out)")
        return cls(keyframes, interpolation=data.get("interpolation", "catmull-rom"),
                   angles=data.get("angles", "continuous"), source=source)

    def _check_keyframe(self, kf: Any, index: int) -> dict:
        where = f"{self.source}, keyframe {index}"
        if not isinstance(kf, dict):
            raise _fail(where, f"a keyframe must be an object, got {json.dumps(kf)}",
                        "write e.g. {\"t\": 0.5, \"yaw\": 20}")
        for key in kf:
            if key not in KEYFRAME_KEYS:
                raise _unknown(key, KEYFRAME_KEYS, where)
        given = [k for k in TIME_KEYS if k in kf]
        if len(given) != 1:
            problem = "it has both \"time\" and \"t\"" if given else "it has no \"time\" (seconds) or \"t\" (0..1)"
            raise _fail(where, problem, "give exactly one of them")
        out: dict[str, Any] = {}
        for key, value in kf.items():
            if key in VECTOR_FIELDS:
                if not isinstance(value, list) or len(value) != 3:
                    raise _fail(where, f"{key} must be a list of 3 numbers, got {json.dumps(value)}",
                                f"write e.g. \"{key}\": [0, 0.02, 0] (metres)")
                out[key] = [_number(v, key, where) for v in value]
                continue
            x = _number(value, key, where)
            if key == "time" and x < 0:
                raise _fail(where, f"time {x:g} is negative", "use seconds from the start of the clip")
            if key == "t" and not 0.0 <= x <= 1.0:
                raise _fail(where, f"t {x:g} is outside 0..1", "use a fraction of the clip, or \"time\" in seconds")
            if key in ("distance", "distance_scale") and not x > 0:
                raise _fail(where, f"{key} {x:g} is not positive", "use e.g. 1.5 (x1.5 / metres)")
            if key == "fov" and not 0.0 < x < 180.0:
                raise _fail(where, f"fov {x:g} is outside (0, 180)", "give a vertical field of view in degrees")
            if key == "pitch" and not -90.0 <= x <= 90.0:
                raise _fail(where, f"pitch {x:g} is outside [-90, 90]", "use degrees; positive raises the camera")
            out[key] = x
        return out

    # ------------------------------------------------------------------ evaluation
    @property
    def fields(self) -> tuple[str, ...]:
        """The camera fields this path sets (the others are left to the caller's defaults)."""
        return tuple(self.tracks)

    @property
    def duration(self) -> Optional[float]:
        """Seconds of the last keyframe for a `time` path; None for a `t` path (it stretches to the clip)."""
        return float(self.keyframes[-1]["time"]) if self.time_key == "time" else None

    def at(self, seconds: float, clip_seconds: Optional[float] = None) -> dict:
        """The camera fields at `seconds` into a clip of `clip_seconds` (needed for `t` keyframes).

        Returns {field: value} for the fields the path sets: floats, and `target_offset` as a list of 3.
        """
        seconds = float(seconds)
        if not math.isfinite(seconds):
            raise InputError(f"camera path time {seconds} is not finite; pass seconds from the clip start")
        if self.time_key == "t":
            if clip_seconds is None or not float(clip_seconds) > 0:
                raise InputError(f"{self.source} uses clip fractions (\"t\"): pass the clip length in seconds "
                                 f"(got {clip_seconds})")
            x = seconds / float(clip_seconds)
        else:
            x = seconds
        out: dict[str, Any] = {}
        for key, track in self.tracks.items():
            values = np.log(track.values) if track.log else track.values
            v = _interpolate(track.times, values, x, self.interpolation)
            v = np.exp(v) if track.log else v
            out[key] = [float(c) for c in v] if key in VECTOR_FIELDS else float(v[0])
        return out


def _tangents(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    # times: [K], values: [K,D] -> [K,D] slopes
    """Catmull-Rom slopes for uneven keyframe spacing (the three-point derivative), one-sided at the ends,
    limited as Fritsch-Carlson do so a segment never leaves the range of its two keyframes."""
    k = len(times)
    h = np.diff(times)[:, None]  # [K-1,1]
    delta = np.diff(values, axis=0) / h  # [K-1,D] secant slopes
    m = np.empty_like(values)
    m[0], m[-1] = delta[0], delta[-1]
    if k > 2:
        h0, h1 = h[:-1], h[1:]
        m[1:-1] = (h1 * delta[:-1] + h0 * delta[1:]) / (h0 + h1)
        same_sign = delta[:-1] * delta[1:] > 0
        m[1:-1] = np.where(same_sign, m[1:-1], 0.0)  # a turning point: flat, no overshoot
    # |m| <= 3 * secant keeps each cubic monotone within its segment
    for i in range(k):
        for seg in (i - 1, i):
            if 0 <= seg < k - 1:
                cap = 3.0 * np.abs(delta[seg])
                m[i] = np.where(delta[seg] == 0, 0.0, np.clip(m[i], -cap, cap))
    return m


def _interpolate(times: np.ndarray, values: np.ndarray, x: float, mode: str) -> np.ndarray:
    # times: [K], values: [K,D] -> [D]
    if x <= times[0] or len(times) == 1:
        return values[0].copy()
    if x >= times[-1]:
        return values[-1].copy()
    i = int(np.searchsorted(times, x, side="right")) - 1
    h = times[i + 1] - times[i]
    s = (x - times[i]) / h
    p0, p1 = values[i], values[i + 1]
    if mode == "linear":
        return p0 + s * (p1 - p0)
    if mode == "smoothstep":
        return p0 + s * s * (3.0 - 2.0 * s) * (p1 - p0)
    m = _tangents(times, values)
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * h * m[i]
            + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * h * m[i + 1])
