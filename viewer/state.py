"""The control state of one browser tab, and its mapping to the drive layer's `Controls`.

Kept free of viser so it can be tested without a server: the panel writes into a `ViewState`, the
render loop reads a `Controls` out of it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

GAZE_DRIVEN = "as driven"
GAZE_CAMERA = "look at the camera"
GAZE_SLIDERS = "set by the sliders"
GAZE_MODES = (GAZE_DRIVEN, GAZE_CAMERA, GAZE_SLIDERS)


@dataclass
class ViewState:
    """Everything the user set in one tab. Angles in degrees (DESIGN.md signs), distances in metres."""

    yaw: float = 0.0  # camera around the head centre (from the mouse orbit)
    pitch: float = 0.0
    distance: Optional[float] = None  # metres from the head centre; None: the enrolled distance
    fov: Optional[float] = None  # vertical degrees; None: the enrolled camera's
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    head_roll: float = 0.0
    still_head: bool = False  # True: no driven head motion, the sliders give the absolute pose
    gaze_mode: str = GAZE_DRIVEN
    gaze_yaw: float = 0.0
    gaze_pitch: float = 0.0
    jaw_open: float = 0.0  # degrees added to the jaw opening
    expression: dict = field(default_factory=dict)  # name -> coefficient added to the driven one
    expressiveness: float = 1.0
    emotion: str = "neutral"  # a name of avatar3d.drive.emotion.EMOTIONS
    emotion_intensity: float = 1.0  # 0..2, 1 the prototype
    blink: str = "auto"  # "auto" | "off"
    background: tuple = (1.0, 1.0, 1.0)  # RGB in [0,1]
    room: bool = False  # the avatar's background plate behind it instead of the colour (when it has one)

    def copy(self) -> "ViewState":
        return dataclasses.replace(self, expression=dict(self.expression))


def to_controls(state: ViewState):
    """The `avatar3d.drive.Controls` that render what `state` describes."""
    from avatar3d.drive.controls import Controls
    from avatar3d.drive.emotion import Emotion

    head = (float(state.head_yaw), float(state.head_pitch), float(state.head_roll))
    if state.gaze_mode == GAZE_CAMERA:
        gaze = "camera"
    elif state.gaze_mode == GAZE_SLIDERS:
        gaze = (float(state.gaze_yaw), float(state.gaze_pitch))
    else:
        gaze = None
    return Controls(
        distance=None if state.distance is None else float(state.distance),
        yaw=float(state.yaw), pitch=float(state.pitch),
        fov=None if state.fov is None else float(state.fov),
        head_pose=head if state.still_head else None,
        head_offset=(0.0, 0.0, 0.0) if state.still_head else head,
        still_head=bool(state.still_head),
        gaze=gaze,
        expression={k: float(v) for k, v in state.expression.items() if v != 0.0},
        expressiveness=float(state.expressiveness),
        jaw_open=float(state.jaw_open),
        blink="off" if state.blink == "off" else "auto",
        emotion=None if state.emotion == "neutral" else Emotion(state.emotion, float(state.emotion_intensity)),
    )


def controls_summary(state: ViewState) -> dict:
    """A JSON-ready record of the controls (saved next to a recording so the view can be reproduced)."""
    out = dataclasses.asdict(state)
    out["background"] = [float(c) for c in state.background]
    return out
