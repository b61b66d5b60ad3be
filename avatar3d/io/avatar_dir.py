"""The avatar directory: its layout and its manifest `avatar.json`.

```
AVATAR/avatar.json            manifest (this module): format version, rig name + checksum, settings, provenance, metrics
AVATAR/gaussians.safetensors  binding (parent triangle) + local Gaussian parameters (`BoundGaussians.tensors()`)
AVATAR/tracking.npz           tracked parameters, camera, crop, fps, audio (`TrackedSequence`)
AVATAR/refined.npz            per-frame parameters after joint refinement in training, and the train/eval split
AVATAR/data/frames/NNNNNN.png the cropped frames (lossless), so training can be re-run
AVATAR/data/masks/NNNNNN.png  foreground masks (uint8, 255 = head/hair/neck)
AVATAR/checkpoints/           resumable training state
AVATAR/enroll.yaml            the enrollment's resolved settings (`avatar3d enroll --config` runs it again)
AVATAR/audio2expr/            model.safetensors + config.json
AVATAR/eval.json, eval.mp4    held-out metrics and the side-by-side video
AVATAR/background.png, .json  the background plate and its camera (`render/plate.py`), when the room held still
AVATAR/torso.json             a portrait's torso proportions (`head/torso.py`); without it the avatar is a head
```
Writers create a new avatar in a temporary sibling folder and swap it in (`atomic_dir`), so a failed
run never damages an existing avatar.
"""
from __future__ import annotations

import datetime
import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from avatar3d import __version__
from avatar3d.errors import InputError
from avatar3d.io.atomic import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "avatar.json"
FRAME_PATTERN = "{:06d}.png"  # data/frames/, data/masks/ (and every PNG sequence we write): the frame index


@dataclass
class AvatarPaths:
    """Where each part of an avatar lives."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    manifest = property(lambda self: self.root / MANIFEST)
    gaussians = property(lambda self: self.root / "gaussians.safetensors")
    tracking = property(lambda self: self.root / "tracking.npz")
    refined = property(lambda self: self.root / "refined.npz")
    frames = property(lambda self: self.root / "data" / "frames")
    masks = property(lambda self: self.root / "data" / "masks")
    checkpoints = property(lambda self: self.root / "checkpoints")
    audio2expr = property(lambda self: self.root / "audio2expr")
    eval_json = property(lambda self: self.root / "eval.json")
    eval_video = property(lambda self: self.root / "eval.mp4")

    def has_audio_model(self) -> bool:
        """Whether the avatar has a trained audio-to-expression model (both of its files)."""
        return (self.audio2expr / "config.json").is_file() and (self.audio2expr / "model.safetensors").is_file()


@dataclass
class AvatarManifest:
    """The contents of `avatar.json`."""

    rig_name: str
    """Head model the avatar is bound to (`avatar3d models list`)."""
    rig_checksum: str
    """Checksum of that head model's data (with the converter version); a different rig is refused."""
    avatar_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Stable identifier, written into the provenance of every exported clip."""
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    made_by: str = f"avatar3d {__version__}"
    source_video: Optional[str] = None
    """File name of the enrollment video (name only, no folders)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Preset name and the settings each stage ran with."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Headline figures (held-out PSNR/SSIM, Gaussians, timings)."""
    stages: dict[str, str] = field(default_factory=dict)
    """Stage -> "done" once it finished (lets --resume skip it)."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: Path) -> "AvatarManifest":
        if not isinstance(data, dict):
            raise InputError(f"{where} is not an avatar manifest; re-run `avatar3d enroll`")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(f"{where} has avatar format {version}, this avatar3d reads {FORMAT_VERSION}; "
                             "re-enroll the video with this version")
        missing = [k for k in ("rig_name", "rig_checksum") if k not in data]
        if missing:
            raise InputError(f"{where} lacks {', '.join(missing)}; the avatar is damaged — re-run `avatar3d enroll`")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def write_manifest(root: Path, manifest: AvatarManifest) -> None:
    atomic_write_json(AvatarPaths(root).manifest, manifest.to_json())


def read_manifest(root: Path) -> AvatarManifest:
    path = AvatarPaths(root).manifest
    if not Path(root).is_dir():
        raise InputError(f"{root} is not an avatar folder; make one with `avatar3d enroll VIDEO --out {root}`")
    if not path.is_file():
        raise InputError(f"{root} has no {MANIFEST}: it is not an avatar (or its enrollment never finished); "
                         f"run `avatar3d enroll VIDEO --out {root}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} cannot be read ({err}); the avatar is damaged — re-run `avatar3d enroll`") from err
    return AvatarManifest.from_json(data, path)


def check_rig(manifest: AvatarManifest, rig) -> None:
    """Refuse to pose an avatar with a head model other than the one it was trained on."""
    if manifest.rig_name != rig.name or manifest.rig_checksum != rig.checksum():
        raise InputError(
            f"this avatar was made with head model {manifest.rig_name!r} ({manifest.rig_checksum[:12]}), "
            f"but {rig.name!r} ({rig.checksum()[:12]}) is installed under that name; install the original model "
            "again (`avatar3d models install ...`) or re-enroll the avatar")


def default_split(num_frames: int, holdout: float) -> list[int]:
    """The first (1 - holdout) of the frames: the last `holdout` fraction is kept for evaluation."""
    n_train = max(1, min(num_frames, int(math.floor(num_frames * (1.0 - holdout) + 1e-9))))
    return list(range(n_train))
