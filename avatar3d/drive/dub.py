"""Dubbing: one driver's motion with another's speech.

A video (another person's, or the enrollment itself) gives the head pose, gaze, blinks and brows; new speech gives
the mouth and jaw, and the sound. The clip lasts as long as the speech; the video's motion plays forward and
backward (a ping-pong loop, so it never jumps) when the speech is longer, and is cut when it is shorter.

Which expression channels belong to speech is read off the rig, not its names (FLAME's components have none): a
channel is the mouth's when it moves the lips more than the eyelids and brows.
"""
from __future__ import annotations

import numpy as np
import torch

from avatar3d.drive.params import DriveParams
from avatar3d.errors import InputError


def speech_channels(rig) -> np.ndarray:  # -> [E] bool
    """The expression channels speech drives: those whose shapes move the lips more than the eyelids and brows
    (summed vertex displacement). A rig without a lip region leaves every channel to speech."""
    names = getattr(rig, "regions", {})
    if "lips" not in names:
        return np.ones(rig.num_expr, dtype=bool)
    moved = torch.linalg.vector_norm(rig.expr_basis.detach().float().cpu(), dim=1)  # [V,E]
    lips = moved[rig.region("lips").cpu()].sum(0)
    upper = torch.zeros_like(lips)
    for region in ("eyelids", "brows"):
        if region in names:
            upper += moved[rig.region(region).cpu()].sum(0)
    return (lips > upper).numpy()


def ping_pong(num_frames: int, source_frames: int, fps: float, source_fps: float) -> np.ndarray:  # -> [T] int
    """For each of `num_frames` frames at `fps`, the frame of a `source_frames`-long sequence at `source_fps` that
    plays at that moment, the sequence running forward, then backward, and so on."""
    if source_frames < 1:
        raise InputError("the motion driver has no frames; pass a video in which a face is tracked")
    if source_frames == 1:
        return np.zeros(num_frames, dtype=np.int64)
    position = np.rint(np.arange(num_frames) / fps * source_fps).astype(np.int64)
    period = 2 * (source_frames - 1)
    phase = position % period
    return np.where(phase < source_frames, phase, period - phase)


def dub(motion: DriveParams, speech: DriveParams, speech_mask: np.ndarray) -> DriveParams:
    """`speech`'s mouth (the expression channels of `speech_mask` [E], the jaw) and sound, in `motion`'s head
    pose, gaze and the rest of its face; at `speech`'s frame rate and length."""
    if motion.expr.shape[1] != speech.expr.shape[1] or speech_mask.shape != (speech.expr.shape[1],):
        raise InputError(f"the motion has {motion.expr.shape[1]} expression channels and the speech "
                         f"{speech.expr.shape[1]}: both must drive the same avatar")
    frames = ping_pong(len(speech), len(motion), speech.fps, motion.fps)
    expr = motion.expr[frames].copy()
    expr[:, speech_mask] = speech.expr[:, speech_mask]
    return DriveParams(speech.shape, expr, motion.global_rot[frames], motion.neck[frames], speech.jaw.copy(),
                       motion.eyes[frames], motion.transl[frames], fps=speech.fps, audio=speech.audio, source="dub")
