"""The tracking overlay: the fitted mesh wireframe, detected and fitted landmarks, projected pupils.

Drawing is vectorised numpy (edges are sampled at sub-pixel steps and splatted), so a 500-frame
overlay costs seconds, not minutes.
"""
from __future__ import annotations

import numpy as np

WIRE = np.array([80, 200, 255], np.float32)  # mesh wireframe
DETECTED = np.array([40, 255, 40], np.uint8)  # MediaPipe landmarks
FITTED = np.array([255, 40, 40], np.uint8)  # the rig's projected landmarks
PUPIL = np.array([255, 0, 255], np.uint8)  # projected iris centres


def unique_edges(faces: np.ndarray) -> np.ndarray:  # faces: [F,3] -> [E,2] int64, each undirected edge once
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges.sort(axis=1)
    return np.unique(edges, axis=0)


def front_facing(cam_vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] bool: triangles facing the camera. cam_vertices: [V,3] camera space (OpenCV), faces: [F,3]."""
    v0, v1, v2 = (cam_vertices[faces[:, i]] for i in range(3))
    normal = np.cross(v1 - v0, v2 - v0)
    return (normal * v0).sum(-1) < 0  # the normal points back towards the camera centre


def draw_wireframe(image: np.ndarray,  # [H,W,3] uint8, drawn in place
                   pixels: np.ndarray,  # [V,2] projected vertices, pixels (centres at +0.5)
                   edges: np.ndarray,  # [E,2] vertex indices
                   opacity: float = 0.35) -> None:
    h, w = image.shape[:2]
    a, b = pixels[edges[:, 0]], pixels[edges[:, 1]]
    # enough samples for the typical edge (a few long edges may show gaps; cheap beats perfect here)
    length = np.abs(b - a).max(axis=1) if len(a) else np.zeros(1)
    steps = int(np.clip(np.ceil(np.percentile(length, 95)), 1, 12))
    t = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)[None, :, None]
    pts = (a[:, None] + (b - a)[:, None] * t).reshape(-1, 2)
    x, y = np.floor(pts[:, 0]).astype(np.int64), np.floor(pts[:, 1]).astype(np.int64)
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = y[keep] * w + x[keep]  # duplicates are harmless: each gets the same blended value
    view = image.reshape(-1, 3)
    view[flat] = ((1 - opacity) * view[flat] + opacity * WIRE).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, colour: np.ndarray, radius: int = 1) -> None:
    """Square dots of side 2*radius at points [N,2] (pixels), in place."""
    h, w = image.shape[:2]
    offsets = np.arange(-radius, radius)
    dx, dy = np.meshgrid(offsets, offsets)
    x = (np.floor(points[:, 0])[:, None] + dx.ravel()[None]).astype(np.int64).ravel()
    y = (np.floor(points[:, 1])[:, None] + dy.ravel()[None]).astype(np.int64).ravel()
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    image[y[keep], x[keep]] = colour


def draw_cross(image: np.ndarray, point: np.ndarray, colour: np.ndarray, size: int = 5) -> None:
    h, w = image.shape[:2]
    cx, cy = int(np.floor(point[0])), int(np.floor(point[1]))
    for d in range(-size, size + 1):
        for x, y in ((cx + d, cy), (cx, cy + d)):
            if 0 <= x < w and 0 <= y < h:
                image[y, x] = colour


def overlay_frame(frame: np.ndarray,  # [H,W,3] uint8 crop frame
                  cam_vertices: np.ndarray,  # [V,3] posed mesh in camera space
                  K: np.ndarray,  # [3,3]
                  faces: np.ndarray,  # [F,3] triangles to draw (e.g. the face region)
                  detected: np.ndarray,  # [478,2] detector landmarks, pixels
                  fitted: np.ndarray,  # [478,2] fitted landmarks, pixels
                  pupils: np.ndarray,  # [2,2] projected iris centres, pixels
                  ) -> np.ndarray:
    image = frame.copy()
    z = np.maximum(cam_vertices[:, 2:3], 1e-6)
    pixels = (cam_vertices[:, :2] / z) * K[[0, 1], [0, 1]] + K[:2, 2]
    visible = faces[front_facing(cam_vertices, faces)]
    if len(visible):
        draw_wireframe(image, pixels.astype(np.float32), unique_edges(visible))
    draw_points(image, detected, DETECTED)
    draw_points(image, fitted, FITTED)
    for p in pupils:
        draw_cross(image, p, PUPIL)
    return image
