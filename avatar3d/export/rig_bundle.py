"""The rigged form of an avatar for engines (`avatar3d export --rig DIR`): mesh, rig data, bound Gaussians,
per-frame parameters, in plain numpy/JSON/OBJ, with a README that gives the maths to pose it.

`README` below is the bundle's README.md and, verbatim, the repository's docs/rig_bundle.md (a test keeps
them equal). `bundle_pose.py` is copied in as `pose_numpy.py`: the same maths as runnable numpy.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from avatar3d import __version__
from avatar3d.gaussians.expression import OFFSET_NAMES, ExpressionBasis
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.lbs import shaped_vertices
from avatar3d.head.rig import JOINT_NAMES, JOINT_PARENTS, HeadRig, RigParams
from avatar3d.io.atomic import atomic_dir
from avatar3d.head.refined import FREE_KEYS

BUNDLE_FORMAT = "avatar3d-rig-bundle"
BUNDLE_VERSION = 2  # 2: expression offsets (README step 8)

README = r"""# avatar3d rig bundle

The rigged form of an avatar3d avatar, for engines and tools: a head mesh driven by a FLAME-style rig
(blend shapes + five joints + linear blend skinning), 3D Gaussians bound to its triangles, and the
per-frame rig parameters of the enrollment video. Everything is plain numpy (`.npz`, no pickles), JSON
and OBJ. `pose_numpy.py` in this folder implements the maths below in numpy; this README is the contract.

Written by `avatar3d export AVATAR --rig DIR`.

## Conventions

- Units: metres; angles: axis-angle radians (vector = axis * angle).
- Rig/world space: x towards the subject's left, y up, z out of the face (right-handed).
- Quaternions: (w, x, y, z). Matrices multiply column vectors (`R @ v`).
- Camera (frames.npz): OpenCV (x right, y down, z forward); `K` 3x3 pixels with pixel centres at +0.5;
  `viewmat` 4x4 world -> camera. The enrolled camera is fixed; the head moves.

## Files

| file | contents |
|---|---|
| `README.md` | this text |
| `bundle.json` | format, version, avatar id, rig name, counts, joint names/parents, expression names, SH degree, file list |
| `mesh.obj` | the neutral mesh of this person: `identity_vertices` in rig order; group `binding` = the triangles `faces` (the first F in the file; 1-based in OBJ), then group `helper` = `helper_faces` (eyelashes and the like: never rendered, listed so every vertex is used and loaders keep the vertex order) |
| `rig.npz` | `identity_vertices` [V,3], `faces` [F,3] int64 (binding triangles), `helper_faces` [H,3] int64, `expr_basis` [V,3,E], `joint_regressor` [5,V], `lbs_weights` [V,5], `pose_correctives` [V,3,36], `joint_parents` [5] int64 (-1 = none), `shape` [S] (identity coefficients, already applied in `identity_vertices`) |
| `gaussians.npz` | `parent` [N] int64 (row of `faces`), `local_means` [N,3], `local_quats` [N,4], `local_log_scales` [N,3], `opacity_logits` [N], `sh` [N,K,3]; the expression offsets `expr_means` [N,C,3], `expr_colours` [N,C,3], `expr_opacity` [N,C] and their code `code_mean` [D], `code_components` [C,D], `code_spread` [C], `code_limit` [] (C = 0: an avatar without them) |
| `frames.npz` | per-frame parameters: `expr` [T,E], `global_rot` [T,3], `neck` [T,3], `jaw` [T,3], `eyes` [T,2,3] (left, right), `transl` [T,3]; the same with prefix `tracked_` (as tracked) and `refined_` (after training's refinement); `frames_train` [M] int64; `timestamps` [T] s; `fps` []; camera `K` [3,3], `viewmat` [4,4], `resolution` [] (square frames) |
| `pose_numpy.py` | reference implementation of the maths below (numpy only) |

The unprefixed per-frame parameters are the refined values for the frames training refined
(`frames_train`) and the tracked values elsewhere: the pose `avatar3d export --ply --frame N` uses.

Joints (FLAME's tree): 0 root, 1 neck (parent 0), 2 jaw (parent 1), 3 left eye (parent 1), 4 right eye
(parent 1). The pose of a frame is `theta = [global_rot, neck, jaw, eyes[0], eyes[1]]`, [5,3].

## Posing the mesh (FLAME's linear blend skinning)

For one frame with expression `psi` [E], pose `theta` [5,3] and translation `transl` [3]:

1. Blend shapes: `v_shaped = identity_vertices + sum_e psi[e] * expr_basis[:, :, e]`  ([V,3])
2. Rest joints: `J = joint_regressor @ v_shaped`  ([5,3]; depends on the expression)
3. Joint rotations: `R_j = rodrigues(theta[j])` with, for `t = |theta_j|`, `K = [theta_j]x` (cross-product
   matrix), `R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2` (limit `I + K + K^2/2` as t -> 0)
4. Pose correctives: `f = concat(R_1 - I, R_2 - I, R_3 - I, R_4 - I)` flattened row-major ([36]; joints
   neck, jaw, left eye, right eye); `v_posed = v_shaped + pose_correctives @ f` (per vertex and axis:
   `v_posed[v,c] = v_shaped[v,c] + sum_k pose_correctives[v,c,k] f[k]`)
5. Forward kinematics: `L_j = [[R_j, J_j - J_parent(j)], [0, 1]]` (root: `J_0`); `G_0 = L_0`,
   `G_j = G_parent(j) @ L_j`. Skinning transform: `A_j = G_j` with its translation replaced by
   `G_j.t - G_j.R @ J_j`.
6. Skinning: `v = (sum_j lbs_weights[v,j] A_j) @ [v_posed; 1] + transl`  (posed vertices [V,3], world space)

This is exactly `lbs()` of the FLAME/SMPL reference code. In an engine: a skinned mesh whose bind pose is
`identity_vertices` (joints from step 2 at zero expression), the expression blend shapes `expr_basis`,
bones with the rotations `theta`, and optional corrective shapes driven by `R_j - I` (they hold the jaw
corrective; the eyelid correctives driven by gaze where the rig has them). Engines that fix the joints at
the neutral expression differ slightly from step 2 when the expression moves the regressed joints.

## Posing the Gaussians (bound to triangles)

7. Triangle frames, for every binding triangle `(i0, i1, i2) = faces[f]` of the posed vertices:
   `v0, v1, v2` its corners, `e1 = v1 - v0`, `e2 = v2 - v0`;
   `x = e1 / |e1|`, `z = (e1 x e2) / |e1 x e2|`, `y = z x x`; rotation `R_f = [x y z]` (columns);
   origin `o_f = (v0 + v1 + v2) / 3`; scale `s_f = (|e1| + |e2| + |v2 - v1|) / 3`
   (norms clamped below at 1e-12).
8. The face's offsets (an avatar trained with expression-dependent Gaussians; C = 0 skips this step): the
   frame's face vector `x = concat(expr, jaw, eyes[0], eyes[1])` ([D] = [E + 9]), its code
   `c = clip(code_components @ (x - code_mean) / code_spread, -code_limit, code_limit)` ([C]); then, for every
   Gaussian, `local_means[n] += sum_c c[c] expr_means[n,c]`, `sh[n,0] += sum_c c[c] expr_colours[n,c]` and
   `opacity_logits[n] += sum_c c[c] expr_opacity[n,c]` before step 9.
9. Gaussian `n` with parent `f = parent[n]`:
   - mean: `mu = o_f + s_f * R_f @ local_means[n]`
   - rotation: `q = quat(R_f) * normalize(local_quats[n])` (Hamilton product; as a matrix `R_f @ R_local`)
   - scales (standard deviations along the Gaussian's axes): `s_f * exp(local_log_scales[n])`
   - opacity: `sigmoid(opacity_logits[n])`
   - colour: the SH coefficients `sh[n]` are used as they are, in world space (they do not turn with the
     triangle): `rgb = max(0, 0.5 + sum_k sh[n,k] * Y_k(d))`, `d` the unit direction from the camera
     centre to `mu`, `Y_k` the real SH basis of 3DGS (its constants and signs), `K = (degree+1)^2`.

The covariance is `Sigma = R S S^T R^T` with `R = rotation(q)` and `S = diag(scales)`; the Gaussians are
composited front to back as in 3D Gaussian Splatting. To draw frame `t` from the enrolled view, project
with `K` and `viewmat` at `resolution` x `resolution` pixels.

A standard world-space 3DGS PLY of one frame is `x,y,z = mu`, `rot_0..3 = q`, `scale_i = log(scales)`,
`opacity = opacity_logits`, `f_dc_c = sh[:,0,c]`, `f_rest_{c*(K-1)+k-1} = sh[:,k,c]` (what `avatar3d export
--ply` writes).

## Example (numpy)

```python
import pose_numpy                                  # this folder on sys.path
b = pose_numpy.load(".")
g = pose_numpy.pose_frame(b, 0)                   # frame 0: means, quats, scales, opacities, sh, vertices
v = pose_numpy.pose_mesh(b, expr=b["expr"][0], global_rot=b["global_rot"][0], neck=b["neck"][0],
                         jaw=b["jaw"][0], eyes=b["eyes"][0], transl=b["transl"][0])
```
"""


def _npz_bytes(arrays: dict[str, np.ndarray], compress: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _obj_text(vertices: np.ndarray, faces: np.ndarray, helper_faces: np.ndarray, header: str) -> str:
    # vertices: [V,3]; faces: [F,3], helper_faces: [H,3] 0-based
    out = io.StringIO()
    out.write(header)
    np.savetxt(out, vertices, fmt="v %.7g %.7g %.7g")
    out.write("g binding\n")
    np.savetxt(out, faces + 1, fmt="f %d %d %d")
    if len(helper_faces):  # so every vertex is used: loaders that drop unused vertices would renumber the rest
        out.write("g helper\n")
        np.savetxt(out, helper_faces + 1, fmt="f %d %d %d")
    return out.getvalue()


def _f32(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


def _expression_arrays(gaussians: BoundGaussians, rig: HeadRig) -> dict[str, np.ndarray]:
    """The offsets and their code (README step 8); C = 0 components for an avatar without them."""
    arrays = {name: _f32(getattr(gaussians, name)) for name in OFFSET_NAMES}
    basis = gaussians.expression
    if basis is None:
        basis = ExpressionBasis(torch.zeros(rig.num_expr + 9), torch.zeros(0, rig.num_expr + 9), torch.zeros(0))
    arrays.update({f"code_{k}": _f32(v) for k, v in basis.state_dict().items()})
    return arrays


def write_rig_bundle(folder: Path, gaussians: BoundGaussians, rig: HeadRig, faces: Tensor, tracked: RigParams,
                     best: RigParams, refined: RigParams, frames_train: list[int], *, K: np.ndarray,
                     viewmat: np.ndarray, resolution: int, fps: float, timestamps: np.ndarray,
                     avatar_id: Optional[str] = None, compress: bool = True, force: bool = False) -> dict:
    # faces: [F',3] binding triangles (gaussians.parent indexes them); tracked/best/refined: RigParams, batch T
    """Write the bundle into a temp folder beside `folder` and swap it in; returns bundle.json's contents.
    An existing `folder` is replaced only when avatar3d made it, or with `force`."""
    with torch.no_grad():
        identity = shaped_vertices(rig, tracked.shape.reshape(-1), tracked.expr.new_zeros(1, rig.num_expr))[0]
    rig_arrays = {
        "identity_vertices": _f32(identity),
        "faces": faces.detach().cpu().numpy().astype(np.int64),
        "helper_faces": rig.faces[~rig.renderable_faces()].cpu().numpy().astype(np.int64),
        "expr_basis": _f32(rig.expr_basis),
        "joint_regressor": _f32(rig.joint_regressor),
        "lbs_weights": _f32(rig.lbs_weights),
        "pose_correctives": _f32(rig.pose_correctives),
        "joint_parents": np.asarray(JOINT_PARENTS, dtype=np.int64),
        "shape": _f32(tracked.shape.reshape(-1)),
    }
    g = gaussians
    gaussian_arrays = {"parent": g.parent.detach().cpu().numpy().astype(np.int64), "local_means": _f32(g.local_means),
                       "local_quats": _f32(g.quats), "local_log_scales": _f32(g.log_scales),
                       "opacity_logits": _f32(g.opacity_logits), "sh": _f32(g.sh), **_expression_arrays(g, rig)}
    frame_arrays: dict[str, np.ndarray] = {}
    for prefix, params in (("", best), ("tracked_", tracked), ("refined_", refined)):
        frame_arrays.update({prefix + k: _f32(getattr(params, k)) for k in FREE_KEYS})
    frame_arrays.update(frames_train=np.asarray(sorted(frames_train), dtype=np.int64),
                        timestamps=np.asarray(timestamps, dtype=np.float64), fps=np.asarray(float(fps)),
                        K=np.asarray(K, dtype=np.float32), viewmat=np.asarray(viewmat, dtype=np.float32),
                        resolution=np.asarray(int(resolution), dtype=np.int64))
    info = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "made_by": f"avatar3d {__version__}",
        "avatar_id": avatar_id, "rig_name": rig.name, "rig_checksum": rig.checksum(),
        "num_vertices": rig.num_vertices, "num_triangles": int(faces.shape[0]), "num_gaussians": g.num_gaussians,
        "num_frames": best.batch_size, "num_expressions": rig.num_expr, "sh_degree": g.sh_degree,
        "joint_names": list(JOINT_NAMES), "joint_parents": list(JOINT_PARENTS),
        "expression_names": list(rig.expr_names), "fps": float(fps),
        "conventions": {"units": "metres", "angles": "axis-angle radians", "quaternion": "w,x,y,z",
                        "space": "x subject's left, y up, z out of the face",
                        "camera": "OpenCV, viewmat world->camera"},
        "files": {"README.md": "format and maths", "bundle.json": "this summary",
                  "mesh.obj": "neutral mesh, binding triangles",
                  "rig.npz": "blend shapes, joints, skinning", "gaussians.npz": "bound Gaussians (triangle-local)",
                  "frames.npz": "per-frame rig parameters and camera", "pose_numpy.py": "reference posing in numpy"},
    }
    header = f"# avatar3d rig bundle: neutral mesh of avatar {avatar_id or '?'} (rig {rig.name}); see README.md\n"
    folder = Path(folder)
    with atomic_dir(folder, kind="rig bundle", force=force) as tmp:
        (tmp / "README.md").write_text(README, encoding="utf-8")
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "mesh.obj").write_text(_obj_text(rig_arrays["identity_vertices"], rig_arrays["faces"],
                                                      rig_arrays["helper_faces"], header))
        (tmp / "rig.npz").write_bytes(_npz_bytes(rig_arrays, compress))
        (tmp / "gaussians.npz").write_bytes(_npz_bytes(gaussian_arrays, compress))
        (tmp / "frames.npz").write_bytes(_npz_bytes(frame_arrays, compress))
        shutil.copyfile(Path(__file__).with_name("bundle_pose.py"), tmp / "pose_numpy.py")
    return info
