"""`avatar3d export`: the avatar as a world-space 3DGS PLY or as a rigged bundle for engines."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.errors import InputError


@dataclass
class ExportConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to export."""
    ply: Optional[Path] = None
    """Write a standard world-space 3DGS PLY (opens in common splat viewers)."""
    frame: Optional[int] = None
    """Tracked frame whose pose the PLY is exported in (0-based, -1 = the last; default 0). Frames training
    refined use the refined parameters, the others the tracked ones."""
    neutral: bool = False
    """Export the neutral pose instead of a frame: the video's mean expression, eyes straight, no head motion,
    at the rig origin (y up, the face looking along +z)."""
    up: Literal["y", "-y", "z"] = "y"
    """World frame of the PLY: y = the avatar's own (y up; the enrolled camera at the origin looking along -z);
    -y = turned 180 degrees about x (y down: for viewers that show y-up scenes upside down); z = z up."""
    centre: bool = False
    """Move the centre of the Gaussians' bounding box to the origin (viewers that orbit the origin)."""
    sh_degree: Optional[int] = None
    """SH degree of the PLY (default: the avatar's). 3 pads with zeros for tools that only read degree-3 files."""
    rig: Optional[Path] = None
    """Write the rigged form (mesh, binding, local parameters, per-frame rig parameters) to this folder."""
    compress: bool = True
    """Compress the rig bundle's .npz files (smaller; --no-compress writes faster)."""
    force: bool = False
    """Let --rig replace an existing folder that avatar3d did not make (its files are deleted); without it such
    a folder is refused and left as it is."""


def main_export(cfg: ExportConfig) -> int:
    from avatar3d.export.rig_bundle import write_rig_bundle
    from avatar3d.export.splat import export_ply, frame_index, neutral_params, sequence_params
    from avatar3d.gaussians.store import load_bound
    from avatar3d.head.registry import load_rig
    from avatar3d.io.avatar_dir import AvatarPaths, check_rig, read_manifest
    from avatar3d.tracking.sequence import TrackedSequence

    if cfg.ply is None and cfg.rig is None:
        raise InputError("nothing to export: pass --ply OUT.ply (one posed frame) and/or --rig DIR (the rigged form)")
    if cfg.neutral and cfg.frame is not None:
        raise InputError("--neutral and --frame both choose the pose; pass one of them")
    if cfg.ply is not None and Path(cfg.ply).suffix.lower() != ".ply":
        raise InputError(f"--ply {cfg.ply} must end in .ply (viewers pick the format from the name)")
    if cfg.rig is not None and Path(cfg.rig).suffix.lower() == ".ply":
        raise InputError(f"--rig {cfg.rig} names a folder for the rigged bundle; for a PLY use --ply")
    started = time.perf_counter()
    paths = AvatarPaths(Path(cfg.avatar))
    manifest = read_manifest(paths.root)
    rig = load_rig(manifest.rig_name, device="cpu")
    check_rig(manifest, rig)
    seq = TrackedSequence.load(paths.tracking)
    gaussians, faces, rig = load_bound(paths, rig, "cpu")  # a portrait's torso attached: its Gaussians bind to it
    tracked, refined, best, train = sequence_params(paths, seq)
    if cfg.ply is not None:
        if cfg.neutral:
            params, what = neutral_params(best), "the neutral pose"
        else:
            t = frame_index(0 if cfg.frame is None else cfg.frame, seq.num_frames)
            params = best.slice(slice(t, t + 1))
            what = f"frame {t} ({'refined' if t in set(train) else 'tracked'} parameters)"
        tic = time.perf_counter()
        ply = export_ply(Path(cfg.ply), gaussians, rig, faces, params, up=cfg.up, centre=cfg.centre,
                         sh_degree=cfg.sh_degree)
        size = Path(cfg.ply).stat().st_size
        print(f"wrote {cfg.ply}: {ply.num} Gaussians, SH degree {ply.sh_degree}, {what}, up {cfg.up}; "
              f"{size / 1e6:.1f} MB in {time.perf_counter() - tic:.1f} s")
    if cfg.rig is not None:
        tic = time.perf_counter()
        write_rig_bundle(Path(cfg.rig), gaussians, rig, faces, tracked, best, refined, train, K=seq.K,
                         viewmat=seq.viewmat, resolution=seq.resolution, fps=seq.fps, timestamps=seq.timestamps,
                         avatar_id=manifest.avatar_id, compress=cfg.compress, force=cfg.force)
        size = sum(f.stat().st_size for f in Path(cfg.rig).iterdir() if f.is_file())
        print(f"wrote {cfg.rig}/: rig bundle of {gaussians.num_gaussians} Gaussians on {faces.shape[0]} triangles, "
              f"{seq.num_frames} frames; {size / 1e6:.1f} MB in {time.perf_counter() - tic:.1f} s (see its README.md)")
    print(f"export done in {time.perf_counter() - started:.1f} s")
    return 0
