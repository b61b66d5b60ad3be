"""Pose an avatar3d rig bundle with plain numpy: the reference for engines (no torch, no avatar3d needed).

This file is copied into every bundle as `pose_numpy.py`; README.md in the bundle gives the same maths.

    import pose_numpy
    bundle = pose_numpy.load("my_bundle")
    g = pose_numpy.pose_frame(bundle, 42)   # dict: means [N,3], quats [N,4] (w,x,y,z), scales [N,3],
                                            #       opacities [N], sh [N,K,3], vertices [V,3]
"""
from __future__ import annotations

import json
import os

import numpy as np

POSE_KEYS = ("expr", "global_rot", "neck", "jaw", "eyes", "transl")


def load(folder: str | os.PathLike) -> dict:
    """Every array of the bundle in one dict (rig.npz, gaussians.npz, frames.npz) plus bundle.json as 'info'."""
    out: dict = {}
    for name in ("rig.npz", "gaussians.npz", "frames.npz"):
        with np.load(os.path.join(folder, name), allow_pickle=False) as data:
            out.update({k: data[k] for k in data.files})
    with open(os.path.join(folder, "bundle.json"), encoding="utf-8") as fh:
        out["info"] = json.load(fh)
    return out


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """aa: [...,3] axis * angle (radians) -> [...,3,3]: R = I + sin(t)/t K + (1 - cos t)/t^2 K^2, K = [aa]x."""
    aa = np.asarray(aa, dtype=np.float64)
    t2 = (aa * aa).sum(-1)
    small = t2 < 1e-8
    t = np.sqrt(np.where(small, 1.0, t2))
    a = np.where(small, 1.0 - t2 / 6.0, np.sin(t) / t)
    b = np.where(small, 0.5 - t2 / 24.0, (1.0 - np.cos(t)) / np.where(small, 1.0, t2))
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    o = np.zeros_like(x)
    K = np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(aa.shape[:-1] + (3, 3))
    return np.eye(3) + a[..., None, None] * K + b[..., None, None] * (K @ K)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """R: [...,3,3] rotation -> [...,4] unit quaternion (w,x,y,z), w >= 0."""
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    d = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    a, b = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0]
    c = R[..., 1, 0] - R[..., 0, 1]
    p, q, r = R[..., 1, 0] + R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 2, 1] + R[..., 1, 2]
    cand = np.stack([np.stack([d[..., 0], a, b, c], -1), np.stack([a, d[..., 1], p, q], -1),
                     np.stack([b, p, d[..., 2], r], -1), np.stack([c, q, r, d[..., 3]], -1)], -2)
    best = d.argmax(-1)
    quat = np.take_along_axis(cand, best[..., None, None], -2)[..., 0, :]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    return np.where(quat[..., :1] < 0, -quat, quat)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of [...,4] (w,x,y,z) quaternions: rotate by b, then by a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def pose_mesh(bundle: dict, expr, global_rot, neck, jaw, eyes, transl) -> np.ndarray:
    """Posed vertices [V,3] of one frame (FLAME's linear blend skinning; README.md, steps 1-6).

    expr [E], global_rot/neck/jaw [3], eyes [2,3] (left, right), transl [3]: axis-angle radians, metres.
    """
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    v_shaped = f64(bundle["identity_vertices"]) + np.einsum("vce,e->vc", f64(bundle["expr_basis"]), f64(expr))
    joints = f64(bundle["joint_regressor"]) @ v_shaped  # [5,3]
    pose = np.concatenate([f64(global_rot)[None], f64(neck)[None], f64(jaw)[None], f64(eyes)], 0)  # [5,3]
    rots = rodrigues(pose)  # [5,3,3]
    features = (rots[1:] - np.eye(3)).reshape(-1)  # [36]
    v_posed = v_shaped + np.einsum("vck,k->vc", f64(bundle["pose_correctives"]), features)
    parents = [int(p) for p in bundle["joint_parents"]]
    world = []
    for j in range(len(parents)):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0.0)
        world.append(local if parents[j] < 0 else world[parents[j]] @ local)
    skin = np.stack(world)  # [5,4,4]
    skin[:, :3, 3] -= np.einsum("jrc,jc->jr", skin[:, :3, :3], joints)
    T = np.einsum("vj,jrc->vrc", f64(bundle["lbs_weights"]), skin[:, :3, :])  # [V,3,4]
    return np.einsum("vrc,vc->vr", T[..., :3], v_posed) + T[..., 3] + f64(transl)


def triangle_frames(vertices: np.ndarray, faces: np.ndarray, eps: float = 1e-12):
    """origin [F,3] (centroid), rotation [F,3,3] (columns x, y, z), scale [F] (mean edge length); README step 7."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    x = e1 / np.maximum(np.linalg.norm(e1, axis=-1, keepdims=True), eps)
    n = np.cross(e1, e2)
    z = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), eps)
    y = np.cross(z, x)
    scale = (np.linalg.norm(e1, axis=-1) + np.linalg.norm(e2, axis=-1) + np.linalg.norm(v2 - v1, axis=-1)) / 3.0
    return (v0 + v1 + v2) / 3.0, np.stack([x, y, z], -1), scale


def face_offsets(bundle: dict, expr, jaw, eyes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """README step 8: the offsets of local means [N,3], DC colours [N,3] and opacity logits [N] for this face."""
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    x = np.concatenate([f64(expr).ravel(), f64(jaw).ravel(), f64(eyes).ravel()])
    code = f64(bundle["code_components"]) @ (x - f64(bundle["code_mean"])) / f64(bundle["code_spread"])
    code = np.clip(code, -float(bundle["code_limit"]), float(bundle["code_limit"]))
    return (np.einsum("c,ncd->nd", code, f64(bundle["expr_means"])),
            np.einsum("c,ncd->nd", code, f64(bundle["expr_colours"])), f64(bundle["expr_opacity"]) @ code)


def pose_gaussians(bundle: dict, vertices: np.ndarray, face: dict | None = None) -> dict:
    """World-space Gaussians on a posed mesh (README steps 7-9); `face`: the frame's expr, jaw and eyes (None: the
    stored Gaussians without expression offsets)."""
    origin, rotation, scale = triangle_frames(vertices, np.asarray(bundle["faces"], dtype=np.int64))
    parent = np.asarray(bundle["parent"], dtype=np.int64)
    R, k = rotation[parent], scale[parent][:, None]
    local_means = np.asarray(bundle["local_means"], dtype=np.float64)
    logits = np.asarray(bundle["opacity_logits"], dtype=np.float64)
    sh = np.array(bundle["sh"], dtype=np.float64)
    if face is not None and "code_components" in bundle and len(bundle["code_components"]):
        d_means, d_colours, d_logits = face_offsets(bundle, face["expr"], face["jaw"], face["eyes"])
        local_means, logits = local_means + d_means, logits + d_logits
        sh[:, 0] += d_colours
    q = np.asarray(bundle["local_quats"], dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    return {"means": origin[parent] + k * np.einsum("nrc,nc->nr", R, local_means),
            "quats": quaternion_multiply(matrix_to_quaternion(R), q),
            "scales": k * np.exp(np.asarray(bundle["local_log_scales"], dtype=np.float64)),
            "opacities": 1.0 / (1.0 + np.exp(-logits)), "sh": sh, "vertices": vertices}


def pose_frame(bundle: dict, frame: int, which: str = "best") -> dict:
    """World Gaussians of frame `frame`; `which`: "best" (what `avatar3d export --ply` uses), "tracked", "refined"."""
    prefix = {"best": "", "tracked": "tracked_", "refined": "refined_"}[which]
    params = {k: bundle[prefix + k][frame] for k in POSE_KEYS}
    return pose_gaussians(bundle, pose_mesh(bundle, **params), params)
