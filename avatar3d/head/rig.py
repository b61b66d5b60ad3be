"""`HeadRig`: one data structure for every head model (FLAME, ICT-FaceKit, the synthetic rig).

The rig is FLAME-shaped: five joints in a fixed kinematic tree

    0 root ── 1 neck ── 2 jaw
                   ├── 3 left eye
                   └── 4 right eye

(left/right are the *subject's*; rig space is metres, x towards the subject's left, y up, z out of
the face). Pose parameters are axis-angle radians per joint plus a global translation; FLAME's
convention is followed exactly so FLAME parameters can be used as they are.

Vertices are produced by `avatar3d.head.lbs.pose_vertices` (blend shapes → joint regression →
pose correctives → linear blend skinning). This module only holds the data and its (de)serialization.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

BLINK_NAMES = ("eyeBlink_L", "eyeBlink_R", "eyeBlinkLeft", "eyeBlinkRight")
"""Expressions that close the eyelids (ICT's and ARKit's spellings)."""
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
NUM_JOINTS = len(JOINT_NAMES)
# parent of each joint in JOINT_NAMES order (-1: none)
JOINT_PARENTS = (-1, 0, 1, 1, 1)
# Pose-corrective features are (R_j - I) flattened for every non-root joint, FLAME's layout:
# 4 joints x 9 = 36 features, ordered neck, jaw, left eye, right eye.
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)

# Region names a rig may define (vertex masks). Not every rig has every region.
REGION_NAMES = (
    "face",          # skin of the face (forehead to chin, cheeks, nose)
    "lips",          # lips (subset of face)
    "eyelids",       # upper and lower eyelids (subset of face)
    "brows",         # eyebrow area (subset of face)
    "scalp",         # back and top of the head (hair goes here)
    "neck",
    "ears",
    "mouth_interior",
    "teeth",
    "gums",
    "eyeball_left",
    "eyeball_right",
    "helper",        # geometry that is never rendered (eyelashes, lacrimal fluid, eye blend/occlusion)
    "torso",         # the shoulders and chest proxy appended below the neck (head/torso.py)
)


@dataclass
class LandmarkEmbedding:
    """Points on the rig surface, one per landmark: a triangle id and barycentric weights.

    For the MediaPipe-478 embedding the order is MediaPipe's face-mesh landmark order; indices
    468 and 473 are the iris centres (left/right as MediaPipe names them), embedded on the eyeballs.
    """

    face_idx: Tensor  # [L] int64, triangle index into HeadRig.faces
    bary: Tensor  # [L,3] float, barycentric weights (sum to 1)
    valid: Optional[Tensor] = None  # [L] bool, False where no good surface point exists

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """vertices: [...,V,3], faces: [F,3] -> landmarks [...,L,3]."""
        tri = faces[self.face_idx]  # [L,3]
        corners = vertices[..., tri, :]  # [...,L,3,3]
        return (corners * self.bary.to(vertices.dtype)[..., None]).sum(-2)


@dataclass
class HeadRig:
    """A rigged head model. All tensors live on one device; float tensors are float32 unless noted."""

    name: str
    template: Tensor  # [V,3] neutral mean-identity vertices, metres, rig space
    faces: Tensor  # [F,3] int64 triangles (counter-clockwise seen from outside)
    shape_basis: Tensor  # [V,3,S] identity blend shapes (per unit coefficient), metres
    expr_basis: Tensor  # [V,3,E] expression blend shapes, metres
    joint_regressor: Tensor  # [5,V] joints = joint_regressor @ shaped vertices (rows sum to 1)
    lbs_weights: Tensor  # [V,5] skinning weights (rows sum to 1)
    pose_correctives: Tensor  # [V,3,36] vertex offsets per pose feature (R_j - I, FLAME layout); zeros if none
    expr_names: list[str] = field(default_factory=list)  # [E] names (ICT: ARKit names; FLAME: "expr000"...)
    regions: dict[str, Tensor] = field(default_factory=dict)  # name in REGION_NAMES -> [V] bool
    landmarks_mp: Optional[LandmarkEmbedding] = None  # MediaPipe-478 embedding
    landmarks_68: Optional[Tensor] = None  # [68] int64 vertex indices (Multi-PIE order), when the model has them
    uvs: Optional[Tensor] = None  # [T,2] texture coordinates
    face_uvs: Optional[Tensor] = None  # [F,3] int64 indices into uvs
    meta: dict = field(default_factory=dict)  # source, checksum, converter version, jaw fit error (mm), ...

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[-1])

    @property
    def num_expr(self) -> int:
        return int(self.expr_basis.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.template.device

    def checksum(self) -> str:
        """Identifies the rig's data: the installed model's cache key, else a hash of its geometry."""
        key = self.meta.get("cache_key")
        if key:
            return str(key)
        digest = hashlib.sha256(self.name.encode())
        for t in (self.template, self.faces, self.shape_basis, self.expr_basis, self.joint_regressor):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:32]

    # ------------------------------------------------------------------ regions
    def region(self, name: str) -> Tensor:
        """[V] bool mask of a region; all-False when the rig does not define it."""
        if name not in REGION_NAMES:
            raise KeyError(f"unknown region {name!r}; known: {', '.join(REGION_NAMES)}")
        mask = self.regions.get(name)
        if mask is None:
            return torch.zeros(self.num_vertices, dtype=torch.bool, device=self.device)
        return mask

    def face_region_mask(self, name: str) -> Tensor:
        """[F] bool: triangles whose three vertices all lie in the region."""
        return self.region(name)[self.faces].all(dim=1)

    def renderable_faces(self) -> Tensor:
        """[F] bool: triangles that may carry Gaussians (anything with a helper vertex is excluded)."""
        return ~self.region("helper")[self.faces].any(dim=1)

    # ------------------------------------------------------------------ transfer
    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "HeadRig":
        """A copy with every tensor moved; float tensors cast to `dtype` when given."""

        def move(x):
            if isinstance(x, Tensor):
                if dtype is not None and x.is_floating_point():
                    return x.to(device=device, dtype=dtype)
                return x.to(device=device)
            if isinstance(x, LandmarkEmbedding):
                return LandmarkEmbedding(*(move(getattr(x, f.name)) for f in dataclasses.fields(x)))
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return HeadRig(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    # ------------------------------------------------------------------ (de)serialization
    def state_dict(self) -> tuple[dict[str, Tensor], dict]:
        """Flat tensors (for safetensors) and JSON-able metadata that together rebuild the rig."""
        tensors: dict[str, Tensor] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                tensors[f.name] = value.detach().cpu().contiguous()
        for name, mask in self.regions.items():
            tensors[f"region.{name}"] = mask.detach().cpu().to(torch.uint8).contiguous()
        if self.landmarks_mp is not None:
            tensors["landmarks_mp.face_idx"] = self.landmarks_mp.face_idx.cpu().contiguous()
            tensors["landmarks_mp.bary"] = self.landmarks_mp.bary.cpu().contiguous()
            if self.landmarks_mp.valid is not None:
                tensors["landmarks_mp.valid"] = self.landmarks_mp.valid.cpu().to(torch.uint8).contiguous()
        info = {"name": self.name, "expr_names": list(self.expr_names), "meta": self.meta}
        json.dumps(info)  # fail early if meta is not JSON-able
        return tensors, info

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor], info: dict) -> "HeadRig":
        regions = {k.split(".", 1)[1]: v.bool() for k, v in tensors.items() if k.startswith("region.")}
        emb = None
        if "landmarks_mp.face_idx" in tensors:
            valid = tensors.get("landmarks_mp.valid")
            emb = LandmarkEmbedding(
                tensors["landmarks_mp.face_idx"].long(),
                tensors["landmarks_mp.bary"],
                None if valid is None else valid.bool(),
            )
        plain = {f.name: tensors[f.name] for f in dataclasses.fields(cls) if f.name in tensors}
        return cls(
            name=info["name"],
            expr_names=list(info.get("expr_names", [])),
            meta=dict(info.get("meta", {})),
            regions=regions,
            landmarks_mp=emb,
            **plain,
        )


@dataclass
class RigParams:
    """Per-frame rig parameters, batched over a leading dimension B (frames).

    Rotations are axis-angle radians in FLAME's convention; translation in metres.
    `shape` may be [S] (shared identity, broadcast over frames) or [B,S].
    """

    shape: Tensor  # [S] or [B,S] identity coefficients
    expr: Tensor  # [B,E] expression coefficients
    global_rot: Tensor  # [B,3] root rotation
    neck: Tensor  # [B,3] neck rotation (the head turns on the neck)
    jaw: Tensor  # [B,3] jaw rotation (pitch opens the mouth)
    eyes: Tensor  # [B,2,3] left, right eye rotations (gaze)
    transl: Tensor  # [B,3] translation, metres

    @property
    def batch_size(self) -> int:
        return int(self.expr.shape[0])

    @classmethod
    def zeros(cls, rig: HeadRig, batch: int = 1, device=None, dtype=torch.float32) -> "RigParams":
        device = rig.device if device is None else device
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        return cls(z(rig.num_shape), z(batch, rig.num_expr), z(batch, 3), z(batch, 3), z(batch, 3),
                   z(batch, 2, 3), z(batch, 3))

    def full_pose(self) -> Tensor:
        """[B,5,3] axis-angle per joint in JOINT_NAMES order."""
        return torch.cat([self.global_rot[:, None], self.neck[:, None], self.jaw[:, None], self.eyes], dim=1)

    def map(self, fn) -> "RigParams":
        """Apply `fn` to every tensor (e.g. `.to(device)`, slicing with care for `shape`)."""
        return RigParams(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def slice(self, index) -> "RigParams":
        """Select frames; a shared [S] identity is kept as it is."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if (f.name == "shape" and value.dim() == 1) else value[index]
        return RigParams(**out)
