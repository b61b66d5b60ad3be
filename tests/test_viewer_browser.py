"""The viewer in a real browser (opt-in): headless Chromium opens the page, the first frame arrives, the gaze
and distance sliders change the picture, the enrolled clip plays with its sound reporting its start.

Run with `AVATAR3D_BROWSER_TEST=1 python -m pytest tests/test_viewer_browser.py` (needs Debian's `chromium`
and `chromium-driver` packages and `pip install selenium`). WebGL runs on SwiftShader (software). The
screenshot lands in outputs/viewer_screenshot.png.
"""
from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("AVATAR3D_BROWSER_TEST") != "1":
    pytest.skip("browser test is opt-in: set AVATAR3D_BROWSER_TEST=1 (needs chromium, chromium-driver, selenium)",
                allow_module_level=True)
pytest.importorskip("viser")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium to run the browser test")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium and chromedriver are not on PATH (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "outputs" / "viewer_screenshot.png"
TIMEOUT = 120.0  # seconds for anything the browser does (software WebGL on a loaded CPU is slow)


def _wait(predicate, what: str, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def viewer(tmp_path_factory, tiny_avatar_factory):
    from avatar3d.api import Avatar
    from avatar3d_viewer.app import ViewerApp
    from avatar3d_viewer.session import RenderSettings
    path = tiny_avatar_factory(tmp_path_factory.mktemp("browser_avatar"), resolution=64)
    app = ViewerApp(Avatar.load(path, device="cpu"), path, port=0,
                    settings=RenderSettings(resolution=192, preview_resolution=96, settle=0.3))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-gl=angle",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1100,800",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _canvas(driver) -> np.ndarray:  # -> [H,W,3] uint8, the 3D view only (the panel's fps text changes)
    from PIL import Image

    canvas = driver.find_elements(By.TAG_NAME, "canvas")[0]
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")).astype(np.int16)


def _settled(session, after: int, resolution: int):
    """Wait until a frame newer than `after` at `resolution` is sent and nothing more is pending."""
    _wait(lambda: session.frames_sent > after and session.last_resolution == resolution, "the settled frame")
    time.sleep(1.5)  # the browser decodes and draws the JPEG
    return session.frames_sent


def _move_slider(driver, handle, key) -> None:
    thumb = driver.find_element(By.ID, handle._impl.uuid).find_element(By.CSS_SELECTOR, "[role=slider]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", thumb)
    thumb.send_keys(key)


def test_viewer_in_headless_chromium(viewer, browser):
    browser.get(viewer.url)
    session = _wait(lambda: next(iter(viewer.sessions.values()), None), "the tab to connect")
    _wait(lambda: session.frames_sent >= 1, "the first rendered frame")
    full = viewer.settings.resolution
    sent = _settled(session, 0, full)
    before = _canvas(browser)
    assert before.std() > 5, "the 3D view shows a flat colour: the frame did not reach the canvas"

    _move_slider(browser, session.panel.gaze_yaw, Keys.END)  # eyes fully to one side
    _wait(lambda: session.state.gaze_mode == "set by the sliders" and session.state.gaze_yaw > 30, "the gaze")
    sent = _settled(session, sent, full)
    gazed = _canvas(browser)
    assert (np.abs(gazed - before).max(-1) > 10).sum() > 5, "moving the gaze slider did not change the picture"

    _move_slider(browser, session.panel.distance, Keys.END)  # camera as far as it goes
    _wait(lambda: session.state.distance > 2.0 * viewer.avatar.enrolled_distance, "the distance")
    sent = _settled(session, sent, full)
    far = _canvas(browser)
    background = far[2, 2]
    covered = lambda img: int((np.abs(img - background).sum(-1) > 30).sum())  # noqa: E731
    assert covered(far) < 0.6 * covered(gazed), "moving the camera away did not make the head smaller"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    reset = browser.find_element(By.ID, session.panel.reset_view._impl.uuid)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", reset)
    reset.click()
    _wait(lambda: abs(session.state.distance - viewer.avatar.enrolled_distance) < 1e-3, "the view reset")
    _settled(session, sent, full)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_enrolled_clip_plays_with_sound_in_sync(viewer, browser):
    session = next(iter(viewer.sessions.values()))
    panel = session.panel
    panel.source.value = "enrolled video (with its sound)"  # as if picked in the dropdown
    _wait(lambda: session.params.audio is not None, "the enrolled sequence")
    play = browser.find_element(By.ID, panel.play._impl.uuid)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", play)
    play.click()
    # the <audio> element reports its start by clicking the sync button: the clock follows the sound
    _wait(lambda: session.playback.syncs >= 1, "the browser to report that the sound started", timeout=60)
    _wait(lambda: session.last_index > 0, "frames of the playing clip")
    assert browser.find_elements(By.TAG_NAME, "audio"), "no <audio> element in the page"


def _page_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_uploads_are_checked_in_the_page(viewer, browser, tmp_path, seed):
    from avatar3d_viewer.audio_html import wav_bytes

    session = next(iter(viewer.sessions.values()))
    before = {p for p in viewer.avatar_dir.parent.rglob("*")}
    bad = tmp_path / "notes.txt"
    bad.write_text("not a sound")
    file_input = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
    file_input.send_keys(str(bad))
    _wait(lambda: "not an audio file" in _page_text(browser), "the refusal message in the page")
    assert not (viewer.avatar_dir / "uploads" / "notes.txt").exists()

    rng = np.random.default_rng(seed)
    good = tmp_path / "hello.wav"
    good.write_bytes(wav_bytes(0.2 * np.sin(np.arange(8000) / 16000.0 * 2 * np.pi * rng.uniform(150, 300))))
    file_input = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
    file_input.send_keys(str(good))
    _wait(lambda: (viewer.avatar_dir / "uploads" / "hello.wav").is_file(), "the upload to be stored")
    assert "speech: hello.wav" in session.panel.source.options
    # the tiny avatar has no audio model: picking the speech says how to get one, in the page
    _wait(lambda: "audio2expr" in _page_text(browser), "the message about the missing audio model")
    new = {p for p in viewer.avatar_dir.parent.rglob("*")} - before
    assert all(viewer.avatar_dir / "uploads" in (p, *p.parents) for p in new), new


def test_tabs_are_independent_and_closing_one_keeps_the_server(viewer, browser):
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(viewer.url)
    _wait(lambda: len(viewer.sessions) == 2, "the second tab to connect")
    second = [s for s in viewer.sessions.values() if s.panel is not None][-1]
    _wait(lambda: second.frames_sent >= 1, "the second tab's first frame")
    browser.close()
    browser.switch_to.window(first)
    _wait(lambda: len(viewer.sessions) == 1, "the closed tab to disconnect")
    remaining = next(iter(viewer.sessions.values()))
    sent = remaining.frames_sent
    remaining.state.head_yaw = 20.0
    remaining.changed()
    _wait(lambda: remaining.frames_sent > sent, "the open tab to keep rendering")
