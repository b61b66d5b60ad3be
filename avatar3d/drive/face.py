"""Face, head and gaze controls applied to one frame of driven parameters.

Everything is relative to the person's resting face (`PersonStats`: means over the enrolled tracking), so
`expressiveness=0` gives this person's own neutral look, not the rig's template, and an absolute head pose
of (0, 0, 0) faces the enrolled camera the way the person usually held their head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.drive.controls import Controls, check_expression_name
from avatar3d.drive.emotion import blended_offsets, speech_fade
from avatar3d.head.rig import BLINK_NAMES, RigParams
from avatar3d.rotation import axis_angle_to_matrix, euler_to_axis_angle, euler_to_matrix, matrix_to_axis_angle


@dataclass
class PersonStats:
    """The person's resting face: means of the enrolled tracking."""

    expr: np.ndarray  # [E]
    jaw: np.ndarray  # [3]
    neck: np.ndarray  # [3]
    eyes: np.ndarray  # [2,3]
    global_rot: np.ndarray  # [3]
    transl: np.ndarray  # [3]
    blink_index: list  # expression channels that close the eyelids
    reach: Optional[np.ndarray] = None  # [E] how far above the mean each channel went (98th percentile)
    jaw_reach: float = 0.0  # radians: how far the jaw opened beyond its mean (98th percentile)
    speech_mask: Optional[np.ndarray] = None  # [E] bool: the channels speech shapes (drive/dub.py), when known

    @classmethod
    def from_arrays(cls, expr, jaw, neck, eyes, global_rot, transl, expr_names) -> "PersonStats":
        # expr: [T,E]; jaw, neck, global_rot, transl: [T,3]; eyes: [T,2,3]
        mean = lambda a: np.asarray(a, np.float64).mean(0).astype(np.float32)  # noqa: E731
        above = lambda a: np.maximum(np.percentile(np.asarray(a, np.float64), 98, axis=0) - a.mean(0), 0.0)  # noqa: E731
        blink = [i for i, n in enumerate(expr_names) if n in BLINK_NAMES]
        expr, jaw = np.asarray(expr), np.asarray(jaw)
        return cls(mean(expr), mean(jaw), mean(neck), mean(eyes), mean(global_rot), mean(transl), blink,
                   reach=above(expr).astype(np.float32), jaw_reach=float(above(jaw[:, 0])))


def _compose(left: Tensor, right: Tensor) -> Tensor:  # left, right: [...,3] axis-angle -> R(left) R(right)
    return matrix_to_axis_angle(axis_angle_to_matrix(left) @ axis_angle_to_matrix(right))


def _emotion(controls: Controls, stats: PersonStats, expr_names: list, seconds: float):
    """(expression offsets [E], jaw degrees) of the emotion asked for at `seconds`, or None."""
    if controls.emotion_path is not None:
        parts = controls.emotion_path.at(seconds)
    elif controls.emotion is not None:
        parts = [(controls.emotion, 1.0)]
    else:
        return None
    reach = stats.reach if stats.reach is not None else np.zeros(len(expr_names), np.float32)
    return blended_offsets(parts, expr_names, reach)


def _add_emotion(expr: Tensor, jaw: Tensor, stats: PersonStats, emotion) -> tuple[Tensor, Tensor]:
    # expr: [1,E]; jaw: [1,3]
    """The emotion's offsets, its mouth part fading as speech opens the jaw (speech keeps the mouth)."""
    offsets, jaw_deg = emotion
    fade = speech_fade(float(jaw[0, 0]) - float(stats.jaw[0]), stats.jaw_reach)
    offsets = offsets.copy()
    if stats.speech_mask is not None:
        offsets[stats.speech_mask] *= fade
    expr = expr + torch.as_tensor(offsets, dtype=expr.dtype, device=expr.device)[None]
    if jaw_deg:
        opening = torch.tensor([[np.deg2rad(jaw_deg * fade), 0.0, 0.0]], dtype=jaw.dtype, device=jaw.device)
        jaw = _compose(opening, jaw)
    return expr, jaw


def apply_face_controls(frame: RigParams, stats: PersonStats, controls: Controls, expr_names: list,
                        seconds: float = 0.0) -> RigParams:
    # frame: RigParams with batch 1
    """Expression, emotion (at `seconds` into the clip), jaw, blink and head-pose controls (gaze toward the camera
    needs geometry: `look_at_eyes`)."""
    dtype, device = frame.expr.dtype, frame.expr.device
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    expr, jaw, neck, eyes = frame.expr.clone(), frame.jaw.clone(), frame.neck.clone(), frame.eyes.clone()
    k = float(controls.expressiveness)
    if k != 1.0:
        expr = as_t(stats.expr)[None] + k * (expr - as_t(stats.expr)[None])
        jaw = as_t(stats.jaw)[None] + k * (jaw - as_t(stats.jaw)[None])
    if controls.blink == "off" and stats.blink_index:
        idx = torch.as_tensor(stats.blink_index, device=device)
        expr[:, idx] = torch.minimum(expr[:, idx], as_t(stats.expr)[idx][None])
    for name, value in controls.expression.items():
        expr[:, check_expression_name(name, expr_names)] += float(value)
    emotion = _emotion(controls, stats, expr_names, seconds)
    if emotion is not None:
        expr, jaw = _add_emotion(expr, jaw, stats, emotion)
    if controls.jaw_open:
        jaw = _compose(as_t([np.deg2rad(controls.jaw_open), 0.0, 0.0])[None], jaw)
    if controls.still_head:
        neck = as_t(stats.neck)[None].clone()
    if controls.head_pose is not None:
        pose = euler_to_axis_angle(*(torch.tensor(float(v), dtype=dtype) for v in controls.head_pose)).to(device)
        neck = _compose(pose[None], as_t(stats.neck)[None])
    if any(float(v) != 0.0 for v in controls.head_offset):
        offset = euler_to_axis_angle(*(torch.tensor(float(v), dtype=dtype) for v in controls.head_offset)).to(device)
        neck = _compose(offset[None], neck)
    if isinstance(controls.gaze, (tuple, list)):
        yaw, pitch = (float(v) for v in controls.gaze)
        eyes = euler_to_axis_angle(torch.tensor(yaw, dtype=dtype), torch.tensor(pitch, dtype=dtype),
                                   torch.tensor(0.0, dtype=dtype)).to(device).expand(1, 2, 3).clone()
    return RigParams(frame.shape, expr, frame.global_rot, neck, jaw, eyes, frame.transl)


def look_at_eyes(eye_centres: Tensor, parent_rot: Tensor, target: Tensor) -> Tensor:
    # eye_centres: [2,3] world; parent_rot: [3,3] world rotation of the eyes' parent (root·neck); target: [3]
    """[2,3] axis-angle eye rotations (relative to the parent) that point each eye's +z at `target`, no roll."""
    d = target[None] - eye_centres  # [2,3]
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    local = d @ parent_rot  # parentᵀ d, row-wise
    yaw = torch.rad2deg(torch.atan2(local[:, 0], local[:, 2]))
    pitch = torch.rad2deg(torch.asin((-local[:, 1]).clamp(-1, 1)))
    return matrix_to_axis_angle(euler_to_matrix(yaw, pitch, torch.zeros_like(yaw)))


def parent_rotation(frame: RigParams) -> Tensor:  # frame: batch 1 -> [3,3]
    """World rotation of the frame the eyes hang from: root then neck (FLAME's kinematic tree)."""
    return (axis_angle_to_matrix(frame.global_rot[0]) @ axis_angle_to_matrix(frame.neck[0]))


def eye_centres(vertices: Tensor, eyeball_left: Optional[Tensor], eyeball_right: Optional[Tensor],
                fallback: Tensor) -> Tensor:
    # vertices: [V,3] posed; eyeball_*: [K] vertex indices or None; fallback: [2,3] (e.g. iris landmarks)
    """[2,3] world centres of the left and right eyeballs."""
    if eyeball_left is None or eyeball_right is None or not len(eyeball_left) or not len(eyeball_right):
        return fallback
    return torch.stack([vertices[eyeball_left].mean(0), vertices[eyeball_right].mean(0)])
