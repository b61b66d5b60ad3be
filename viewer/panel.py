"""The control panel of one tab (viser GUI elements bound to its `Session`)."""
from __future__ import annotations

import html
import threading
import time
from pathlib import Path

from avatar3d.drive.emotion import EMOTIONS
from avatar3d.errors import Avatar3DError

from avatar3d_viewer.audio_html import audio_element
from avatar3d_viewer.camera_map import position_from_orbit
from avatar3d_viewer.recorder import record_clip
from avatar3d_viewer.sources import SPEECH_PREFIX, STILL
from avatar3d_viewer.state import GAZE_DRIVEN, GAZE_MODES, GAZE_SLIDERS
from avatar3d_viewer.upload_toast import UploadToasts
from avatar3d_viewer.uploads import AUDIO_SUFFIXES, save_upload


def element_id(handle) -> str:
    """The DOM id viser gives a GUI element (its uuid)."""
    return handle._impl.uuid


class Panel:
    """Builds the GUI in `client.gui` and keeps it and the session in step."""

    def __init__(self, session, client, avatar_dir: Path, max_upload_bytes: int):
        self.session, self.client = session, client
        self.avatar_dir = Path(avatar_dir)
        self.max_upload_bytes = int(max_upload_bytes)
        self._syncing = False  # True while the server itself sets GUI values (no feedback into the state)
        self._readout_at = 0.0
        self._audio_token = 0
        self._recording = False
        avatar, gui = session.avatar, client.gui
        d0 = float(avatar.enrolled_distance)

        self.readout = gui.add_markdown("starting…")
        self.message = gui.add_markdown("")

        with gui.add_folder("Play"):
            self.source = gui.add_dropdown("Sequence", session.sources.names(), initial_value=STILL)
            self.play = gui.add_button("Play", icon="player-play")
            self.upload = None
            if avatar.has_audio_model:
                self.upload = gui.add_upload_button("Upload speech", icon="upload",
                                                    mime_type="audio/*," + ",".join(AUDIO_SUFFIXES),
                                                    hint="a .wav/.mp3/.flac/.ogg recording; it is stored in the "
                                                         "avatar's uploads/ folder")
                self.toasts = UploadToasts(client)
            else:  # speech needs the avatar's audio-to-expression model
                gui.add_markdown("No speech playback: this avatar has no audio-to-expression model "
                                 "(`avatar3d train audio2expr AVATAR` makes one).")
            self.sync = gui.add_button("Resync sound", icon="refresh",
                                       hint="restart the animation clock at this moment (the sound reports its "
                                            "start here by itself)")
            self.audio = gui.add_html("")
        with gui.add_folder("Camera"):
            self.distance = gui.add_slider("Distance (m)", round(0.3 * d0, 2), round(3.0 * d0, 2), 0.01,
                                           round(d0, 2))
            self.reset_view = gui.add_button("Reset view", icon="focus-centered")
        with gui.add_folder("Head"):
            self.head_yaw = gui.add_slider("Yaw", -60.0, 60.0, 1.0, 0.0)
            self.head_pitch = gui.add_slider("Pitch", -40.0, 40.0, 1.0, 0.0)
            self.head_roll = gui.add_slider("Roll", -40.0, 40.0, 1.0, 0.0)
            self.still_head = gui.add_checkbox("Still head (sliders absolute)", False)
        with gui.add_folder("Eyes"):
            self.gaze_mode = gui.add_dropdown("Gaze", GAZE_MODES, initial_value=GAZE_DRIVEN)
            self.gaze_yaw = gui.add_slider("Gaze yaw", -35.0, 35.0, 1.0, 0.0)
            self.gaze_pitch = gui.add_slider("Gaze pitch", -30.0, 30.0, 1.0, 0.0)
            self.blink = gui.add_dropdown("Blink", ("auto", "off"), initial_value="auto")
        with gui.add_folder("Face"):
            self.jaw = gui.add_slider("Jaw open (deg)", -5.0, 30.0, 0.5, 0.0)
            self.expressiveness = gui.add_slider("Expressiveness", 0.0, 2.0, 0.05, 1.0)
            self.emotion = gui.add_dropdown("Emotion", tuple(EMOTIONS), initial_value="neutral",
                                            hint="facial action units on this person's range; speech keeps the mouth")
            self.emotion_intensity = gui.add_slider("Intensity", 0.0, 2.0, 0.05, 1.0)
            names = avatar.expr_names or ["(none)"]
            self.expr_name = gui.add_dropdown("Expression", names, initial_value=names[0])
            self.expr_value = gui.add_slider("Amount", -1.0, 1.5, 0.05, 0.0, disabled=not avatar.expr_names)
            self.expr_reset = gui.add_button("Reset expressions")
            self.expr_list = gui.add_markdown("")
        with gui.add_folder("Look", expand_by_default=False):
            self.background = gui.add_rgb("Background", (255, 255, 255))
            plate, why = _plate_or_reason(avatar)
            self.room = gui.add_checkbox("Room behind", session.state.room, disabled=plate is None,
                                         hint="the background plate estimated from the enrollment video, seen by "
                                              "this camera" if plate is not None else why)
        with gui.add_folder("Record", expand_by_default=False):
            self.record = gui.add_button("Record clip (mp4)", icon="video",
                                         hint="the current sequence from this view, with these controls, into the "
                                              "avatar's recordings/ folder")
            self.record_status = gui.add_markdown("")
        self._wire()
        session.on_frame = self._on_frame
        session.on_idle = self._on_idle
        session.on_wait = self._on_wait
        session.on_playback_end = self._on_playback_end
        session.report_error = self.show_error

    # ------------------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        """Connect every control to the session's state (each handler marks the state changed)."""
        self._wire_head()
        self._wire_camera()
        self._wire_expressions()
        self._wire_playback()

    def _wire_head(self) -> None:
        """Head pose, still head, gaze, blinks, jaw and expressiveness."""
        s = self.session
        state = s.state

        def bind(handle, attr, convert=float):
            @handle.on_update
            def _(_event) -> None:
                if self._syncing:
                    return
                setattr(state, attr, convert(handle.value))
                s.changed()

        bind(self.head_yaw, "head_yaw")
        bind(self.head_pitch, "head_pitch")
        bind(self.head_roll, "head_roll")
        bind(self.still_head, "still_head", bool)
        bind(self.gaze_mode, "gaze_mode", str)
        bind(self.blink, "blink", str)
        bind(self.jaw, "jaw_open")
        bind(self.expressiveness, "expressiveness")
        bind(self.emotion, "emotion", str)
        bind(self.emotion_intensity, "emotion_intensity")

        for handle in (self.gaze_yaw, self.gaze_pitch):
            @handle.on_update
            def _(_event) -> None:
                if self._syncing:
                    return
                state.gaze_yaw, state.gaze_pitch = float(self.gaze_yaw.value), float(self.gaze_pitch.value)
                if state.gaze_mode != GAZE_SLIDERS:  # moving a gaze slider means: set the gaze by hand
                    state.gaze_mode = GAZE_SLIDERS
                    self._set(self.gaze_mode, GAZE_SLIDERS)
                s.changed()

    def _wire_camera(self) -> None:
        """Distance, the reset button and the browser's own camera."""
        s = self.session
        state = s.state

        @self.distance.on_update
        def _(_event) -> None:
            if self._syncing:
                return
            state.distance = float(self.distance.value)
            self._move_browser_camera()
            s.changed()

        @self.reset_view.on_click
        def _(_event) -> None:
            state.yaw = state.pitch = 0.0
            state.distance = float(s.avatar.enrolled_distance)
            self._set(self.distance, round(state.distance, 2))
            self._move_browser_camera()
            s.changed()

        @self.client.camera.on_update
        def _(camera) -> None:
            s.set_camera(camera.position, camera.look_at, camera.aspect)
            self._set(self.distance, round(min(max(s.state.distance, self.distance.min), self.distance.max), 2))

    def _wire_expressions(self) -> None:
        """The expression editor (a name, its value, reset)."""
        s = self.session
        state = s.state

        @self.expr_name.on_update
        def _(_event) -> None:
            self._set(self.expr_value, float(state.expression.get(self.expr_name.value, 0.0)))

        @self.expr_value.on_update
        def _(_event) -> None:
            if self._syncing or not s.avatar.expr_names:
                return
            state.expression[self.expr_name.value] = float(self.expr_value.value)
            self._show_expressions()
            s.changed()

        @self.expr_reset.on_click
        def _(_event) -> None:
            state.expression.clear()
            self._set(self.expr_value, 0.0)
            self._show_expressions()
            s.changed()

    def _wire_playback(self) -> None:
        """Background, the source, play/sync, upload and recording."""
        s = self.session
        state = s.state

        @self.background.on_update
        def _(_event) -> None:
            state.background = tuple(c / 255.0 for c in self.background.value)
            s.changed(moving=False)

        @self.room.on_update
        def _(_event) -> None:
            state.room = bool(self.room.value)
            s.changed(moving=False)

        @self.source.on_update
        def _(_event) -> None:
            if self._syncing:
                return
            self._stop_sound()
            self._say(f"preparing {self.source.value}…")
            try:
                s.set_source(self.source.value)
            except Avatar3DError as err:
                self.show_error(err)
                self._set(self.source, s.source_name)
                return
            self.play.label = "Play"
            self._say("")

        @self.play.on_click
        def _(_event) -> None:
            self.toggle_play()

        @self.sync.on_click
        def _(_event) -> None:
            s.playback.sync()  # the <audio> element clicks this when its sound starts

        if self.upload is not None:
            @self.upload.on_upload
            def _(_event) -> None:
                self.handle_upload(self.upload.value.name, self.upload.value.content)

        @self.record.on_click
        def _(_event) -> None:
            self.start_recording()

    # ------------------------------------------------------------------------------ actions
    def toggle_play(self) -> None:
        s = self.session
        if s.playback.playing:
            s.playback.pause()
            self._stop_sound()
            self.play.label = "Play"
            return
        if len(s.params) <= 1:
            self._say("the resting face is a still; pick the enrolled video or a speech file under Sequence")
            return
        s.playback.play(at=time.monotonic() + 0.15)  # provisional; the sound's own report corrects it
        if s.params.audio is not None:
            self._audio_token += 1
            self.audio.content = audio_element(s.params.audio, element_id(self.sync), self._audio_token)
        self.play.label = "Pause"
        s.changed(moving=False)

    def handle_upload(self, name: str, content: bytes) -> None:
        """Store a valid speech upload in AVATAR/uploads/ and select it; a bad one gets a message."""
        button = element_id(self.upload) if self.upload is not None else ""
        try:
            path = save_upload(self.avatar_dir, name, content, self.max_upload_bytes)
        except Avatar3DError as err:
            self.show_error(err)
            self.toasts.verdict(button, "Upload refused", str(err), ok=False)
            return
        self.toasts.verdict(button, f"Uploaded {path.name}", "stored in the avatar's uploads/ folder; preparing "
                                                             "the animation…", ok=True)
        options = self.session.sources.names()
        self._set_options(self.source, options)
        self._say(f"uploaded {path.name}; preparing the animation…")
        self.source.value = SPEECH_PREFIX + path.name  # triggers set_source through the dropdown's callback

    def start_recording(self) -> None:
        if self._recording:
            self._say("a recording is already running in this tab")
            return
        s = self.session
        self._recording = True
        self.record_status.content = "recording… 0%"
        params, state, source = s.params, s.state.copy(), s.source_name

        def work() -> None:
            try:
                path = record_clip(s.avatar, params, state, self.avatar_dir, resolution=s.settings.resolution,
                                   source=source, stop=s._stop.is_set,
                                   progress=lambda p: setattr(self.record_status, "content",
                                                              f"recording… {100 * p:.0f}%"))
                self.record_status.content = f"saved `{path.parent.name}/{path.name}` in the avatar's folder"
                try:
                    self.client.send_file_download(path.name, path.read_bytes())
                except Exception:  # the tab may be gone; the file is saved anyway
                    pass
            except Exception as err:  # shown in the page; the server keeps running
                self.record_status.content = "recording failed: " + html.escape(str(err))
            finally:
                self._recording = False

        threading.Thread(target=work, name="avatar3d-view-record", daemon=True).start()

    # ------------------------------------------------------------------------------ feedback
    def _on_frame(self, session) -> None:
        now = time.monotonic()
        full = session.last_resolution == session.settings.resolution
        if now - self._readout_at < 0.5 and not full:  # throttled while frames stream; the settled one always
            return
        self._readout_at = now
        self.readout.content = f"**{session.fps.fps(now):.1f} fps** · {self._last_frame(session)}"

    def _last_frame(self, session) -> str:
        pb = session.playback
        where = f"frame {session.last_index + 1}/{pb.num_frames}" + (" ▶" if pb.playing else "")
        tabs = session.tabs()
        shared = f" · {tabs} tabs share the renderer" if tabs > 1 else ""
        return (f"{session.last_resolution} px in {1000 * session.last_seconds:.0f} ms · {where} · "
                f"{session.avatar.num_gaussians} Gaussians{shared}")

    def _on_idle(self, session) -> None:
        """Nothing changes, so nothing is drawn: say so rather than leave the last fps standing as if live."""
        self.readout.content = f"**idle** (drawn when something changes) · last frame {self._last_frame(session)}"

    def _on_wait(self, session, ahead: int) -> None:
        """A frame that has to queue: why it takes long (one render at a time on this machine)."""
        now = time.monotonic()
        if now - self._readout_at >= 0.5:  # throttled like the fps readout
            self._readout_at = now
            self.readout.content = (f"**waiting**: {ahead} render{'s' if ahead != 1 else ''} of other tabs ahead "
                                    f"(one render at a time; {session.tabs()} tabs open)")

    def _on_playback_end(self, session) -> None:
        self.play.label = "Play"
        self._stop_sound()

    def show_error(self, err: Exception) -> None:
        # messages can quote an uploaded file's name: never let it become markup in the page
        self._say("⚠️ " + html.escape(str(err)))

    def _say(self, text: str) -> None:
        self.message.content = text

    def _stop_sound(self) -> None:
        self.audio.content = ""

    def _show_expressions(self) -> None:
        edits = {k: v for k, v in self.session.state.expression.items() if v != 0.0}
        self.expr_list.content = ", ".join(f"`{k}` {v:+.2f}" for k, v in edits.items())

    def _move_browser_camera(self) -> None:
        state = self.session.state
        with self.client.atomic():
            self.client.camera.look_at = (0.0, 0.0, 0.0)
            self.client.camera.position = position_from_orbit(state.yaw, state.pitch, state.distance)
            self.client.camera.look_at = (0.0, 0.0, 0.0)

    def _set(self, handle, value) -> None:
        self._syncing = True
        try:
            handle.value = value
        finally:
            self._syncing = False

    def _set_options(self, handle, options) -> None:
        self._syncing = True
        try:
            handle.options = options
        finally:
            self._syncing = False


def _plate_or_reason(avatar):
    """(the avatar's plate, or None with why: none made, or its files damaged; the viewer opens either way)."""
    from avatar3d.errors import InputError

    try:
        plate = avatar.plate
    except InputError as err:
        return None, str(err)
    return plate, "" if plate is not None else "this avatar has no background plate (re-enroll it for one)"
