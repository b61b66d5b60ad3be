"""`AVATAR/gaussians.safetensors`: a trained avatar's Gaussians, their binding triangles and the rig they
belong to. Training writes it (`encode_gaussians`, then an atomic write); everything that shows an avatar
reads it (`load_bound`: the Gaussians with the rig they are bound to)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import Tensor

from avatar3d.errors import InputError
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.head.rig import HeadRig
from avatar3d.io.avatar_dir import AvatarPaths

GAUSSIANS_FORMAT = "avatar3d-gaussians"


def encode_gaussians(gaussians: BoundGaussians, faces: Tensor, rig: HeadRig) -> bytes:
    """The bytes of gaussians.safetensors: the Gaussians' tensors, their binding triangles `faces` [F',3]
    and the rig they were trained on (name, checksum) as metadata."""
    tensors = gaussians.tensors()
    tensors["binding_faces"] = faces.detach().cpu().contiguous()
    return st_save(tensors, metadata={"format": GAUSSIANS_FORMAT, "format_version": "1",
                                      "rig_name": rig.name, "rig_checksum": rig.checksum(),
                                      "sh_degree": str(gaussians.sh_degree)})


def load_gaussians(paths: AvatarPaths, device) -> tuple[BoundGaussians, torch.Tensor]:
    """The trained Gaussians and their binding triangles [F',3] from gaussians.safetensors."""
    if not paths.gaussians.is_file():
        raise InputError(f"{paths.gaussians} is missing: the avatar has not been trained; run "
                         f"`avatar3d train gaussians {paths.root}`")
    try:
        tensors = load_file(str(paths.gaussians), device=str(device))
    except Exception as err:
        raise InputError(f"{paths.gaussians} is damaged ({type(err).__name__}); re-run "
                         f"`avatar3d train gaussians {paths.root}`") from err
    faces = tensors.pop("binding_faces", None)
    if faces is None:
        raise InputError(f"{paths.gaussians} has no binding; re-run `avatar3d train gaussians {paths.root}`")
    return BoundGaussians.from_tensors(tensors).to(device), faces.long()


def check_binding(faces: Tensor, rig: HeadRig) -> None:
    # faces: [F',3] the binding triangles from gaussians.safetensors
    """Refuse a binding that names vertices the rig lacks (a portrait's Gaussians on a rig without its torso)."""
    if faces.numel() and int(faces.max()) >= rig.num_vertices:
        raise InputError("the avatar's Gaussians are bound to a torso that its head model lacks here (its torso.json "
                         "is missing or was not attached); restore torso.json from the avatar, or re-enroll")


def load_bound(paths: AvatarPaths, rig: HeadRig, device) -> tuple[BoundGaussians, Tensor, HeadRig]:
    """What showing an avatar needs: its frozen Gaussians, their binding triangles [F',3] and the head model `rig`
    with the avatar's own torso attached (a portrait's Gaussians are bound to it), the binding checked against it."""
    from avatar3d.head.torso import avatar_rig

    gaussians, faces = load_gaussians(paths, device)
    gaussians.requires_grad_(False)
    rig = avatar_rig(rig, paths.root).to(device)
    check_binding(faces, rig)
    return gaussians, faces, rig
