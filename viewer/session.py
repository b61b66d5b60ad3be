"""One browser tab: its controls, its sequence and clock, and the loop that renders and streams its frames.

Every tab has its own state and its own render thread, so several tabs look at the same avatar
independently; a closed tab only stops its own thread. Frames go to the browser as JPEG background
images: at the preview resolution while the view changes (mouse orbit, slider drags) and during playback
on a CPU, at the full resolution once nothing has changed for `settle` seconds.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

from avatar3d_viewer.camera_map import orbit_from_position
from avatar3d_viewer.frames import RENDERS, render_view
from avatar3d_viewer.playback import Playback
from avatar3d_viewer.sources import STILL
from avatar3d_viewer.state import ViewState


@dataclass
class RenderSettings:
    """How a tab's frames are made."""

    resolution: int = 512  # full resolution (square side, pixels), once the view is still
    preview_resolution: int = 256  # while the view moves
    settle: float = 0.3  # seconds without a change before the full-resolution frame
    play_at_full: bool = False  # render playback at full resolution (a GPU keeps up; a CPU does not)
    jpeg_quality: int = 85


class FpsMeter:
    """Frames per second over the last `window` seconds."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._times: deque = deque()

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def fps(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)


class Session:
    """The state and render loop of one tab. `client` is a viser ClientHandle (None in tests)."""

    def __init__(self, avatar, sources, settings: RenderSettings, client=None):
        self.avatar = avatar
        self.sources = sources
        self.settings = settings
        self.client = client
        self.state = ViewState(distance=float(avatar.enrolled_distance), room=_room_by_default(avatar))
        self.playback = Playback()
        self.source_name = STILL
        self.params = sources.get(STILL)
        self.playback.load(len(self.params), self.params.fps, has_sound=False)
        self.aspect = 1.0
        self.fps = FpsMeter()
        self.last_resolution = 0
        self.last_index = 0
        self.last_seconds = 0.0  # render + encode + send time of the last frame
        self.frames_sent = 0
        self.lead = 0.1  # seconds from picking a frame to the middle of its time on screen (running average)
        self._interval = 0.1  # seconds between frames while playing (running average)
        self._sent_at: Optional[float] = None
        self.panel = None  # the tab's control panel, when it has one
        self.on_frame = None  # callable(session) after each frame is sent (the panel's readout)
        self.on_playback_end = None  # callable(session) when a clip with sound has played to its end
        self.on_idle = None  # callable(session) once when the view stops changing (the readout says so)
        self.on_wait = None  # callable(session, renders_ahead) before a render that has to queue
        self.tabs = lambda: 1  # how many tabs share the server (set by the app), for the readout
        self.idle = False
        self._version = 0
        self._moved_at = -1e9
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------ changes
    def changed(self, moving: bool = True) -> None:
        """The view changed (a control moved): draw again, at the preview resolution while it keeps changing."""
        with self._lock:
            self._version += 1
            if moving:
                self._moved_at = time.monotonic()
        self._wake.set()

    def set_camera(self, position, look_at, aspect: Optional[float] = None) -> None:
        # position, look_at: [3] viser units
        """The browser's camera moved (mouse orbit or zoom)."""
        yaw, pitch, distance = orbit_from_position(position, look_at)
        self.state.yaw, self.state.pitch = yaw, pitch
        if distance > 1e-6:
            self.state.distance = distance
        if aspect is not None and aspect > 0:
            self.aspect = float(aspect)
        self.changed()

    def set_source(self, name: str) -> None:
        """Switch to another sequence (paused at its first frame); InputError when it cannot be made."""
        params = self.sources.get(name)
        self.source_name, self.params = name, params
        self.playback.load(len(params), params.fps, has_sound=params.audio is not None)
        self.changed(moving=False)

    # ------------------------------------------------------------------------------ rendering
    def render(self, resolution: int, index: Optional[int] = None):  # -> [R, R*aspect, 3] uint8
        """The current view at `resolution` (frame `index`, default the clock's)."""
        index = self.playback.index() if index is None else index
        return render_view(self.avatar, self.params, index, self.state.copy(), resolution, self.aspect)

    def _step(self, last_key) -> tuple:
        """Render and send one frame if the view differs from `last_key`; returns the new key (or last_key)."""
        now = time.monotonic()
        with self._lock:
            version, moved_at = self._version, self._moved_at
        moving = now - moved_at < self.settings.settle
        playing = self.playback.playing
        preview = moving or (playing and not self.settings.play_at_full)
        res = self.settings.preview_resolution if preview else self.settings.resolution
        index = self.playback.index(lead=self.lead if playing else 0.0)
        key = (version, self.playback.version, index, res, round(self.aspect, 3), self.params is not None)
        if key == last_key:
            return last_key
        tic = time.monotonic()
        ahead = RENDERS.waiting()
        if ahead > 0 and self.on_wait is not None:
            self.on_wait(self, ahead)
        image = self.render(res, index)
        if self._stop.is_set():
            return key
        if self.client is not None:
            self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=self.settings.jpeg_quality)
        done = time.monotonic()
        spent = done - tic
        if playing and self._sent_at is not None:
            self._interval = 0.8 * self._interval + 0.2 * min(done - self._sent_at, 0.5)
        self._sent_at = done if playing else None
        # A frame is picked for the moment it will be on screen (after `spent`) and stays there for one
        # interval: aiming at the middle of that stay centres the picture on the sound.
        self.lead = 0.8 * self.lead + 0.2 * (spent + 0.5 * self._interval)
        self.last_seconds = spent
        self.fps.tick()
        self.last_resolution, self.last_index = res, index
        self.frames_sent += 1
        self.idle = False
        if self.on_frame is not None:
            self.on_frame(self)
        return key

    def _run(self) -> None:
        key = None
        was_playing = False
        while not self._stop.is_set():
            try:
                new_key = self._step(key)
            except Exception as err:  # a dropped connection or a bad control must not kill the server
                if self._stop.is_set():
                    break
                self.report_error(err)
                new_key = key
                self._stop.wait(0.5)
            playing = self.playback.playing
            if was_playing and not playing and self.on_playback_end is not None:
                self.on_playback_end(self)
            was_playing = playing
            if new_key == key:  # nothing new: sleep until a change, the settle time or the next frame
                with self._lock:
                    left = self.settings.settle - (time.monotonic() - self._moved_at)
                if not playing and left <= 0 and not self.idle:
                    self.idle = True
                    if self.on_idle is not None:
                        self.on_idle(self)
                timeout = 0.5
                if playing:
                    timeout = 0.5 / max(self.playback.fps, 1.0)
                elif left > 0:
                    timeout = left + 0.01
                self._wake.wait(timeout)
                self._wake.clear()
            key = new_key

    def report_error(self, err: Exception) -> None:
        """Shown in the page when the panel is attached (set by the panel), else printed."""
        print(f"[avatar3d view] {type(err).__name__}: {err}", flush=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="avatar3d-view-session", daemon=True)
        self._thread.start()

    def close(self, wait: float = 0.0) -> None:
        """Stop the loop; with `wait`, give a frame being rendered that long to finish."""
        self._stop.set()
        self._wake.set()
        if wait > 0 and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)


def _room_by_default(avatar) -> bool:
    """A portrait opens in front of its room; a head avatar (or a damaged plate) over the colour."""
    from avatar3d.errors import InputError

    try:
        return bool(avatar.is_portrait and avatar.plate is not None)
    except InputError:
        return False
