"""`avatar3d eval identity`: is the avatar still this person under every control?

Renders of the held-out frames' parameters under each changed control (a camera turned ±30° or moved to ×0.7 /
×1.5 of the enrolled distance, each emotion at intensity 1, another voice driving the face) are compared with the
real held-out frames by dlib's face-recognition embedding (eval/identity.py): the mean distance of every render to
every real frame. The real frames' own spread (each against the others) and the unchanged render are the
baselines. Renders or real frames where no face is found are counted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from avatar3d.drive.controls import Controls
from avatar3d.drive.emotion import EMOTIONS, Emotion
from avatar3d.eval.identity import FaceEmbedder, distance_to_person
from avatar3d.io.avatar_dir import FRAME_PATTERN

CAMERAS = {"enrolled camera": {}, "camera yaw -30": {"yaw": -30.0}, "camera yaw +30": {"yaw": 30.0},
           "distance x0.7": {"distance_scale": 0.7}, "distance x1.5": {"distance_scale": 1.5}}


def _held_out(avatar, count: int) -> list[int]:
    """`count` held-out frame indices spread over the tail training never saw (over every frame when the avatar
    records no training split)."""
    from avatar3d.pipeline.holdout import held_out_frames

    tail = held_out_frames(avatar.paths, avatar.sequence.num_frames) or list(range(avatar.sequence.num_frames))
    picks = np.linspace(0, len(tail) - 1, min(count, len(tail))).round().astype(int)
    return [tail[i] for i in picks]


def _real_frames(avatar, frames: list[int]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(avatar.paths.frames / FRAME_PATTERN.format(i)).convert("RGB")) for i in frames]


def _controls() -> dict[str, Controls]:
    out = {label: Controls(**kw) for label, kw in CAMERAS.items()}
    out.update({f"emotion {name}": Controls(emotion=Emotion(name, 1.0)) for name in EMOTIONS})
    return out


def _real_spread(real: list) -> Optional[float]:
    found = [e for e in real if e is not None]
    d = [float(np.linalg.norm(a - b)) for i, a in enumerate(found) for b in found[i + 1:]]
    return float(np.mean(d)) if d else None


def identity_report(avatar_dir: Path, *, audio: Optional[Path] = None, frames: int = 8, backend: str = "auto",
                    say=print) -> tuple[dict, dict]:
    """(report, first render per control for a contact sheet)."""
    from avatar3d.api import Avatar

    embed = FaceEmbedder()
    avatar = Avatar.load(avatar_dir, backend=backend)
    picks = _held_out(avatar, frames)
    real = [embed(image) for image in _real_frames(avatar, picks)]
    tracked = avatar.tracked()
    report = {"frames": len(picks), "real_no_face": sum(e is None for e in real), "real_spread": _real_spread(real),
              "controls": {}}
    firsts = {}
    for label, controls in _controls().items():
        renders = [avatar.render_frame(tracked, t, controls).image for t in picks]
        report["controls"][label] = _scored(real, renders, embed)
        firsts[label] = renders[0]
        say(f"{label:<20} {_fmt(report['controls'][label])}")
    if audio is not None:
        speech = avatar.animate(audio)
        at = np.linspace(0, len(speech) - 1, len(picks)).round().astype(int)
        renders = [avatar.render_frame(speech, int(t), Controls()).image for t in at]
        label = f"voice {Path(audio).name}"
        report["controls"][label] = _scored(real, renders, embed)
        firsts[label] = renders[0]
        say(f"{label:<20} {_fmt(report['controls'][label])}")
    return report, firsts


def _scored(real: list, renders: list, embed: FaceEmbedder) -> dict:
    score = distance_to_person(real, renders, embed)
    return {"distance": score.mean, "renders_no_face": score.no_face_render, "renders": len(renders)}


def _fmt(entry: dict) -> str:
    d = entry["distance"]
    return f"{'n/a' if d is None else f'{d:.3f}'}  (no face in {entry['renders_no_face']} of {entry['renders']})"


def contact_sheet(images: dict[str, np.ndarray], columns: int = 4, width: int = 256) -> np.ndarray:
    """The renders side by side, each labelled: [H,W,3] uint8."""
    from PIL import Image, ImageDraw

    tiles = []
    for label, image in images.items():
        tile = Image.fromarray(image).resize((width, width), Image.BILINEAR)
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, width, 14), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
        tiles.append(np.asarray(tile))
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)
