"""The frame clock of one tab: which frame of the current sequence to show at a given moment.

While a sequence plays, frame = (now + lead - start) * fps, where `start` is the moment frame 0 was (or
is taken to be) on screen. With sound, `start` is first set when the server asks the browser to play and
then corrected when the browser reports that the sound really started (the <audio> element's `playing`
event, see `audio_html`), so the clock follows the sound, not the network. `lead` is the expected
render-to-screen delay (an average of recent render times), so the frame computed now is the one that is
due when it arrives. Silent sequences loop; a sequence with sound stops at its end.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Playback:
    """Play/pause state and the clock of one sequence (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.num_frames = 1
        self.fps = 25.0
        self.has_sound = False
        self.playing = False
        self._start = 0.0  # clock time of frame 0
        self._paused_index = 0
        self.version = 0  # bumped on every change that should force a redraw
        self.syncs = 0  # how many times the browser reported the sound's start

    def load(self, num_frames: int, fps: float, has_sound: bool) -> None:
        """A new sequence, paused at frame 0."""
        with self._lock:
            self.num_frames, self.fps, self.has_sound = max(1, int(num_frames)), float(fps), bool(has_sound)
            self.playing, self._paused_index = False, 0
            self.version += 1

    def play(self, at: Optional[float] = None) -> None:
        """Start playing from the paused frame (from 0 for a clip with sound), frame 0 due at `at`."""
        with self._lock:
            now = self._clock() if at is None else at
            first = 0 if self.has_sound else self._paused_index
            self._start = now - first / self.fps
            self.playing = True
            self.version += 1

    def sync(self, at: Optional[float] = None) -> None:
        """The sound started at `at` (default now): frame 0 is due then."""
        with self._lock:
            if self.playing:
                self._start = self._clock() if at is None else at
                self.syncs += 1
                self.version += 1

    def pause(self) -> None:
        with self._lock:
            if self.playing:
                self._paused_index = self._index_locked(self._clock(), 0.0)
                self.playing = False
                self.version += 1

    def index(self, lead: float = 0.0) -> int:
        """The frame due `lead` seconds from now; a clip with sound that has ended pauses at frame 0."""
        with self._lock:
            return self._index_locked(self._clock(), lead)

    def _index_locked(self, now: float, lead: float) -> int:
        if not self.playing:
            return self._paused_index
        frame = int((now + lead - self._start) * self.fps)
        if frame < 0:
            return 0
        if self.has_sound:
            if frame >= self.num_frames:
                self.playing, self._paused_index = False, 0
                self.version += 1
                return 0
            return frame
        return frame % self.num_frames
