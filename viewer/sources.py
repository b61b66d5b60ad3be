"""The sequences a tab can play: the resting face, the enrolled video, and speech files (cached)."""
from __future__ import annotations

import threading
from pathlib import Path

from avatar3d_viewer.uploads import speech_files

STILL = "resting face (still)"
ENROLLED = "enrolled video (with its sound)"
SPEECH_PREFIX = "speech: "


class Sources:
    """Named `DriveParams` of one avatar, computed once and shared by every tab."""

    def __init__(self, avatar, avatar_dir: Path):
        self.avatar = avatar
        self.avatar_dir = Path(avatar_dir)
        self._cache: dict = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The sequences to offer: speech files only when the avatar has an audio-to-expression model."""
        speech = speech_files(self.avatar_dir) if self.avatar.has_audio_model else []
        return [STILL, ENROLLED] + [SPEECH_PREFIX + p.name for p in speech]

    def path_of(self, name: str) -> Path:
        for path in speech_files(self.avatar_dir):
            if SPEECH_PREFIX + path.name == name:
                return path
        from avatar3d.errors import InputError

        raise InputError(f"{name!r} is no longer in {self.avatar_dir / 'speech'} or {self.avatar_dir / 'uploads'}; "
                         f"upload the file again")

    def get(self, name: str):
        """The DriveParams of source `name` (speech is animated by the avatar's audio model on first use)."""
        if name == STILL:
            key = (STILL,)
        elif name == ENROLLED:
            key = (ENROLLED,)
        else:
            path = self.path_of(name)
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key not in self._cache:
                if name == STILL:
                    self._cache[key] = self.avatar.neutral(1)
                elif name == ENROLLED:
                    self._cache[key] = self.avatar.tracked(refined=True)
                else:
                    self._cache[key] = self.avatar.animate(str(key[0]))
            return self._cache[key]
