"""The avatar posed at one moment as a standard world-space 3DGS PLY (`avatar3d export --ply`).

The Gaussians are posed exactly as the renderer poses them (`pose_gaussians`), then written in 3DGS's raw
parameterisation (`avatar3d.io.ply`): position, log-scale, unit quaternion (w,x,y,z), logit-opacity and
the avatar's SH coefficients (f_rest channel-major), so any 3DGS viewer shows what `avatar3d render` shows.

World frame (`up`):
- "y" (default): the avatar's world, as tracked: metres, y up, x towards the subject's left, z out of the
  face; the enrolled camera sits at the origin looking along -z. Rendering the PLY with the enrolled K and
  viewmat gives the enrolled framing.
- "-y": the same scene turned 180 degrees about x (y down, z away from the viewer): the OpenCV/COLMAP-style
  frame most captured 3DGS scenes use, for viewers that assume it (they show a "y" export upside down).
- "z": turned +90 degrees about x so z is up (Blender and other z-up tools).
A rigid turn also turns the view-dependent colour: the SH coefficients are rotated band by band.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.gaussians.model import BoundGaussians, WorldGaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import HeadRig, RigParams
from avatar3d.io.avatar_dir import AvatarPaths
from avatar3d.io.ply import GaussianPly, write_ply
from avatar3d.render.sh import sh_basis
from avatar3d.rotation import matrix_to_quaternion, quaternion_multiply
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.head.refined import FREE_KEYS, load_refined
from avatar3d.gaussians.avatar_render import pose_gaussians
from avatar3d.gaussians.expression import expressed

UP_AXES = {
    "y": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "-y": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
    "z": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}


# ---------------------------------------------------------------------------------------- parameters
def sequence_params(paths: AvatarPaths, seq: TrackedSequence,
                    device=None) -> tuple[RigParams, RigParams, RigParams, list[int]]:
    """(tracked, refined, best, frames_train): per-frame RigParams of every frame. `refined` is training's
    refined.npz (equal to `tracked` without one); `best` takes the refined values of the frames training
    refined and the tracked ones elsewhere (the avatar's own view of each frame)."""
    tracked = seq.params(device=device)
    if not paths.refined.is_file():
        return tracked, tracked, tracked, []
    refined, train = load_refined(paths.refined, device=device)
    if refined.batch_size != seq.num_frames:
        raise InputError(f"{paths.refined} holds {refined.batch_size} frames but tracking.npz {seq.num_frames}; "
                         f"the avatar is inconsistent — re-run `avatar3d train gaussians {paths.root}`")
    use = torch.zeros(seq.num_frames, dtype=torch.bool, device=tracked.expr.device)
    use[torch.as_tensor(train, dtype=torch.long, device=use.device)] = True
    refined_all, best = {"shape": tracked.shape}, {"shape": tracked.shape}
    for key in FREE_KEYS:
        t = getattr(tracked, key)
        r = getattr(refined, key).to(device=t.device, dtype=t.dtype)
        refined_all[key] = r
        best[key] = torch.where(use.view(-1, *([1] * (t.dim() - 1))), r, t)
    return tracked, RigParams(**refined_all), RigParams(**best), train


def frame_index(frame: int, num_frames: int) -> int:
    """Check a user-given frame number (negative counts from the end, as in Python)."""
    if not -num_frames <= int(frame) < num_frames:
        raise InputError(f"--frame {frame} is out of range: the avatar has {num_frames} tracked frames "
                         f"(0..{num_frames - 1}, or -1 for the last); pick one of those")
    return int(frame) % num_frames


def neutral_params(best: RigParams) -> RigParams:
    """Batch 1: the mean expression and jaw of the video, eyes straight, no head motion, at the rig origin."""
    zeros = torch.zeros_like(best.global_rot[:1])
    return RigParams(best.shape, best.expr.mean(0, keepdim=True), zeros, zeros.clone(),
                     best.jaw.mean(0, keepdim=True), torch.zeros_like(best.eyes[:1]), zeros.clone())


# ---------------------------------------------------------------------------------------- posing
def posed_gaussians(gaussians: BoundGaussians, rig: HeadRig, faces: Tensor, params: RigParams) -> WorldGaussians:
    # faces: [F',3] binding triangles; params: RigParams with batch 1
    """World-space Gaussians of one pose, exactly as `render_avatar` poses them (expression offsets baked in)."""
    with torch.no_grad():
        vertices = pose_vertices(rig, params)[0]  # [V,3]
        return pose_gaussians(gaussians, vertices, faces, params)


def sh_rotation(rotation: Tensor, degree: int) -> Tensor:
    # rotation: [3,3] -> [(degree+1)^2, (degree+1)^2]
    """M such that SH coefficients c [K] of a colour field turn with the scene as c' = M^T c.

    Each band is closed under rotation, so Y(R^T d) = M Y(d) holds for every direction d; M is recovered
    exactly (to float64 precision) by least squares over many directions, band by band.
    """
    k = (degree + 1) ** 2
    if degree == 0:
        return torch.eye(1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=gen, dtype=torch.float64), dim=-1)
    R = rotation.to(torch.float64).cpu()
    y = sh_basis(degree, dirs)  # [D,K]
    y_rot = sh_basis(degree, dirs @ R)  # rows are (R^T d)^T
    M = torch.zeros(k, k, dtype=torch.float64)
    for band in range(degree + 1):
        s = slice(band * band, (band + 1) ** 2)
        # y_rot[:, s] = y[:, s] @ M_band^T
        M[s, s] = torch.linalg.lstsq(y[:, s], y_rot[:, s]).solution.T
    return M


def to_ply(world: WorldGaussians, opacity_logits: Tensor, *, up: str = "y", centre: bool = False,
           sh_degree: Optional[int] = None) -> GaussianPly:
    # opacity_logits: [N] the avatar's raw values (exact; the logit of world.opacities would round-trip them)
    """Raw 3DGS parameters of posed Gaussians in the requested world frame (module doc)."""
    if up not in UP_AXES:
        raise InputError(f"--up {up!r} is not known; use one of {', '.join(UP_AXES)} (see `avatar3d export --help`)")
    T = torch.tensor(UP_AXES[up], dtype=world.means.dtype, device=world.means.device)  # [3,3]
    means, quats, sh = world.means @ T.T, world.quats, world.sh
    degree = math.isqrt(sh.shape[1]) - 1
    if up != "y":
        quats = quaternion_multiply(matrix_to_quaternion(T).expand_as(quats), quats)
        M = sh_rotation(T, degree).to(sh)
        sh = torch.einsum("kj,nkc->njc", M, sh)
    if centre:
        means = means - 0.5 * (means.amin(0) + means.amax(0))
    if sh_degree is not None:
        if not 0 <= sh_degree <= 3:
            raise InputError(f"--sh-degree {sh_degree} is outside 0..3; 3DGS files hold SH degree 0 to 3")
        k = (sh_degree + 1) ** 2
        sh = sh[:, :k] if k <= sh.shape[1] else torch.cat([sh, sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)], 1)
    return GaussianPly(means=means, quats=quats, log_scales=torch.log(world.scales), opacity_logit=opacity_logits,
                       sh_dc=sh[:, 0], sh_rest=sh[:, 1:])


def export_ply(path: Path, gaussians: BoundGaussians, rig: HeadRig, faces: Tensor, params: RigParams, *,
               up: str = "y", centre: bool = False, sh_degree: Optional[int] = None) -> GaussianPly:
    """Pose with `params` (batch 1), convert and write `path` atomically; returns what was written."""
    world = posed_gaussians(gaussians, rig, faces, params)
    with torch.no_grad():
        opacity_logits = expressed(gaussians, params).opacity_logits.detach()
    ply = to_ply(world, opacity_logits, up=up, centre=centre, sh_degree=sh_degree)
    write_ply(path, ply)
    return ply

