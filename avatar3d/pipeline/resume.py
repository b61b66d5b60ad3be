"""Whether an interrupted enrollment may be continued: its inputs must be the ones given now.

The staging folder's manifest records what the run was started with (the video's checksum and name, the
preset, the held-out fraction, the head model's checksum). A new run of the same inputs continues it; a run
of other inputs never reuses it silently: it is refused with the two commands that finish the old run or
discard it.
"""
from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Optional

from avatar3d.errors import InputError
from avatar3d.io.avatar_dir import AvatarManifest

CHUNK = 1 << 20


def video_checksum(video: Path) -> str:
    """sha256 of the video file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(video, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def run_inputs(video: Path, preset: str, holdout: float, rig_checksum: str, stages: Optional[dict] = None) -> dict:
    """What must be the same for a run to continue another: recorded in the manifest's settings. `stages`: every
    stage's resolved settings (`pipeline.config.to_dict` sections), so a changed override is noticed too."""
    inputs = {"video_sha256": video_checksum(video), "video_name": Path(video).name, "preset": preset,
              "holdout": float(holdout), "rig_checksum": rig_checksum}
    if stages is not None:
        inputs["stages"] = stages
    return inputs


def flat_settings(data: dict, prefix: str = "") -> dict:
    """Nested settings as one level, keys dotted (`train.iterations`)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def differences(recorded: AvatarManifest, wanted: dict) -> list[str]:
    """What differs between the interrupted run (its manifest) and the inputs `wanted`, in words."""
    settings = recorded.settings
    found = []
    if settings.get("video_sha256") is None:
        found.append("the interrupted run predates the input check, so its video cannot be confirmed")
    elif settings["video_sha256"] != wanted["video_sha256"]:
        found.append(f"its video was {recorded.source_video or 'another file'} (other content), not "
                     f"{wanted['video_name']}")
    for key, label in (("preset", "preset"), ("holdout", "--holdout")):
        if key in settings and settings[key] != wanted[key]:
            found.append(f"its {label} was {settings[key]}, not {wanted[key]}")
    if "stages" in settings and "stages" in wanted:
        was, now = flat_settings(settings["stages"]), flat_settings(wanted["stages"])
        was.setdefault("framing", "head")  # runs from before portraits made heads
        # a setting added since the interrupted run started is not held against it (it ran with what is now the default)
        changed = [f"--{k} {was.get(k)} (now {now.get(k)})" for k in sorted(set(was) | set(now))
                   if k in was and was.get(k) != now.get(k)]
        if changed:
            found.append(f"its settings differed: {', '.join(changed[:6])}" + (" ..." if len(changed) > 6 else ""))
    if recorded.rig_checksum != wanted["rig_checksum"]:
        found.append(f"its head model was {recorded.rig_name} with other data")
    return found


def refuse_mismatch(found: list[str], recorded: AvatarManifest, video: Path, out: Path,
                    resume_args: Optional[list[str]] = None, saved_config: Optional[Path] = None) -> InputError:
    """The error for a staging folder of other inputs: what differs, and the commands that finish or discard."""
    old_video = recorded.source_video or "ORIGINAL_VIDEO"
    settings = recorded.settings
    finish = ["avatar3d", "enroll", old_video, "--out", str(out), "--resume"]
    if saved_config is not None and any(f.startswith("its settings differed") for f in found):
        finish += ["--config", str(saved_config)]  # overrides beyond the preset: its saved config has them all
    else:
        if "preset" in settings:
            finish += ["--preset", str(settings["preset"])]
        if "holdout" in settings:
            finish += ["--holdout", str(settings["holdout"])]
    restart = ["avatar3d", "enroll", str(video), "--out", str(out), *(resume_args or []), "--restart"]
    done = ", ".join(s for s, v in recorded.stages.items() if v == "done") or "none"
    return InputError(
        f"{out} has an interrupted enrollment waiting (stages done: {done}) that was started with other inputs: "
        f"{'; '.join(found)}. Nothing was changed. To finish that one: `{shlex.join(finish)}` (with its video). "
        f"To discard it and enroll {Path(video).name}: `{shlex.join(restart)}`")
