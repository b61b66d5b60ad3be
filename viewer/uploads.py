"""Speech files for the viewer: the ones the avatar folder already has, and validated uploads.

An upload arrives as a name and bytes from the browser. It is refused (InputError with the fix) when the
name has path parts or odd characters, the suffix is not an audio/video container, it is larger than the
limit, or it does not decode to audio. Accepted files land in AVATAR/uploads/ only, written atomically
(temp file in that folder, decoded there, then renamed); nothing is written anywhere else.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

from avatar3d.errors import InputError

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".webm")
SPEECH_DIRS = ("speech", "uploads")  # inside the avatar folder, listed in this order
UPLOAD_DIR = "uploads"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MIN_SECONDS = 0.1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,127}$")


def speech_files(avatar_dir: Path) -> list[Path]:
    """Audio files in AVATAR/speech/ and AVATAR/uploads/, sorted by name within each folder."""
    found: list[Path] = []
    for sub in SPEECH_DIRS:
        folder = Path(avatar_dir) / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir()
                            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
    return found


def check_upload_name(name: str) -> str:
    """The file name to store `name` under, or InputError when it has path parts or odd characters."""
    if not isinstance(name, str) or not name:
        raise InputError("the upload has no file name; pick a file such as speech.wav")
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise InputError(f"the upload name {name!r} has path parts; rename the file to a plain name such "
                         f"as speech.wav and upload it again")
    if not _SAFE_NAME.match(name):
        raise InputError(f"the upload name {name!r} has unusual characters or is too long; rename it using "
                         f"letters, digits, spaces, '.', '-', '_' (at most 128 characters) and upload it again")
    if Path(name).suffix.lower() not in AUDIO_SUFFIXES:
        raise InputError(f"{name!r} is not an audio file (expected one of {', '.join(AUDIO_SUFFIXES)}); "
                         f"convert the speech to .wav or .mp3 and upload it again")
    return name


def save_upload(avatar_dir: Path, name: str, content: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Validate an uploaded speech file and store it as AVATAR/uploads/<name>; returns the path.

    Raises InputError (nothing is left behind) when the name, size or content is not acceptable.
    """
    name = check_upload_name(name)
    if len(content) > max_bytes:
        raise InputError(f"{name!r} is {len(content) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB upload "
                         f"limit; upload a shorter clip (or start the viewer with a larger --max-upload-mb)")
    if len(content) == 0:
        raise InputError(f"{name!r} is empty; upload a speech recording such as a .wav file")
    root = Path(avatar_dir).resolve()
    folder = root / UPLOAD_DIR
    folder.mkdir(exist_ok=True)
    if folder.is_symlink() or folder.resolve().parent != root:
        raise InputError(f"{folder} is not a plain folder inside the avatar; remove it (or the link) so uploads "
                         f"stay inside {root}")
    target = folder / name
    tmp = folder / f".{uuid.uuid4().hex}.tmp-{name}"  # same folder: the rename is atomic
    try:
        with open(tmp, "xb") as f:
            f.write(content)
        audio = _decode(tmp, name)
        if audio.size < MIN_SECONDS * 16000:
            raise InputError(f"{name!r} holds less than {MIN_SECONDS} s of sound; upload a longer speech recording")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _decode(path: Path, name: str) -> np.ndarray:  # -> [A] float32 16 kHz
    """The upload's sound; InputError naming only the user's file (never our temp name or folders)."""
    from avatar3d.io.media import read_audio

    try:
        return read_audio(path)
    except Exception as err:  # a decoder error of any kind means the same to the user
        raise InputError(f"{name!r} is not a readable audio file: its content is not sound that FFmpeg can "
                         f"decode (is it really a {Path(name).suffix} file?); upload a .wav, .mp3, .flac or .ogg "
                         f"speech recording") from err
