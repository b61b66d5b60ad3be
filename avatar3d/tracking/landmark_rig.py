"""The rig reduced to what its MediaPipe landmarks need, so each fitting step is cheap.

A landmark is a barycentric point of one triangle, so only the three corners of each landmark
triangle (3 x 478 points, against ICT-FaceKit's 26,719 vertices) are ever posed inside the fitting
loop. Their rows of the template, identity and expression bases, pose correctives and skinning
weights are gathered once, per corner (not per unique vertex: the corners are barely more numerous,
and the loop then needs no gather/scatter at all). Expression and pose correctives are one matrix, so
blending is a single matrix product. The rest joints are linear in the blend-shape coefficients, so
the joint regressor is folded into small joint bases ([5,3,S], [5,3,E]) once as well. Posing follows
`avatar3d.head.lbs` exactly (same joint tree, pose features and skinning), restricted to those rows.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.head.lbs import forward_kinematics, pose_features
from avatar3d.head.rig import HeadRig
from avatar3d.rotation import axis_angle_to_matrix


class LandmarkRig:
    """Posed MediaPipe-478 landmarks of a rig from its parameters, evaluating only the needed vertices."""

    def __init__(self, rig: HeadRig, device=None, dtype: torch.dtype = torch.float32,
                 subset: Sequence[int] | None = None):
        """`subset`: only these landmarks (in this order), e.g. the stable ones of the rigid stage."""
        if rig.landmarks_mp is None:
            raise InputError(f"the rig {rig.name!r} has no MediaPipe landmark embedding; reinstall it with "
                             "`avatar3d models install` (the install builds the embedding)")
        device = rig.device if device is None else torch.device(device)
        emb = rig.landmarks_mp
        pick = torch.arange(emb.face_idx.shape[0]) if subset is None else torch.as_tensor(list(subset)).long()
        face_idx = emb.face_idx.cpu()[pick]
        corners = rig.faces[face_idx.to(rig.faces.device)].flatten()  # [3L] vertex of each corner
        cast = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
        L = int(face_idx.shape[0])
        self.num_landmarks = L
        self.num_shape, self.num_expr = rig.num_shape, rig.num_expr
        self.bary = cast(emb.bary.cpu()[pick])  # [L,3]
        self.valid = (torch.ones(L, dtype=torch.bool) if emb.valid is None
                      else emb.valid.cpu().bool()[pick]).to(device)  # [L]
        self.template = cast(rig.template[corners])  # [C,3], C = 3L
        self.shape_basis = cast(rig.shape_basis[corners])  # [C,3,S]
        c = corners.numel()
        # expression basis and pose correctives as one [E+36, C*3] matrix: blending is one GEMM
        blend = torch.cat([rig.expr_basis[corners], rig.pose_correctives[corners]], dim=-1)  # [C,3,E+36]
        self.blend = cast(blend.reshape(c * 3, -1).T.contiguous())  # [E+36, C*3]
        self.weights = cast(rig.lbs_weights[corners])  # [C,5]
        # skinning per joint over only the corners it moves (ICT: the eyes move 15 of 1,434 corners)
        self.joint_groups: list[tuple[int, Tensor | None, Tensor]] = []
        for j in range(self.weights.shape[1]):
            moved = torch.nonzero(self.weights[:, j] > 0).flatten()
            if moved.numel() == c:
                self.joint_groups.insert(0, (j, None, self.weights[:, j, None]))  # dense groups first
            elif moved.numel():
                self.joint_groups.append((j, moved, self.weights[moved, j, None]))
        # joints are linear in the coefficients: fold the regressor into joint bases once (full mesh, once)
        reg = rig.joint_regressor.to(rig.template.dtype)
        self.joint_template = cast(reg @ rig.template)  # [5,3]
        self.joint_shape = cast(torch.einsum("jv,vcs->jcs", reg, rig.shape_basis))  # [5,3,S]
        self.joint_expr = cast(torch.einsum("jv,vce->jce", reg, rig.expr_basis))  # [5,3,E]
        self.num_vertices = int(torch.unique(corners).numel())

    def blend_expr(self) -> Tensor:  # -> [C,3,E]
        """The expression basis at the corners (the first E rows of the blend matrix)."""
        return self.blend[: self.num_expr].T.reshape(-1, 3, self.num_expr)

    def rest_landmarks(self, shape: Tensor) -> Tensor:  # shape: [S] -> [L,3]
        """Landmarks of the unposed identity (no expression, no pose), rig space."""
        v = self.template + torch.einsum("s,vcs->vc", shape, self.shape_basis)  # [C,3]
        return (v.reshape(-1, 3, 3) * self.bary[..., None]).sum(-2)

    def __call__(self, shape: Tensor,  # [S] shared identity
                 expr: Tensor,  # [B,E]
                 pose: Tensor,  # [B,5,3] axis-angle per joint (root, neck, jaw, left eye, right eye)
                 transl: Tensor,  # [B,3] metres
                 offsets: Tensor | None = None,  # [L,3] per-landmark rest-space offsets (embedding refinement)
                 anchor: Tensor | None = None,  # [3] rest-space point; see below
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """-> (landmarks [B,L,3] world space, world rotation of the head (neck joint) [B,3,3],
        the rig translation [B,3]).

        Without `anchor`, `transl` is the rig's translation (as in `pose_vertices`). With it, `transl`
        is where the rest-space point `anchor` (moved rigidly with the head) lands in the world, and the
        rig translation that achieves this is returned. Rotating about a point in the face instead of
        the neck joint decouples rotation from translation, which the optimiser needs."""
        b, c = expr.shape[0], self.template.shape[0]
        v0 = self.template + torch.einsum("s,vcs->vc", shape, self.shape_basis)  # [C,3]
        joints = self.joint_template + torch.einsum("s,jcs->jc", shape, self.joint_shape)  # [5,3]
        rot = axis_angle_to_matrix(pose)  # [B,5,3,3]
        feat = torch.cat([expr, pose_features(rot)], dim=-1)  # [B,E+36]
        v = v0 + (feat @ self.blend).reshape(b, c, 3)  # [B,C,3]
        if self.num_expr:
            joints = joints + torch.einsum("be,jce->bjc", expr, self.joint_expr)  # [B,5,3]
        joints = joints.expand(b, -1, -1)
        _, skin = forward_kinematics(rot, joints)  # [B,5,4,4]
        head_rot = skin[:, 1, :3, :3]  # root @ neck
        if anchor is not None:  # the head's rigid motion of the anchor, removed from the translation
            transl = transl - (head_rot @ anchor + skin[:, 1, :3, 3])
        posed = transl[:, None].expand(b, c, 3)
        rot_t = skin[:, :, :3, :3].transpose(-1, -2)  # [B,5,3,3]
        for j, moved, w in self.joint_groups:  # sum_j w_j (R_j v + t_j), one batched product per joint
            vj = v if moved is None else v[:, moved]
            y = torch.baddbmm(skin[:, j, None, :3, 3], vj, rot_t[:, j]) * w  # [B,n,3]
            posed = posed + y if moved is None else posed.index_add(1, moved, y)
        lm = (posed.reshape(b, -1, 3, 3) * self.bary[..., None]).sum(-2)  # [B,L,3]
        if offsets is not None:
            lm = lm + offsets @ head_rot.transpose(-1, -2)
        return lm, head_rot, transl
