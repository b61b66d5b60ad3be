"""`Controls`: what a user changes on top of the driven motion — camera, head pose, gaze, expression.

Angles are degrees with the signs of DESIGN.md: a positive yaw turns the face (or moves the camera) towards
the subject's left, a positive head pitch makes the face look down, a positive camera pitch puts the camera
above the head. The parse_* helpers turn the CLI's strings into these fields with errors that say how to
write them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from avatar3d.errors import InputError

Gaze = Union[None, str, tuple]


@dataclass
class Controls:
    """User controls applied per frame by `Avatar.render_frame` (every field has a neutral default)."""

    distance: Optional[float] = None
    """Camera distance from the head centre, metres (None: the enrolled distance times `distance_scale`)."""
    distance_scale: float = 1.0
    """Camera distance relative to the enrolled one (used when `distance` is None)."""
    yaw: float = 0.0
    """Camera yaw around the head, degrees (positive: the camera moves towards the subject's left)."""
    pitch: float = 0.0
    """Camera pitch around the head, degrees (positive: the camera rises and looks down at the face)."""
    orbit: float = 0.0
    """Extra camera yaw swept over the clip (progress 0 → 1), degrees: a turntable."""
    fov: Optional[float] = None
    """Vertical field of view, degrees (None: the enrolled camera's)."""
    camera_path: Optional[object] = None
    """A keyframed camera (`avatar3d.drive.camera_path.CameraPath`); its fields override the ones above."""
    head_pose: Optional[tuple] = None
    """Absolute head pose (yaw, pitch, roll) in degrees relative to the person's mean pose; None: as driven."""
    head_offset: tuple = (0.0, 0.0, 0.0)
    """(yaw, pitch, roll) degrees added to the driven head motion."""
    still_head: bool = False
    """Hold the head at the person's mean pose (driven head motion off)."""
    gaze: Gaze = None
    """None: as driven; "camera": the eyes look at the camera (also while it moves); (yaw, pitch) degrees
    relative to the head."""
    expression: dict = field(default_factory=dict)
    """Expression edits {name: value} added to the driven coefficients (names: `Avatar.expr_names`)."""
    expressiveness: float = 1.0
    """Scale of the driven expression and jaw around the person's mean face (0: the resting face)."""
    jaw_open: float = 0.0
    """Degrees added to the jaw opening."""
    blink: str = "auto"
    """"auto": blinks as driven; "off": the eyelids stay at the person's resting openness."""
    emotion: Optional[object] = None
    """An `avatar3d.drive.emotion.Emotion` over the driven face (None: as driven); speech keeps the mouth."""
    emotion_path: Optional[object] = None
    """Emotions keyframed over the clip (`avatar3d.drive.emotion.EmotionPath`); it replaces `emotion`."""

    def __post_init__(self) -> None:
        for name in ("distance_scale", "yaw", "pitch", "orbit", "expressiveness", "jaw_open"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"control {name}={value!r} is not a finite number")
        if self.distance is not None and not self.distance > 0:
            raise InputError(f"camera distance {self.distance} must be positive metres (e.g. 0.6, or x1.5 relative)")
        if not self.distance_scale > 0:
            raise InputError(f"distance scale {self.distance_scale} must be positive (e.g. x1.5)")
        if self.fov is not None and not 1.0 <= self.fov <= 150.0:
            raise InputError(f"field of view {self.fov} is outside 1..150 degrees")
        if self.blink not in ("auto", "off"):
            raise InputError(f"blink={self.blink!r}: use 'auto' or 'off'")
        if self.emotion is not None and not hasattr(self.emotion, "offsets"):
            raise InputError(f"emotion={self.emotion!r}: pass an avatar3d.drive.emotion.Emotion, e.g. "
                             f"Emotion('happy', 0.8) (or parse_emotion('happy:0.8'))")
        if self.emotion_path is not None and not hasattr(self.emotion_path, "at"):
            raise InputError(f"emotion_path={self.emotion_path!r}: pass an EmotionPath (EmotionPath.load(FILE))")
        if isinstance(self.gaze, str) and self.gaze != "camera":
            raise InputError(f"gaze={self.gaze!r}: use 'camera' or (yaw, pitch) in degrees")

    def with_(self, **changes) -> "Controls":
        """A copy with some fields changed."""
        return replace(self, **changes)


# ------------------------------------------------------------------------------------------ CLI parsing
def _numbers(text: str, count: int, what: str, example: str) -> tuple:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{what} {text!r} is not {count} comma-separated numbers; write it like {example}")
    return values


def parse_distance(text: Optional[str]) -> tuple[Optional[float], float]:
    """`0.8` (metres) or `x1.5` (relative) -> (distance or None, scale)."""
    if text is None or str(text).strip() == "":
        return None, 1.0
    s = str(text).strip().lower()
    try:
        if s.startswith("x") or s.endswith("x"):
            scale = float(s.strip("x"))
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError
            return None, scale
        metres = float(s)
        if not (math.isfinite(metres) and metres > 0):
            raise ValueError
        return metres, 1.0
    except ValueError:
        raise InputError(f"--distance {text!r} is neither metres (e.g. 0.8) nor a positive factor (e.g. x1.5)") from None


def parse_head_pose(text: Optional[str]) -> tuple[Optional[tuple], tuple]:
    """`yaw,pitch,roll` (absolute) or `+yaw,pitch,roll` (offset) -> (absolute or None, offset)."""
    if text is None or str(text).strip() == "":
        return None, (0.0, 0.0, 0.0)
    s = str(text).strip()
    if s.startswith("+"):
        return None, _numbers(s[1:], 3, "--head-pose", "20,-5,0 (absolute) or +20,-5,0 (offset)")
    return _numbers(s, 3, "--head-pose", "20,-5,0 (absolute) or +20,-5,0 (offset)"), (0.0, 0.0, 0.0)


def parse_gaze(text: Optional[str]) -> Gaze:
    """`camera` or `yaw,pitch` -> Controls.gaze."""
    if text is None or str(text).strip() == "":
        return None
    if str(text).strip().lower() == "camera":
        return "camera"
    return _numbers(text, 2, "--gaze", "camera, or 15,-5 (yaw,pitch degrees)")


def parse_expression_edits(items, names: list[str]) -> dict:
    """["mouthSmile_L=0.5", ...] -> {name: value}, names checked against the rig's expression names."""
    edits = {}
    for item in items or []:
        if "=" not in str(item):
            raise InputError(f"--expression {item!r} must be NAME=VALUE, e.g. mouthSmile_L=0.6")
        name, value = (p.strip() for p in str(item).split("=", 1))
        check_expression_name(name, names)
        try:
            edits[name] = float(value)
        except ValueError:
            raise InputError(f"--expression {item!r}: {value!r} is not a number (e.g. {name}=0.6)") from None
    return edits


def check_expression_name(name: str, names: list[str]) -> int:
    """Index of `name` in the rig's expression names, or an error listing similar names."""
    if name in names:
        return names.index(name)
    import difflib

    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known names: {', '.join(names[:12])}..."
    if not names:
        hint = "; this head model has no named expressions"
    raise InputError(f"unknown expression {name!r}{hint} (every name: `avatar3d models list --expressions MODEL`)")
