"""The viewer without a browser: the server starts locally and serves the page, uploads are validated and
stay in AVATAR/uploads/, the panel's state maps to the right `Controls`, and a render step reacts to them."""
from __future__ import annotations

import io
import math
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser")

from avatar3d.drive.controls import Controls  # noqa: E402
from avatar3d.errors import InputError  # noqa: E402
from avatar3d_viewer.audio_html import audio_element, wav_bytes  # noqa: E402
from avatar3d_viewer.camera_map import orbit_from_position, position_from_orbit  # noqa: E402
from avatar3d_viewer.frames import fit_aspect, widen_with_plate  # noqa: E402
from avatar3d_viewer.playback import Playback  # noqa: E402
from avatar3d_viewer.state import GAZE_CAMERA, GAZE_SLIDERS, ViewState, to_controls  # noqa: E402
from avatar3d_viewer.uploads import save_upload, speech_files  # noqa: E402

RES = 64


@pytest.fixture(scope="session")
def tiny_avatar(tmp_path_factory, tiny_avatar_factory) -> Path:
    """A synthetic avatar trained for a few dozen steps (seconds on a CPU): enough to render and compare."""
    return tiny_avatar_factory(tmp_path_factory.mktemp("viewer_avatar"), resolution=RES)


@pytest.fixture(scope="session")
def loaded(tiny_avatar):
    from avatar3d.api import Avatar

    return Avatar.load(tiny_avatar, device="cpu")


def _tone(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000.0
    return wav_bytes(0.3 * np.sin(2 * math.pi * rng.uniform(150, 400) * t))


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------------- server
def test_server_binds_localhost_and_serves_the_page(loaded, tiny_avatar):
    from avatar3d_viewer.app import ViewerApp

    app = ViewerApp(loaded, tiny_avatar, port=0)
    try:
        assert app.server.get_host() == "127.0.0.1"
        assert app.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(app.url, timeout=30).read().decode("utf-8", "replace")
        assert "<html" in page.lower()
    finally:
        app.stop()


def test_other_hosts_warn():
    from avatar3d_viewer.app import check_host

    import warnings

    assert check_host("127.0.0.1") is None and check_host("localhost") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command prints the text once; no second copy as a Python warning
        assert "anyone" in check_host("0.0.0.0") and "0.0.0.0" in check_host("0.0.0.0")


def test_command_refuses_bad_options_before_starting(tiny_avatar):
    from avatar3d.commands.view import ViewConfig, main

    with pytest.raises(InputError, match="preview"):
        main(ViewConfig(tiny_avatar, preview_resolution=1024, resolution=512))
    with pytest.raises(InputError, match="port"):
        main(ViewConfig(tiny_avatar, port=70000))


# ---------------------------------------------------------------------------------------------- uploads
def test_upload_accepts_audio_into_uploads_only(tiny_avatar, seed):
    before = _files_under(tiny_avatar.parent)
    path = save_upload(tiny_avatar, "hello there.wav", _tone(0.5, seed))
    assert path == tiny_avatar.resolve() / "uploads" / "hello there.wav"
    assert path.read_bytes()[:4] == b"RIFF"
    new = _files_under(tiny_avatar.parent) - before
    assert all(tiny_avatar / "uploads" in p.parents or p == tiny_avatar / "uploads" for p in new), new
    assert path in [p.resolve() for p in speech_files(tiny_avatar)]
    path.unlink()


@pytest.mark.parametrize("name", ["../evil.wav", "sub/dir.wav", "..\\evil.wav", "/etc/passwd.wav", "..", ".hidden.wav",
                                  "a\x00b.wav"])
def test_upload_refuses_names_with_path_parts(tiny_avatar, seed, name):
    before = _files_under(tiny_avatar.parent.parent)
    with pytest.raises(InputError, match="rename"):
        save_upload(tiny_avatar, name, _tone(0.2, seed))
    assert _files_under(tiny_avatar.parent.parent) - before <= {tiny_avatar / "uploads"}


def test_upload_refuses_non_audio_and_oversize(tiny_avatar, seed):
    rng = np.random.default_rng(seed)
    before = _files_under(tiny_avatar.parent)
    with pytest.raises(InputError, match="not an audio file"):
        save_upload(tiny_avatar, "notes.txt", b"hello")
    with pytest.raises(InputError, match="audio") as refused:  # right suffix, wrong content
        save_upload(tiny_avatar, "fake.wav", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="audio") as text_refused:  # a text file named .wav
        save_upload(tiny_avatar, "notes.wav", b"these are my notes, not a recording\n" * 30)
    for message in (str(refused.value), str(text_refused.value)):  # the user's name only: no temp name, no paths
        assert ".tmp" not in message and str(tiny_avatar) not in message and "/" not in message
        assert message.endswith("speech recording")  # whole, not cut off
    with pytest.raises(InputError, match="limit"):
        save_upload(tiny_avatar, "long.wav", _tone(1.0, seed), max_bytes=1000)
    left = _files_under(tiny_avatar.parent) - before
    assert left <= {tiny_avatar / "uploads"}, left  # at most the (empty) uploads folder, no temp files


# ---------------------------------------------------------------------------------------------- state
def test_state_maps_to_controls(seed):
    rng = np.random.default_rng(seed)
    yaw, pitch, hy, hp, hr, gy, gp, jaw = rng.uniform(-30, 30, 8)
    state = ViewState(yaw=yaw, pitch=pitch, distance=0.9, head_yaw=hy, head_pitch=hp, head_roll=hr,
                      gaze_mode=GAZE_SLIDERS, gaze_yaw=gy, gaze_pitch=gp, jaw_open=jaw,
                      expression={"mouthSmile_L": 0.5, "eyeBlink_L": 0.0}, expressiveness=1.5, blink="off")
    c = to_controls(state)
    assert isinstance(c, Controls)
    assert (c.yaw, c.pitch, c.distance) == pytest.approx((yaw, pitch, 0.9))
    assert c.head_pose is None and c.head_offset == pytest.approx((hy, hp, hr)) and not c.still_head
    assert c.gaze == pytest.approx((gy, gp))
    assert c.jaw_open == pytest.approx(jaw) and c.expressiveness == 1.5 and c.blink == "off"
    assert c.expression == {"mouthSmile_L": 0.5}  # zero edits are dropped
    state.still_head, state.gaze_mode = True, GAZE_CAMERA
    c = to_controls(state)
    assert c.still_head and c.head_pose == pytest.approx((hy, hp, hr)) and c.head_offset == (0.0, 0.0, 0.0)
    assert c.gaze == "camera"
    assert to_controls(ViewState()).gaze is None and to_controls(ViewState()).distance is None


def test_browser_camera_round_trips_to_orbit_angles(seed):
    rng = np.random.default_rng(seed)
    yaw, pitch, dist = rng.uniform(-170, 170), rng.uniform(-80, 80), rng.uniform(0.2, 3.0)
    target = rng.normal(size=3)
    got = orbit_from_position(position_from_orbit(yaw, pitch, dist) + target, target)
    assert got == pytest.approx((yaw, pitch, dist), abs=1e-6)
    # a camera moved towards +x (the subject's left) has a positive yaw, one above the head a positive pitch
    assert orbit_from_position((1.0, 0.0, 1.0))[0] == pytest.approx(45.0)
    assert orbit_from_position((0.0, 1.0, 1.0))[1] == pytest.approx(45.0)


def test_fit_aspect_keeps_the_square_centred(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    wide = fit_aspect(img, 2.0, (1.0, 0.0, 0.0))
    assert wide.shape == (32, 64, 3) and np.array_equal(wide[:, 16:48], img)
    assert (wide[:, 0] == (255, 0, 0)).all()
    tall = fit_aspect(img, 0.5, (1.0, 1.0, 1.0))
    assert tall.shape == (32, 16, 3) and np.array_equal(tall, img[:, 8:24])


def test_a_wide_canvas_shows_more_of_the_room(seed):
    """With the room behind, a wide canvas is the same camera's wider view of the plate: the render in the middle,
    the plate's own pixels beside it (here the plate's camera is the view's, so column c shows plate column
    c - left)."""
    import torch

    from avatar3d.camera import Camera
    from avatar3d.render.plate import BackgroundPlate

    rng = np.random.default_rng(seed)
    plate = BackgroundPlate(rng.integers(0, 256, (32, 96, 3), dtype=np.uint8),
                            np.array([[40.0, 0, 48.0], [0, 40.0, 16.0], [0, 0, 1]]), np.eye(4), 2.0)
    K = torch.tensor([[40.0, 0, 16.0], [0, 40.0, 16.0], [0, 0, 1]])
    camera = Camera(K, torch.eye(4), 32, 32)
    img = plate.render(K, camera.viewmat, 32, 32)
    np.testing.assert_array_equal(img, plate.image[:, 32:64])
    img[10:20, 10:20] = 0  # the avatar
    wide = widen_with_plate(img, plate, camera, 2.0)
    assert wide.shape == (32, 64, 3) and np.array_equal(wide[:, 16:48], img)
    np.testing.assert_array_equal(wide[:, :16], plate.image[:, 16:32])
    assert widen_with_plate(img, plate, camera, 0.5).shape == (32, 16, 3)


def test_room_falls_back_to_the_colour_without_a_plate():
    from avatar3d_viewer.frames import view_background

    state = ViewState(room=True, background=(0.0, 0.5, 1.0))
    assert view_background(type("A", (), {"plate": None})(), state) == (0.0, 0.5, 1.0)
    assert view_background(type("A", (), {"plate": object()})(), state) == "plate"


def test_playback_clock_follows_the_sound():
    now = [100.0]
    pb = Playback(clock=lambda: now[0])
    pb.load(50, 25.0, has_sound=True)
    pb.play(at=100.2)  # provisional start
    now[0] = 100.3
    assert pb.index() == 2
    pb.sync(at=100.25)  # the browser reports the sound started here
    assert pb.index() == 1 and pb.index(lead=0.2) == 6
    now[0] = 103.0  # past the end: a clip with sound stops and rewinds
    assert pb.index() == 0 and not pb.playing
    pb.load(10, 10.0, has_sound=False)
    pb.play(at=103.0)
    now[0] = 104.25  # silent sequences loop
    assert pb.index() == 2


def test_audio_element_reports_its_start():
    html = audio_element(np.zeros(1600, np.float32), "abc-123", token=7)
    assert "autoplay" in html and "onplaying" in html and "getElementById('abc-123')" in html
    with wave.open(io.BytesIO(wav_bytes(np.zeros(1600, np.float32))), "rb") as w:
        assert w.getframerate() == 16000 and w.getnframes() == 1600


# ---------------------------------------------------------------------------------------------- render step
def test_render_step_reacts_to_gaze_and_distance(loaded):
    from avatar3d_viewer.session import RenderSettings, Session
    from avatar3d_viewer.sources import Sources

    session = Session(loaded, Sources(loaded, loaded.path), RenderSettings(resolution=RES, preview_resolution=32))
    base = session.render(2 * RES).astype(np.int16)  # the tiny avatar's eyes need a few more pixels
    assert base.shape == (2 * RES, 2 * RES, 3)
    session.state.gaze_mode, session.state.gaze_yaw = GAZE_SLIDERS, 30.0
    gazed = session.render(2 * RES).astype(np.int16)
    assert (np.abs(gazed - base).max(-1) > 10).sum() >= 10  # the pupils moved
    session.state.gaze_mode = "as driven"
    session.state.distance = 2.0 * loaded.enrolled_distance
    far = session.render(2 * RES).astype(np.int16)
    bg = np.array([255, 255, 255])
    covered = lambda img: int((np.abs(img - bg).sum(-1) > 30).sum())  # noqa: E731
    assert covered(far) < 0.5 * covered(base)  # twice as far: about a quarter of the area
    # the browser's camera drives the same state: orbiting to the side changes the picture
    session.state.distance = loaded.enrolled_distance
    session.set_camera(position_from_orbit(40.0, 0.0, loaded.enrolled_distance), (0.0, 0.0, 0.0), aspect=1.5)
    side = session.render(RES)
    assert side.shape == (RES, round(1.5 * RES), 3) and session.state.yaw == pytest.approx(40.0)


def test_session_streams_preview_then_full_resolution(loaded):
    from avatar3d_viewer.session import RenderSettings, Session
    from avatar3d_viewer.sources import Sources

    class FakeScene:
        def __init__(self):
            self.sizes = []

        def set_background_image(self, image, format="jpeg", jpeg_quality=None):
            self.sizes.append(image.shape[0])

    class FakeClient:
        scene = FakeScene()

    client = FakeClient()
    session = Session(loaded, Sources(loaded, loaded.path), RenderSettings(resolution=RES, preview_resolution=32,
                                                                          settle=30.0), client=client)
    session.changed()  # a control moved just now
    key = session._step(None)
    assert client.scene.sizes == [32]
    assert session._step(key) == key  # nothing changed: nothing sent
    session._moved_at -= 60.0  # as if the last change were a minute ago (no sleeping in tests)
    session._step(key)
    assert client.scene.sizes == [32, RES]  # still for longer than `settle`: full resolution


def test_recording_writes_the_view_with_its_sound_and_controls(loaded, tiny_avatar):
    import json

    import av

    from avatar3d_viewer.recorder import record_clip

    params = loaded.tracked()
    state = ViewState(distance=1.3 * loaded.enrolled_distance, gaze_mode=GAZE_CAMERA, yaw=20.0)
    seen = []
    path = record_clip(loaded, params, state, tiny_avatar, resolution=RES, source="enrolled", progress=seen.append)
    try:
        assert path.parent == tiny_avatar / "recordings" and seen[-1] == pytest.approx(1.0)
        with av.open(str(path)) as container:
            kinds = {s.type for s in container.streams}
            frames = sum(1 for _ in container.decode(video=0))
        assert kinds == {"video", "audio"} and frames == len(params)
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["controls"]["yaw"] == 20.0 and record["controls"]["gaze_mode"] == GAZE_CAMERA
    finally:
        for p in (path, path.with_suffix(".json")):
            p.unlink(missing_ok=True)


def test_two_recordings_in_the_same_second_both_survive(loaded, tiny_avatar):
    import threading

    from avatar3d_viewer.recorder import record_clip

    params = loaded.tracked()
    folder = tiny_avatar / "recordings"
    folder.mkdir(exist_ok=True)
    before = set(folder.glob("*.mp4"))
    start, paths, errors = threading.Barrier(2), [], []

    def record(yaw: float) -> None:
        try:
            start.wait()
            paths.append(record_clip(loaded, params, ViewState(distance=loaded.enrolled_distance, yaw=yaw),
                                     tiny_avatar, resolution=32, source="enrolled"))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=record, args=(yaw,)) for yaw in (-20.0, 20.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        assert len(set(paths)) == 2 and set(folder.glob("*.mp4")) - before == set(paths)
        import json

        yaws = sorted(json.loads(p.with_suffix(".json").read_text())["controls"]["yaw"] for p in paths)
        assert yaws == [-20.0, 20.0]  # each clip kept its own controls: neither overwrote the other
        assert not list(folder.glob(".*.reserved"))
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)
