"""Posing a `HeadRig`: FLAME's linear blend skinning pipeline, batched and differentiable.

    v_shaped = template + shape_basis . beta + expr_basis . psi
    J        = joint_regressor @ v_shaped                      (rest joints, [B,5,3])
    feat     = flatten(R_j - I for j = neck, jaw, left eye, right eye)   (36 pose features)
    v_posed  = v_shaped + pose_correctives . feat
    G_j      = G_parent(j) [R_j | J_j - J_parent(j)]           (forward kinematics on JOINT_PARENTS)
    v        = sum_j w_vj (G_j - [0 | G_j J_j]) v_posed + transl

This is exactly `lbs()` of the FLAME/SMPL reference code, so FLAME parameters can be used as they are.
Everything runs on the device and in the dtype of the parameters (rig tensors are cast when needed).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError
from ..rotation import axis_angle_to_matrix
from .rig import JOINT_PARENTS, NUM_JOINTS, HeadRig, LandmarkEmbedding, RigParams


def _rig_tensor(x: Tensor, like: Tensor) -> Tensor:
    """The rig tensor on the parameters' device/dtype (no copy when already there)."""
    return x.to(device=like.device, dtype=like.dtype)


def _check_params(rig: HeadRig, params: RigParams) -> int:
    b = params.batch_size
    checks = [
        ("expr", params.expr, (b, rig.num_expr)),
        ("global_rot", params.global_rot, (b, 3)),
        ("neck", params.neck, (b, 3)),
        ("jaw", params.jaw, (b, 3)),
        ("eyes", params.eyes, (b, 2, 3)),
        ("transl", params.transl, (b, 3)),
    ]
    shape_ok = tuple(params.shape.shape) in ((rig.num_shape,), (b, rig.num_shape))
    if not shape_ok:
        raise InputError(f"RigParams.shape has shape {tuple(params.shape.shape)}; the rig {rig.name!r} needs "
                         f"[{rig.num_shape}] or [{b},{rig.num_shape}] (build params with RigParams.zeros(rig, B))")
    for name, value, want in checks:
        if tuple(value.shape) != want:
            raise InputError(f"RigParams.{name} has shape {tuple(value.shape)}, expected {list(want)} for the rig "
                             f"{rig.name!r} with batch {b} (build params with RigParams.zeros(rig, B))")
    return b


def _identity_vertices(rig: HeadRig, shape: Tensor, like: Tensor) -> Tensor:
    """shape: [S] (no gradient) -> template + identity shapes [1,V,3], computed once per rig and identity: a clip
    or a training run poses one person's identity every frame."""
    key = (shape.detach().cpu().numpy().tobytes(), like.dtype, like.device, rig.template._version,
           rig.shape_basis._version)
    cached = rig.__dict__.get("_identity_vertices")
    if cached is not None and cached[0] == key:
        return cached[1]
    template = _rig_tensor(rig.template, like)  # [V,3]
    v = template[None] + torch.einsum("bs,vcs->bvc", shape.to(like.dtype)[None], _rig_tensor(rig.shape_basis, like))
    rig.__dict__["_identity_vertices"] = (key, v)
    return v


def shaped_vertices(rig: HeadRig, shape: Tensor, expr: Tensor) -> Tensor:
    """shape: [S] or [B,S], expr: [B,E] -> v_shaped [B,V,3] (identity + expression, no pose)."""
    like = expr
    if shape.dim() == 1 and not (shape.requires_grad or rig.template.requires_grad or rig.shape_basis.requires_grad):
        v = _identity_vertices(rig, shape, like).expand(expr.shape[0], -1, -1)
    else:
        template = _rig_tensor(rig.template, like)  # [V,3]
        shape = shape.to(like.dtype)
        if shape.dim() == 1:
            shape = shape.expand(expr.shape[0], -1)
        v = template[None] + torch.einsum("bs,vcs->bvc", shape, _rig_tensor(rig.shape_basis, like))
    if rig.num_expr:
        return v + torch.einsum("be,vce->bvc", expr, _rig_tensor(rig.expr_basis, like))
    return v.clone()  # never the cached identity itself


def rest_joints(rig: HeadRig, v_shaped: Tensor) -> Tensor:
    """v_shaped: [B,V,3] -> rest joint positions [B,5,3]."""
    return torch.einsum("jv,bvc->bjc", _rig_tensor(rig.joint_regressor, v_shaped), v_shaped)


def pose_features(rot_mats: Tensor) -> Tensor:
    """rot_mats: [B,5,3,3] local joint rotations -> [B,36] (R_j - I) of joints 1..4, FLAME's layout."""
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def forward_kinematics(rot_mats: Tensor, joints: Tensor) -> tuple[Tensor, Tensor]:
    """rot_mats: [B,5,3,3] local rotations, joints: [B,5,3] rest positions ->
    (posed joints [B,5,3], skinning transforms [B,5,4,4] mapping rest space to posed space)."""
    b = rot_mats.shape[0]
    parents = JOINT_PARENTS
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, list(parents[1:])]
    local = torch.zeros(b, NUM_JOINTS, 4, 4, dtype=rot_mats.dtype, device=rot_mats.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for j in range(1, NUM_JOINTS):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, dim=1)  # [B,5,4,4]
    posed_joints = world[..., :3, 3]
    # remove the rest joint position so the transform applies to rest-space vertices
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]  # [B,5,3]
    skin = world.clone()
    skin[..., :3, 3] = world[..., :3, 3] - offset
    return posed_joints, skin


def pose_vertices(rig: HeadRig, params: RigParams, *, return_joints: bool = False):
    """Posed vertices [B,V,3] in world space (and posed joints [B,5,3] when `return_joints`).

    rig: the head model (any device/dtype; cast to the parameters' dtype/device)
    params: RigParams with batch B (axis-angle radians, translation in metres)
    """
    _check_params(rig, params)
    like = params.expr
    v_shaped = shaped_vertices(rig, params.shape, like)  # [B,V,3]
    joints = rest_joints(rig, v_shaped)  # [B,5,3]
    pose = params.full_pose().to(like.dtype)  # [B,5,3]
    rot_mats = axis_angle_to_matrix(pose)  # [B,5,3,3]
    feat = pose_features(rot_mats)  # [B,36]
    correctives = _rig_tensor(rig.pose_correctives, like)  # [V,3,36]
    v_posed = v_shaped + torch.einsum("bk,vck->bvc", feat, correctives)
    posed_joints, skin = forward_kinematics(rot_mats, joints)
    weights = _rig_tensor(rig.lbs_weights, like)  # [V,5]
    T = torch.einsum("vj,bjrc->bvrc", weights, skin[..., :3, :])  # [B,V,3,4]
    verts = (T[..., :3] @ v_posed[..., None])[..., 0] + T[..., 3]
    transl = params.transl.to(like.dtype)[:, None]
    verts = verts + transl
    if return_joints:
        return verts, posed_joints + transl
    return verts


def landmarks(rig: HeadRig, vertices: Tensor) -> Tensor:
    """vertices: [B,V,3] posed -> MediaPipe-478 landmarks [B,478,3] through the rig's embedding."""
    if rig.landmarks_mp is None:
        raise InputError(f"the rig {rig.name!r} has no MediaPipe landmark embedding; build one with the "
                         "embedding procedure (avatar3d.head) or reinstall the model")
    if vertices.shape[-2] != rig.num_vertices:
        raise InputError(f"vertices have {vertices.shape[-2]} points but the rig {rig.name!r} has "
                         f"{rig.num_vertices}; pass the output of pose_vertices(rig, ...)")
    emb = rig.landmarks_mp
    dev = vertices.device
    return LandmarkEmbedding(emb.face_idx.to(dev), emb.bary.to(dev)).points(vertices, rig.faces.to(dev))
