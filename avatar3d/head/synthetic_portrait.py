"""The synthetic subject as a portrait: shoulders in a shirt and the room behind them, every pixel known.

The portrait path (the torso proxy fitted to the person masks, the background plate estimated from the frames,
training on the whole picture) needs a subject with ground truth, as the head did. This module adds the parts the
head lacks, drawn with the mesh renderer (never with Gaussians):

* **the torso**: a surface of the proxy family (head/torso.py) with known proportions (`SUBJECT_TORSO`), swept finer
  than an avatar's so that the shirt's stripes are sharp, and painted per vertex: a shirt of one of a few colours
  with vertical stripes, a darker collar band at the neck and seams over the shoulders. It is lit by a light fixed
  to the body (the head's light turns with the neck), so its shading is a property of the surface. The avatar never
  sees these proportions: it fits its own torso from the masks.
* **the room**: a wall facing the training camera, `WALL_BEHIND` metres beyond the head (where the avatar's plate
  will put its picture), painted as a function of the point on the wall: a soft gradient, a framed picture beside the
  head and a door at the side. Each pixel's ray is intersected with the wall, so a moved camera sees it in true
  perspective, including the parts the training camera never saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d.camera import Camera, camera_centre
from avatar3d.head.rig import HeadRig
from avatar3d.head.torso import TorsoShape, attach_torso, neck_base
from avatar3d.render.mesh_raster import MeshRender

SUBJECT_TORSO = TorsoShape(shoulder_width=0.38, shoulder_drop=0.06, chest_depth=0.21, length=0.42, rounding=0.05)
FINE_SWEEP = {"segments": 160, "rings_slope": 24, "rings_fall": 30}  # the subject's torso mesh (an avatar's: 40/8/6)
WALL_BEHIND = 1.0  # metres from the head's root to the wall, along the training camera's axis (the plate's default)
SHIRT_COLOURS = ((0.20, 0.32, 0.52), (0.45, 0.47, 0.50), (0.24, 0.40, 0.30), (0.62, 0.60, 0.56))
STRIPE_PERIOD = 0.035  # metres between the shirt's stripes
LIGHT_BODY = (0.35, 0.45, 1.0)  # towards the light in body space (the head's light, before the neck turns it)


# ============================================================================ the torso
def portrait_rig(rig: HeadRig, shape: TorsoShape = SUBJECT_TORSO) -> HeadRig:
    """The subject's rig with its finely swept torso (region "torso") appended."""
    return attach_torso(rig, shape, neck_base(rig), **FINE_SWEEP)


def shirt_colours(rig: HeadRig, seed: int) -> Tensor:  # -> [V,3] albedo; only the torso's vertices are painted
    """The shirt, painted per vertex from the rest position: stripes across x, a collar band below the neck ring,
    a seam along each shoulder's top."""
    rng = np.random.default_rng([seed, 7])
    base = np.asarray(SHIRT_COLOURS[int(rng.integers(len(SHIRT_COLOURS)))])
    torso = rig.region("torso").cpu().numpy()
    p = rig.template.detach().double().cpu().numpy()[torso]
    top = p[:, 1].max()
    stripes = 0.5 + 0.5 * np.cos(2 * np.pi * (p[:, 0] / STRIPE_PERIOD + rng.uniform()))
    colour = base[None] * (0.82 + 0.18 * stripes[:, None] ** 4)
    collar = np.clip(1.0 - (top - p[:, 1]) / 0.015, 0.0, 1.0)  # the 1.5 cm band just below the neck ring
    colour = colour * (1.0 - 0.35 * collar[:, None])
    seam = np.exp(-0.5 * ((p[:, 2] - np.median(p[:, 2])) / 0.004) ** 2) * (p[:, 1] > top - 0.08)
    colour = colour * (1.0 - 0.25 * seam[:, None])
    out = torch.zeros(rig.num_vertices, 3, dtype=torch.float32)
    out[torch.from_numpy(torso)] = torch.from_numpy(np.clip(colour, 0.0, 1.0)).float()
    return out


# ============================================================================ the room
@dataclass
class Wall:
    """A painted wall facing the training camera: the plane z = depth in that camera's frame."""

    viewmat: Tensor  # [4,4] the training camera, world -> camera
    depth: float  # metres along its axis
    seed: int
    _last: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)  # draw's one-camera cache

    def paint(self, a: Tensor, b: Tensor) -> Tensor:  # a, b: [...] metres right / down of the axis -> [...,3]
        """The wall's colour at (a, b): a soft gradient, a framed picture above-left of the head, a door at the right."""
        rng = np.random.default_rng([self.seed, 11])
        tint = torch.tensor(rng.uniform(0.92, 1.0, 3), dtype=a.dtype)
        wall = torch.tensor((0.80, 0.76, 0.70), dtype=a.dtype) * tint
        colour = wall * (0.92 + 0.06 * torch.tanh(a / 0.5) - 0.05 * torch.tanh(b / 0.5))[..., None]
        frame = _box(a, b, -0.36, -0.30, -0.15, -0.10)
        picture = _box(a, b, -0.34, -0.28, -0.17, -0.12)
        sky = torch.stack([0.25 + 0.5 * (b + 0.28) / 0.16, 0.35 + 0.25 * torch.cos(a * 40.0),
                           0.60 - 0.2 * (b + 0.28) / 0.16], -1).clamp(0, 1)
        colour = torch.where(frame[..., None], torch.tensor((0.30, 0.20, 0.12), dtype=a.dtype), colour)
        colour = torch.where(picture[..., None], sky, colour)
        grain = 0.55 + 0.03 * torch.sin(a * 230.0 + 3.0 * torch.sin(b * 9.0))
        door = torch.stack([grain, 0.72 * grain, 0.45 * grain], -1)
        colour = torch.where((a > 0.24)[..., None], door, colour)
        return torch.where(((a > 0.24) & (a < 0.27))[..., None], 0.6 * door, colour)

    def draw(self, camera: Camera, supersample: int = 1) -> Tensor:  # -> [H*s,W*s,3]
        """The wall as `camera` sees it, each pixel's ray met with the plane (a still camera's picture is drawn once:
        every training frame sees the same wall)."""
        key = (camera.K.numpy().tobytes(), camera.viewmat.numpy().tobytes(), camera.width, camera.height, supersample)
        if self._last is None or self._last[0] != key:
            local = self.points(camera, supersample)
            self._last = (key, self.paint(local[..., 0], local[..., 1]).float())
        return self._last[1]

    def seen(self, camera: Camera, train: Camera, shown: Optional[Tensor] = None) -> Tensor:  # -> [H,W] bool
        """Where `camera` sees a part of the wall that `train`'s picture showed: inside that picture and, with
        `shown` [train.height, train.width] bool (its pixels where some frame showed the wall, no one in front),
        there. The rest no video of the room showed."""
        local = self.points(camera)
        pixel = local @ train.K.double().T  # the training camera's pixels (homogeneous: local is in its frame)
        x, y = pixel[..., 0] / pixel[..., 2], pixel[..., 1] / pixel[..., 2]
        inside = (x >= 0) & (x < train.width) & (y >= 0) & (y < train.height)
        if shown is None:
            return inside
        col = x.floor().long().clamp(0, train.width - 1)
        row = y.floor().long().clamp(0, train.height - 1)
        return inside & shown.to(inside.device)[row, col]

    def points(self, camera: Camera, supersample: int = 1) -> Tensor:  # -> [H*s,W*s,3] float64
        """Where each pixel's ray meets the wall, in the training camera's frame (x right, y down, z = depth)."""
        s = int(supersample)
        H, W = camera.height * s, camera.width * s
        K = camera.K.double().clone()
        K[:2] *= s
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                                indexing="ij")
        view = camera.viewmat.double()
        rays = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(K).T @ view[:3, :3]  # world
        origin = camera_centre(view)
        train = self.viewmat.double()
        normal, point = train[2, :3], camera_centre(train) + self.depth * train[2, :3]
        t = ((point - origin) @ normal) / (rays @ normal).clamp_min(1e-9)  # every camera in use faces the wall
        return (origin + t[..., None] * rays - camera_centre(train)) @ train[:3, :3].T


def _box(a: Tensor, b: Tensor, a0: float, b0: float, a1: float, b1: float) -> Tensor:
    return (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)


# ============================================================================ the whole body
@dataclass
class Body:
    """What a portrait subject adds to the head: its rig with the torso, the torso's triangles and paint, the wall."""

    rig: HeadRig  # the head rig with the finely swept torso appended
    torso_faces: Tensor  # [Ft,3] into rig's vertices
    colours: Tensor  # [V,3] the shirt's albedo per vertex (zero on the head's)
    wall: Wall


def make_body(rig: HeadRig, camera: Camera, seed: int) -> Body:
    """The subject's shoulders and room, for the head `rig` filmed by `camera` (the head's root at the origin)."""
    body = portrait_rig(rig)
    depth = float(camera.viewmat[2, 3]) + WALL_BEHIND  # the root's depth in the camera, then beyond it
    return Body(body, body.faces[rig.num_faces:], shirt_colours(body, seed), Wall(camera.viewmat.clone(), depth, seed))


# ============================================================================ the picture
def composite(head: MeshRender, torso: MeshRender, wall: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # head, torso: renders of the same camera at the same size; wall: [H,W,3] -> image [H,W,3], person, head [H,W,1]
    """Head and torso by depth over the wall: (image, the whole person's coverage, the visible head's coverage)."""
    head_front = head.alpha[..., 0] > 0.5
    head_front &= ~((torso.alpha[..., 0] > 0.5) & (torso.depth < head.depth))
    torso_seen = (torso.alpha[..., 0] > 0.5) & ~head_front
    image = torch.where(head_front[..., None], head.image, torch.where(torso_seen[..., None], torso.image, wall))
    return image, (head_front | torso_seen)[..., None].float(), head_front[..., None].float()


__all__ = ["SUBJECT_TORSO", "WALL_BEHIND", "Body", "Wall", "make_body", "portrait_rig", "shirt_colours", "composite"]
