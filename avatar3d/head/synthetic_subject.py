"""A synthetic talking subject with ground truth: the synthetic rig as a textured mesh, known parameters.

The Gaussian avatar is tested against it, so it is drawn with a *different representation* (a textured
triangle mesh through `avatar3d.render.mesh_raster`) than the one that learns it. Everything is made in
code from a seed:

* a procedural texture in the rig's UV atlas (skin with subtle variation, hair on the scalp, brows,
  lash lines, red lips, nostrils; sclera, coloured iris and black pupil on the eyeballs; teeth; a dark
  red mouth interior with a tongue), painted per texel from the texel's position on the neutral head
  (found by rasterizing the mesh in UV space);
* per-frame `RigParams`: speech-like jaw motion (syllables in phrases, with pauses), smiles, puckers,
  brow accents, blinks, gaze shifts, and the head turning +-20 degrees of yaw with a little pitch and roll
  on the NECK joint (the root stays still, as DESIGN.md says for head pose);
* the training camera (`camera_distance` metres in front of the head, `fov_y_deg` vertical field of
  view) and ground-truth novel views: camera yaw -30 and +30 degrees and camera distance x0.7 and
  x1.5, for a few frames;
* a synthetic voice whose loudness follows the jaw;
* optionally (`portrait=True`) shoulders in a shirt and a painted wall behind (head/synthetic_portrait.py).

The light is fixed to the head (it turns with the neck), so the shading is a property of the surface
that any avatar bound to the rig can learn; Lambert shading does not depend on the camera, so novel
views see the same colours as the training view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.camera import Camera, intrinsics, orbit_viewmat
from avatar3d.errors import InputError
from avatar3d.head import synthetic as syn
from avatar3d.head.synthetic_portrait import Body, composite, make_body
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import HeadRig, RigParams
from avatar3d.io.media import AUDIO_RATE
from avatar3d.render.mesh_raster import MeshRender, interpolate, rasterize_triangles, render_mesh
from avatar3d.rotation import axis_angle_to_matrix, euler_to_axis_angle

SUBJECT_VERSION = "synthetic-subject-1"
JAW_MAX = 0.22  # radians of jaw opening at the loudest syllable (~12.6 degrees)
HEAD_YAW_DEG = 20.0
HEAD_TARGET = (0.0, 0.012, 0.0)  # about the middle of the head (crown to chin): the head's cameras look here
NOVEL_VIEWS = {  # name -> (camera yaw degrees, distance factor)
    "yaw-30": (-30.0, 1.0),
    "yaw+30": (30.0, 1.0),
    "dist0.7": (0.0, 0.7),
    "dist1.5": (0.0, 1.5),
}
LIGHT_RIG = (0.35, 0.45, 1.0)  # towards the light, in head (rig) space: from the front, above, subject's left
AMBIENT, DIFFUSE = 0.5, 0.55
INSIDE_COLOUR = (0.16, 0.04, 0.05)  # the inside of the head, seen through gaps at the mouth corners


# ============================================================================ the texture
def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x, c, s):
    return np.exp(-0.5 * ((x - c) / s) ** 2)


def _noise3(p: np.ndarray, rng: np.random.Generator, wavelength: float, n: int = 16) -> np.ndarray:
    """Smooth band-limited noise at points p [N,3] (metres): a sum of random plane waves, ~unit variance."""
    k = rng.normal(size=(n, 3))
    k *= (2 * np.pi / wavelength) * rng.uniform(0.7, 1.3, size=(n, 1)) / np.linalg.norm(k, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    # float32 torch: millions of texels x n waves; numpy's float64 sin would take seconds
    arg = torch.from_numpy(p.astype(np.float32)) @ torch.from_numpy(k.T.astype(np.float32))
    waves = torch.sin(arg + torch.from_numpy(phase.astype(np.float32)))
    return waves.sum(dim=1).double().numpy() / np.sqrt(n / 2)


def _mix(base: np.ndarray, colour, weight: np.ndarray) -> np.ndarray:
    """base: [N,3], colour: [3] or [N,3], weight: [N] in [0,1]."""
    w = np.clip(weight, 0.0, 1.0)[:, None]
    return base * (1 - w) + np.asarray(colour, dtype=np.float64) * w


SKIN_TONES = ((0.86, 0.66, 0.55), (0.80, 0.58, 0.46), (0.68, 0.48, 0.36), (0.90, 0.72, 0.62))
HAIR_COLOURS = ((0.16, 0.10, 0.06), (0.08, 0.07, 0.06), (0.36, 0.20, 0.10), (0.55, 0.42, 0.24))
IRIS_COLOURS = ((0.25, 0.42, 0.62), (0.33, 0.42, 0.22), (0.36, 0.21, 0.10), (0.30, 0.36, 0.40))


def _paint_skin(p: np.ndarray, rng: np.random.Generator, mouth_y: float) -> np.ndarray:
    """Skin, hair, brows, lashes, lips and nostrils at neutral-head points p [N,3] -> albedo [N,3]."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    tone = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))])
    hair = np.array(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))])
    front = _smoothstep(0.02, 0.045, z)  # the face
    # subtle variation: blotches (3 cm), finer mottling (8 mm)
    shade = 1.0 + 0.025 * _noise3(p, rng, 0.04) + 0.008 * _noise3(p, rng, 0.01)
    c = tone[None] * shade[:, None]
    cheek = sum(_gauss(x, s * 0.045, 0.014) * _gauss(y, -0.008, 0.013) for s in (1, -1)) * front
    c = _mix(c, tone * np.array([1.02, 0.80, 0.78]), 0.35 * cheek)
    c = c * (1 - 0.07 * _smoothstep(-0.085, -0.12, y))[:, None]  # neck a little darker (shadowed)
    on_face = z > 0.02  # the features, only where they can be (a third of the texels)
    c[on_face] = _paint_features(c[on_face], p[on_face], rng, tone, hair, mouth_y)

    # hair: hairline from the forehead (front) down to the nape (back), ragged; strands run front to back
    rel = p - syn.CENTRE
    theta = np.degrees(np.arccos(np.clip(rel[:, 1] / np.linalg.norm(rel, axis=1), -1, 1)))
    phi = np.arctan2(rel[:, 0], rel[:, 2])
    line = 49.0 + 70.0 * (0.5 - 0.5 * np.cos(phi)) ** 1.2 + 4.0 * np.abs(np.sin(phi)) ** 8
    line = line + 1.2 * _noise3(p, rng, 0.035)
    scalp = _smoothstep(1.5, -1.5, theta - line)
    strand = 0.85 + 0.15 * np.sin(phi * 140 + 3.0 * _noise3(p, rng, 0.02)) * (0.6 + 0.4 * _noise3(p, rng, 0.05))
    sheen = 1.0 + 0.12 * _gauss(theta, 35.0, 12.0)
    return _mix(c, hair[None] * (strand * sheen)[:, None], scalp)


def _paint_features(c: np.ndarray, p: np.ndarray, rng: np.random.Generator, tone: np.ndarray, hair: np.ndarray,
                    mouth_y: float) -> np.ndarray:
    """Lips, nostrils, eyelids and lash lines, brows on skin colours c [N,3] at front-of-head points p [N,3]."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = _smoothstep(0.02, 0.045, z)

    # lips: upper lip with a cupid's bow, fuller lower lip, soft edges
    xl = np.clip(np.abs(x) / 0.0245, 0.0, 1.0)
    top = mouth_y + 0.0085 * (1 - xl ** 2) - 0.0016 * _gauss(x, 0.0, 0.0035)
    bottom = mouth_y - 0.0105 * (1 - xl ** 2) ** 0.8
    inside = _smoothstep(-0.0008, 0.0008, top - y) * _smoothstep(-0.0008, 0.0008, y - bottom)
    lips = inside * _smoothstep(0.0255, 0.0225, np.abs(x)) * front
    lip_colour = np.array([0.74, 0.30, 0.32]) * (1.0 + 0.04 * _noise3(p, rng, 0.004))[:, None]
    c = _mix(c, lip_colour, lips)
    c = c * (1 - 0.35 * _gauss(y, mouth_y, 0.0009) * _smoothstep(0.026, 0.02, np.abs(x)) * front)[:, None]

    # nostrils under the nose tip
    for s in (1, -1):
        nostril = np.exp(-0.5 * (((x - s * 0.006) / 0.002) ** 2 + ((y + 0.0165) / 0.0012) ** 2)) * front
        c = _mix(c, tone * 0.45, 0.55 * nostril)

    # eyes: eyelid tint, lash line on the upper margin, a closure line that shows when the lids close
    for s in (1, -1):
        dx, dy, rho, e = syn._eye_coords(x, y, s)
        near = front * (e < 1.3)
        lid = (1 - _smoothstep(0.8, 1.15, e)) * near
        c = _mix(c, tone * np.array([0.93, 0.82, 0.80]), 0.5 * lid)
        upper = _gauss(rho, 1.05, 0.09) * (dy > -0.2 * syn.OPEN_AY) * _smoothstep(1.25, 0.9, np.abs(dx) / syn.OPEN_AX)
        lower = 0.45 * _gauss(rho, 1.05, 0.06) * (dy <= 0)
        closure = _gauss(dy, -0.0006, 0.0005) * (rho < 1.0)
        c = _mix(c, np.array([0.09, 0.06, 0.05]), np.maximum.reduce([upper, lower, 0.9 * closure]) * near)

    # brows: tapered arcs above the eyes, with hair streaks
    streaks = 0.75 + 0.25 * np.sin(2 * np.pi * (x * 900 + 150 * y)) * _noise3(p, rng, 0.01)
    for s in (1, -1):
        u = (x - s * 0.032) * s / 0.021  # -1 inner end .. +1 outer end
        centre_y = syn.BROW_Y + 0.004 - 0.005 * u ** 2 - 0.0012 * u
        half = 0.0022 - 0.0010 * np.clip(u, -1, 1)
        brow = (_smoothstep(1.15, 0.85, np.abs(u)) * _smoothstep(half + 0.0008, half - 0.0005, np.abs(y - centre_y))
                * front)
        c = _mix(c, hair * 1.1, brow * np.clip(streaks, 0, 1))
    return c


def _paint_eyeball(r: np.ndarray, az: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """r: [N] angle from the front pole (degrees), az: [N] azimuth (radians) -> albedo [N,3]."""
    iris_colour = np.array(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))])
    iris_r, pupil_r = 27.0, 10.5
    c = np.array([0.93, 0.91, 0.88])[None] * np.ones((len(r), 1))
    c = _mix(c, np.array([0.88, 0.74, 0.72]), 0.6 * _smoothstep(55.0, 110.0, r))  # pinker towards the back
    k = rng.integers(16, 24)
    streak = 0.8 + 0.2 * np.sin(k * az + 2.0 * np.sin(3 * az)) * np.sin(0.3 * r + 5 * az)
    iris = iris_colour[None] * (streak * (1.15 - 0.5 * _smoothstep(pupil_r, iris_r, r)))[:, None]
    iris = _mix(iris, iris_colour * 1.6, 0.5 * _gauss(r, pupil_r + 3.0, 1.5))  # a bright collarette
    c = _mix(c, iris, _smoothstep(iris_r + 0.8, iris_r - 0.8, r))
    c = _mix(c, np.array([0.10, 0.10, 0.12]), 0.8 * _gauss(r, iris_r - 0.5, 1.0))  # limbal ring
    return _mix(c, np.array([0.02, 0.02, 0.025]), _smoothstep(pupil_r + 0.7, pupil_r - 0.7, r))


def _paint_mouth(p: np.ndarray, r: np.ndarray, part: str, mouth_y: float) -> np.ndarray:
    """Teeth (with gaps and gums) and the mouth interior (dark red, a tongue at the bottom) -> [N,3]."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if part.startswith("teeth"):
        c = np.array([0.93, 0.91, 0.84])[None] * np.ones((len(x), 1))
        width = 0.0052 * (1 + 0.6 * _smoothstep(0.008, 0.016, np.abs(x)))
        gap = _gauss(np.abs(np.mod(x / width + 0.5, 1.0) - 0.5), 0.0, 0.06)  # between neighbouring teeth
        c = _mix(c, np.array([0.55, 0.50, 0.44]), 0.8 * gap)
        c = c * (1 - 0.35 * _smoothstep(0.006, 0.016, np.abs(x)))[:, None]  # back teeth in the shade
        return _mix(c, np.array([0.72, 0.38, 0.40]), _smoothstep(0.75, 0.95, r))  # gums at the rim
    c = np.array([0.40, 0.10, 0.11])[None] * np.ones((len(x), 1))
    tongue = _smoothstep(mouth_y - 0.002, mouth_y - 0.008, y)
    c = _mix(c, np.array([0.66, 0.30, 0.32]), 0.8 * tongue)
    return c * (0.45 + 0.55 * _smoothstep(-0.025, 0.0, z - p[:, 2].max()))[:, None]  # darker deep inside


def _uv_fragments(rig: HeadRig, size: int):
    """Rasterize the mesh in UV space: for every texel, its triangle and barycentrics."""
    uvs = rig.uvs.to(torch.float64)
    flat = torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size, torch.ones_like(uvs[:, 0])], dim=1)
    eye = torch.eye(4, dtype=torch.float64)
    return rasterize_triangles(flat, rig.face_uvs, eye[:3, :3], eye, size, size, backfaces="draw")


def make_texture(rig: HeadRig, size: int = 2048, seed: int = 0) -> Tensor:
    """The procedural albedo texture [size,size,3] (float32 in [0,1]) of the synthetic rig's UV atlas."""
    if rig.uvs is None or rig.face_uvs is None or "uv_atlas" not in rig.meta:
        raise InputError(f"the rig {rig.name!r} has no UV atlas; the synthetic subject needs the built-in "
                         f"synthetic rig (avatar3d.head.synthetic.synthetic_rig())")
    if int(size) < 64:
        raise InputError(f"texture size {size} is too small; pass at least 64 (2048 is the default)")
    frags = _uv_fragments(rig, int(size))
    hit = frags.mask.reshape(-1).numpy()
    pos = interpolate(rig.template.to(torch.float64), rig.faces, frags).reshape(-1, 3).numpy()[hit]
    texel = np.nonzero(hit)[0]
    u = (texel % size + 0.5) / size
    v = 1.0 - (texel // size + 0.5) / size
    mouth_y = float(rig.meta.get("mouth_y", syn.MOUTH_Y_NOMINAL))
    albedo = np.full((len(texel), 3), 0.5)
    # seeds per part so the parts do not change when another part's painting changes
    part_rngs = {name: np.random.default_rng([seed, k]) for k, name in enumerate(rig.meta["uv_atlas"])}
    for name, (u0, v0, u1, v1) in rig.meta["uv_atlas"].items():
        inside = (u >= u0) & (u < u1) & (v >= v0) & (v < v1)
        if not inside.any() or name == "helper":
            continue
        pu = (u[inside] - 0.5 * (u0 + u1)) / (0.5 * (u1 - u0) * 0.98)  # the part's azimuthal coordinates
        pv = (v[inside] - 0.5 * (v0 + v1)) / (0.5 * (v1 - v0) * 0.98)
        r = np.hypot(pu, pv)
        if name == "skin":
            albedo[inside] = _paint_skin(pos[inside], part_rngs[name], mouth_y)
        elif name.startswith("eyeball"):
            eye_rng = np.random.default_rng([seed, 99])  # the same for both eyes
            albedo[inside] = _paint_eyeball(r * 165.0, np.arctan2(pv, pu), eye_rng)
        else:
            albedo[inside] = _paint_mouth(pos[inside], r, name, mouth_y)
    tex = torch.full((size * size, 3), 0.5, dtype=torch.float32)
    tex[torch.from_numpy(texel)] = torch.from_numpy(np.clip(albedo, 0.0, 1.0)).float()
    return _dilate(tex.reshape(size, size, 3), torch.from_numpy(hit).reshape(size, size))


def _dilate(tex: Tensor, covered: Tensor, steps: int = 4) -> Tensor:
    """tex: [S,S,3], covered: [S,S] bool -> texels next to the charts take their neighbours' mean colour,
    so bilinear lookups at chart borders do not blend in the filler."""
    img = (tex * covered[..., None]).permute(2, 0, 1)[None]
    w = covered[None, None].float()
    for _ in range(steps):
        s = F.avg_pool2d(img, 3, 1, 1)
        n = F.avg_pool2d(w, 3, 1, 1)
        grow = (w == 0) & (n > 0)
        img = torch.where(grow, s / n.clamp_min(1e-12), img)
        w = torch.where(grow, torch.ones_like(w), w)
    fill = (w[0, 0] > 0)[..., None]
    return torch.where(fill, img[0].permute(1, 2, 0), tex)


# ============================================================================ the animation
@dataclass
class _Events:
    """Speech and eye events on a time line (seconds), evaluated at any times (frames or audio samples)."""

    syllables: np.ndarray  # [S,4] start, duration, amplitude, pucker
    blinks: np.ndarray  # [B] start times
    fixations: np.ndarray  # [G,3] start time, yaw deg, pitch deg

    def jaw_and_pucker(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        jaw = np.zeros_like(t)
        pucker = np.zeros_like(t)
        for start, dur, amp, puck in self.syllables:
            s = (t - start) / dur
            bump = np.where((s > 0) & (s < 1), np.sin(np.pi * np.clip(s, 0, 1)) ** 2, 0.0)
            jaw = np.maximum(jaw, amp * bump)
            pucker = np.maximum(pucker, puck * bump)
        return jaw, pucker

    def blink(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros_like(t)
        for start in self.blinks:  # fast close (80 ms), short hold, slower opening (150 ms)
            s = t - start
            closing = _smoothstep(0.0, 0.08, s)
            opening = 1 - _smoothstep(0.11, 0.26, s)
            out = np.maximum(out, np.where(s < 0.11, closing, opening) * (s > 0))
        return out

    def gaze(self, t: np.ndarray) -> np.ndarray:
        """[T,2] (yaw, pitch) degrees: fixations joined by 50 ms saccades."""
        out = np.zeros((len(t), 2))
        for start, yaw, pitch in self.fixations:
            w = _smoothstep(start, start + 0.05, t)[:, None]
            out = out * (1 - w) + np.array([yaw, pitch]) * w
        return out


def _events(seconds: float, rng: np.random.Generator) -> _Events:
    syl = []
    t = rng.uniform(0.1, 0.4)
    while t < seconds:
        end = t + rng.uniform(1.2, 2.8)  # a phrase
        while t < min(end, seconds):
            dur = rng.uniform(0.16, 0.32)
            syl.append((t, dur, rng.uniform(0.35, 1.0), rng.uniform(0.3, 0.7) if rng.random() < 0.25 else 0.0))
            t += dur * rng.uniform(0.85, 1.0)
        t += rng.uniform(0.25, 0.7)  # a pause
    blinks = []
    t = rng.uniform(0.4, 1.5)
    while t < seconds:
        blinks.append(t)
        t += rng.uniform(1.8, 4.0)
    fix = [(0.0, 0.0, 0.0)]
    t = rng.uniform(0.5, 1.2)
    while t < seconds:
        side = -1.0 if fix[-1][1] > 0 else 1.0  # look across: every shift is a visible saccade
        fix.append((t, side * rng.uniform(4.0, 14.0), rng.uniform(-7.0, 7.0)))
        t += rng.uniform(0.7, 2.0)
    return _Events(np.array(syl, dtype=np.float64).reshape(-1, 4), np.array(blinks), np.array(fix))


def _slow(t: np.ndarray, rng: np.random.Generator, period: float) -> np.ndarray:
    """A smooth random curve in about [-1, 1] varying over `period` seconds."""
    out = np.zeros_like(t)
    for k in range(3):
        out += np.sin(2 * np.pi * t / (period * rng.uniform(0.6, 1.6)) + rng.uniform(0, 2 * np.pi)) / (k + 1)
    return out / 1.83


def make_params(rig: HeadRig, seconds: float, fps: float, seed: int) -> tuple[RigParams, _Events]:
    """Known per-frame parameters of a talking, blinking, looking-around, head-turning subject."""
    rng = np.random.default_rng([seed, 1])
    n = max(1, int(round(seconds * fps)))
    t = np.arange(n) / fps
    ev = _events(n / fps, rng)
    params = RigParams.zeros(rig, n, device="cpu")
    params.shape[:] = torch.from_numpy(rng.uniform(-0.5, 0.5, rig.num_shape)).float()
    jaw, pucker = ev.jaw_and_pucker(t)
    params.jaw[:, 0] = torch.from_numpy(JAW_MAX * jaw).float()
    names = {name: i for i, name in enumerate(rig.expr_names)}

    def set_expr(name, values):
        if name in names:
            params.expr[:, names[name]] = torch.from_numpy(np.clip(values, 0.0, 1.0)).float()

    smile = 0.25 + 0.25 * _slow(t, rng, 3.0)
    set_expr("mouthSmile_L", smile + 0.08 * _slow(t, rng, 2.0))
    set_expr("mouthSmile_R", smile + 0.08 * _slow(t, rng, 2.0))
    set_expr("mouthPucker", pucker)
    accent = np.convolve(np.pad(jaw, 2, mode="edge"), np.ones(5) / 5, mode="valid")  # jaw, smoothed
    set_expr("browInnerUp", 0.2 + 0.25 * _slow(t, rng, 2.5) + 0.3 * accent)
    set_expr("browDown", 0.25 * _slow(t, rng, 3.5))
    blink = ev.blink(t)
    set_expr("eyeBlink_L", blink)
    set_expr("eyeBlink_R", blink)
    gaze = torch.from_numpy(ev.gaze(t)).float()  # yaw, pitch degrees
    eyes = euler_to_axis_angle(gaze[:, 0], gaze[:, 1], torch.zeros(n))  # [T,3]
    params.eyes[:] = eyes[:, None]
    period = float(np.clip(n / fps, 2.0, 5.0))  # one full left-right turn within the clip (up to 5 s)
    phase = rng.uniform(0, 2 * np.pi)
    yaw = HEAD_YAW_DEG * np.sin(2 * np.pi * t / period + phase)
    pitch = 5.0 * np.sin(2 * np.pi * t / (1.7 * period) + rng.uniform(0, 2 * np.pi))
    roll = 2.0 * np.sin(2 * np.pi * t / (2.3 * period) + rng.uniform(0, 2 * np.pi))
    params.neck[:] = euler_to_axis_angle(*(torch.from_numpy(a).float() for a in (yaw, pitch, roll)))
    return params, ev


def synth_voice(ev: _Events, seconds: float, seed: int, rate: int = AUDIO_RATE) -> np.ndarray:
    """A voiced buzz (harmonics of a gliding pitch, a little breath noise) whose loudness follows the jaw."""
    rng = np.random.default_rng([seed, 2])
    t = np.arange(int(round(seconds * rate))) / rate
    env, _ = ev.jaw_and_pucker(t)
    f0 = rng.uniform(105, 190) * (1 + 0.08 * np.sin(2 * np.pi * 0.6 * t) + 0.04 * np.sin(2 * np.pi * 2.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    buzz = sum(np.sin(k * phase) * (0.8 ** k) for k in range(1, 12))
    noise = rng.normal(size=len(t)) * 0.08
    return (0.3 * env ** 0.8 * (buzz / 2.5 + noise)).astype(np.float32)


# ============================================================================ the subject
@dataclass
class SyntheticSubject:
    """The ground-truth subject: rig, texture, known parameters, cameras, light, audio."""

    rig: HeadRig
    params: RigParams  # batch = frames
    fps: float
    resolution: int
    camera: Camera  # the training camera
    target: tuple[float, float, float]  # the point the cameras look at (novel views orbit it)
    distance: float  # training camera distance to `target`, metres
    fov_y_deg: float
    texture: Tensor  # [Ht,Wt,3] albedo
    background: tuple[float, float, float]
    seed: int
    audio: np.ndarray  # [T] float32 mono at AUDIO_RATE
    novel_frames: list[int] = field(default_factory=list)
    supersample: int = 2
    light_rig: tuple[float, float, float] = LIGHT_RIG
    body: Optional[Body] = None  # a portrait's shoulders and room (head/synthetic_portrait.py), else a head alone

    @property
    def num_frames(self) -> int:
        return self.params.batch_size

    def novel_cameras(self) -> dict[str, Camera]:
        """The ground-truth novel-view cameras (same intrinsics as the training camera)."""
        out = {}
        for name, (yaw, factor) in NOVEL_VIEWS.items():
            view = orbit_viewmat(self.distance * factor, yaw, 0.0, self.target)
            out[name] = Camera(self.camera.K.clone(), view, self.resolution, self.resolution)
        return out

    def frame_params(self, frame: int) -> RigParams:
        if not 0 <= int(frame) < self.num_frames:
            raise InputError(f"frame {frame} is outside 0..{self.num_frames - 1}; pass a frame index of the clip")
        return self.params.slice(slice(int(frame), int(frame) + 1))

    def render_params(self, params: RigParams, camera: Optional[Camera] = None,
                      supersample: Optional[int] = None) -> MeshRender:
        """Render one set of parameters (batch 1). With supersample s > 1 the image is drawn at s x the size
        and box-filtered (anti-aliased); `face_id`/`depth` then come from the centre sample of each block. A
        portrait's alpha is the whole person's coverage."""
        return self.render_layers(params, camera, supersample)[0]

    def render_layers(self, params: RigParams, camera: Optional[Camera] = None,
                      supersample: Optional[int] = None) -> tuple[MeshRender, Tensor]:
        """`render_params`, and the coverage [H,W,1] of the head where it is in view (all of alpha for a head)."""
        camera = camera or self.camera
        s = int(self.supersample if supersample is None else supersample)
        if s < 1:
            raise InputError(f"supersample={s}; pass 1 (none) or more samples per pixel side")
        with torch.no_grad():
            out, head_alpha = self._draw(params, camera, s)
        if s == 1:
            return out, head_alpha
        H, W = camera.height, camera.width

        def pool(x):  # [H*s,W*s,C] -> [H,W,C]
            return x.reshape(H, s, W, s, -1).mean(dim=(1, 3))

        mid = s // 2
        return MeshRender(image=pool(out.image), alpha=pool(out.alpha),
                          face_id=out.face_id[mid::s, mid::s].contiguous(),
                          depth=out.depth[mid::s, mid::s].contiguous()), pool(head_alpha)

    def _draw(self, params: RigParams, camera: Camera, s: int) -> tuple[MeshRender, Tensor]:
        """The picture at s x the camera's size: the head (over the background, or for a portrait by depth with the
        torso over the wall), and the visible head's coverage."""
        rig = self.rig if self.body is None else self.body.rig
        verts = pose_vertices(rig, params)[0]
        head_rot = axis_angle_to_matrix(params.global_rot[0]) @ axis_angle_to_matrix(params.neck[0])
        K = camera.K.clone()
        K[:2] *= s
        size = (camera.width * s, camera.height * s)
        head = render_mesh(verts[:self.rig.num_vertices], self.rig.faces, K, camera.viewmat, *size, uvs=self.rig.uvs,
                           face_uvs=self.rig.face_uvs, texture=self.texture, background=self.background,
                           light_dir=head_rot @ torch.tensor(self.light_rig, dtype=head_rot.dtype), ambient=AMBIENT,
                           diffuse=DIFFUSE, face_mask=self.rig.renderable_faces(), backfaces="holes",
                           backface_color=INSIDE_COLOUR)
        if self.body is None:
            return head, head.alpha
        body_rot = axis_angle_to_matrix(params.global_rot[0])
        torso = render_mesh(verts, self.body.torso_faces, K, camera.viewmat, *size, vertex_colors=self.body.colours,
                            light_dir=body_rot @ torch.tensor(self.light_rig, dtype=body_rot.dtype), ambient=AMBIENT,
                            diffuse=DIFFUSE)
        image, person, head_alpha = composite(head, torso, self.body.wall.draw(camera, s))
        face_id = torch.where(head_alpha[..., 0] > 0, head.face_id, torso.face_id)
        depth = torch.minimum(torch.where(head_alpha[..., 0] > 0, head.depth, torch.full_like(head.depth, math.inf)),
                              torso.depth)
        return MeshRender(image=image, alpha=person, face_id=face_id, depth=depth), head_alpha

    def render(self, frame: int, camera: Optional[Camera] = None) -> tuple[Tensor, Tensor]:
        """Frame `frame` from `camera` (the training camera by default) -> (image [H,W,3], alpha [H,W,1])."""
        out = self.render_params(self.frame_params(frame), camera)
        return out.image, out.alpha

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The training video: (uint8 [R,R,3] image, float32 [R,R] mask in [0,1]) per frame."""
        for i in range(self.num_frames):
            image, alpha = self.render(i)
            yield _to_uint8(image), alpha[..., 0].numpy().astype(np.float32)

    def novel_views(self) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
        """Ground-truth novel views: (view name, frame, uint8 [R,R,3], float32 [R,R] mask) for every view and
        every frame in `novel_frames`."""
        cams = self.novel_cameras()
        for name, cam in cams.items():
            for i in self.novel_frames:
                image, alpha = self.render(i, cam)
                yield name, i, _to_uint8(image), alpha[..., 0].numpy().astype(np.float32)


def _to_uint8(image: Tensor) -> np.ndarray:  # image: [H,W,3] in [0,1]
    return (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def make_subject(seconds: float = 4.0, fps: float = 25.0, resolution: int = 512, seed: int = 0, *,
                 background: float | Sequence[float] = (1.0, 1.0, 1.0), camera_distance: float = 0.65,
                 fov_y_deg: float = 22.0, novel_frame_count: int = 4, supersample: int = 2,
                 texture_size: int = 2048, rig: Optional[HeadRig] = None, portrait: bool = False,
                 target: Sequence[float] = HEAD_TARGET) -> SyntheticSubject:
    """The synthetic subject: `seconds` of talking at `fps`, rendered at `resolution`^2, all from `seed`.

    background: solid RGB in [0,1] (a head's; a portrait stands in its room); camera_distance: metres from
    `target`, the point the cameras look at and orbit; fov_y_deg: vertical field of view; novel_frame_count: frames
    (evenly spread) that get ground-truth novel views; supersample: samples per pixel side (anti-aliasing); rig: the
    synthetic rig (built when not given); portrait: with shoulders in a shirt and a wall behind
    (head/synthetic_portrait.py).
    """
    if not seconds > 0 or not fps > 0:
        raise InputError(f"seconds={seconds}, fps={fps}: both must be positive (e.g. 4 s at 25 fps)")
    if int(resolution) < 16:
        raise InputError(f"resolution {resolution} is too small; pass at least 16 pixels (512 is the default)")
    bg_arr = np.atleast_1d(np.asarray(background, dtype=np.float64))
    bg = tuple(float(c) for c in (bg_arr if bg_arr.size == 3 else np.repeat(bg_arr[:1], 3)))
    if bg_arr.size not in (1, 3) or any(not 0.0 <= c <= 1.0 for c in bg):
        raise InputError(f"background {background!r} must be RGB in [0,1], e.g. (1, 1, 1) for white")
    if not camera_distance > 0:
        raise InputError(f"camera_distance {camera_distance} must be positive metres (0.65 is the default)")
    rig = rig if rig is not None else syn.synthetic_rig()
    params, ev = make_params(rig, seconds, fps, seed)
    n = params.batch_size
    target = tuple(float(v) for v in target)
    R = int(resolution)
    camera = Camera(intrinsics(fov_y_deg, R, R), orbit_viewmat(camera_distance, 0.0, 0.0, target), R, R)
    count = max(1, min(int(novel_frame_count), n))
    novel = sorted(set(np.linspace(0, n - 1, count + 2)[1:-1].round().astype(int).tolist())) if n > 2 \
        else list(range(count))
    return SyntheticSubject(
        rig=rig, params=params, fps=float(fps), resolution=R, camera=camera, target=target,
        distance=float(camera_distance), fov_y_deg=float(fov_y_deg), texture=make_texture(rig, texture_size, seed),
        background=bg, seed=int(seed), audio=synth_voice(ev, n / fps, seed), novel_frames=novel,
        supersample=int(supersample), body=make_body(rig, camera, seed) if portrait else None,
    )


# ============================================================================ files
def _png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _camera_json(cam: Camera) -> dict:
    return {"K": cam.K.tolist(), "viewmat": cam.viewmat.tolist(), "width": cam.width, "height": cam.height}


def write_subject(out_dir: str | Path, subject: SyntheticSubject,
                  progress: Optional[Callable[[str], None]] = None) -> Path:
    """Write the subject into `out_dir` (replaced atomically: a failed run leaves an older one intact):

        train.mp4          the training video (H.264, near-lossless) with the synthetic voice (AAC)
        masks.npz          alpha [N,R,R] uint8 of the training frames
        params.npz         the known parameters (RigParams fields), K, viewmat, fps, background, seed
        cameras.json       training and novel-view cameras, the novel frames and their files
        novel/VIEW_fNNNN.png, novel/VIEW_fNNNN_mask.png   the ground-truth novel views
    """
    from avatar3d.io.atomic import atomic_dir, atomic_write_json
    from avatar3d.io.media import Mp4Writer

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, kind="synthetic subject") as tmp:
        masks = []
        say(f"rendering {subject.num_frames} training frames at {subject.resolution}x{subject.resolution}")
        with Mp4Writer(tmp / "train.mp4", fps=subject.fps, audio=subject.audio, audio_rate=AUDIO_RATE, crf=12,
                       metadata={"comment": f"made by avatar3d ({SUBJECT_VERSION}, seed {subject.seed})"}) as w:
            for i, (image, mask) in enumerate(subject.frames()):
                w.write(image)
                masks.append((mask * 255.0 + 0.5).astype(np.uint8))
                if (i + 1) % 25 == 0:
                    say(f"  {i + 1}/{subject.num_frames} frames")
        np.savez_compressed(tmp / "masks.npz", alpha=np.stack(masks))
        p = subject.params
        np.savez(tmp / "params.npz", shape=p.shape.numpy(), expr=p.expr.numpy(), global_rot=p.global_rot.numpy(),
                 neck=p.neck.numpy(), jaw=p.jaw.numpy(), eyes=p.eyes.numpy(), transl=p.transl.numpy(),
                 expr_names=np.array(subject.rig.expr_names), fps=np.float64(subject.fps),
                 K=subject.camera.K.numpy(), viewmat=subject.camera.viewmat.numpy(),
                 background=np.array(subject.background), seed=np.int64(subject.seed),
                 resolution=np.int64(subject.resolution), rig=np.array(subject.rig.name),
                 version=np.array(SUBJECT_VERSION))
        (tmp / "novel").mkdir()
        views: dict[str, dict] = {}
        cams = subject.novel_cameras()
        say(f"rendering {len(cams)} novel views x {len(subject.novel_frames)} frames")
        for name, frame, image, mask in subject.novel_views():
            stem = f"{name}_f{frame:04d}"
            (tmp / "novel" / f"{stem}.png").write_bytes(_png_bytes(image))
            (tmp / "novel" / f"{stem}_mask.png").write_bytes(_png_bytes((mask * 255.0 + 0.5).astype(np.uint8)))
            entry = views.setdefault(name, {**_camera_json(cams[name]), "yaw_deg": NOVEL_VIEWS[name][0],
                                            "distance_factor": NOVEL_VIEWS[name][1], "frames": [], "images": [],
                                            "masks": []})
            entry["frames"].append(frame)
            entry["images"].append(f"novel/{stem}.png")
            entry["masks"].append(f"novel/{stem}_mask.png")
        atomic_write_json(tmp / "cameras.json", {
            "version": SUBJECT_VERSION, "frames": subject.num_frames, "fps": subject.fps,
            "resolution": subject.resolution, "background": list(subject.background), "seed": subject.seed,
            "target": list(subject.target), "fov_y_deg": subject.fov_y_deg, "train": _camera_json(subject.camera),
            "novel": views,
        })
    say(f"wrote {out}")
    return out


def read_params(path: str | Path) -> tuple[RigParams, dict]:
    """Load `params.npz` written by `write_subject` -> (RigParams, the rest: K, viewmat, fps, background, ...)."""
    path = Path(path)
    if path.is_dir():
        path = path / "params.npz"
    if not path.is_file():
        raise InputError(f"{path} does not exist; write a subject first with write_subject(out_dir, make_subject())")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fields = ("shape", "expr", "global_rot", "neck", "jaw", "eyes", "transl")
    params = RigParams(**{k: torch.from_numpy(np.asarray(arrays.pop(k), dtype=np.float32)) for k in fields})
    extra = {k: (v.item() if v.ndim == 0 else v) for k, v in arrays.items()}
    extra["expr_names"] = [str(s) for s in arrays["expr_names"]]
    return params, extra


def preview_sheet(subject: SyntheticSubject, count: int = 4) -> np.ndarray:
    """uint8 sheet: top row `count` training frames, bottom row the novel views of the first novel frame."""
    idx = np.linspace(0, subject.num_frames - 1, count).round().astype(int)
    top = [_to_uint8(subject.render(int(i))[0]) for i in idx]
    frame = subject.novel_frames[0] if subject.novel_frames else 0
    bottom = [_to_uint8(subject.render(frame, cam)[0]) for cam in subject.novel_cameras().values()]
    while len(bottom) < len(top):
        bottom.append(np.zeros_like(top[0]))
    while len(top) < len(bottom):
        top.append(np.zeros_like(bottom[0]))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


__all__ = ["SyntheticSubject", "make_subject", "make_texture", "make_params", "write_subject", "read_params",
           "preview_sheet", "synth_voice", "NOVEL_VIEWS", "SUBJECT_VERSION"]
