"""One rendered view: the avatar at a frame of a sequence, under a tab's controls, fitted to its canvas."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np

from avatar3d_viewer.state import ViewState, to_controls


class RenderQueue:
    """Every render of the server, one at a time, in the order asked, on one worker thread.

    One at a time: on a CPU every render already uses all cores, and on a GPU it keeps the memory bounded.
    First come, first served: with many tabs each waits its turn (a lock lets some tabs wait far longer than
    others). One thread: its OpenMP team and memory arenas are made once and reused, instead of one of each for
    every tab's thread (which grew the server's memory with every round of tabs opened and closed).
    `waiting()` tells a tab how many renders are ahead of it, for the readout.
    """

    def __init__(self):
        self._jobs: "queue.Queue[tuple[Callable, Future]]" = queue.Queue()
        self._pending = 0
        self._count_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="avatar3d-view-render", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as err:  # handed to the tab that asked
                    future.set_exception(err)
            with self._count_lock:
                self._pending -= 1

    def run(self, fn: Callable):
        """fn() on the render thread, after every render asked before it; returns its result (or raises)."""
        if threading.current_thread() is self._worker:  # a render asking for a render: run it here
            return fn()
        future: Future = Future()
        with self._count_lock:
            self._pending += 1
        self._jobs.put((fn, future))
        return future.result()

    def waiting(self) -> int:
        """Renders asked for and not finished (the one running included)."""
        with self._count_lock:
            return self._pending


RENDERS = RenderQueue()


def fit_aspect(image: np.ndarray, aspect: float, background: Sequence[float]) -> np.ndarray:
    # image: [R,R,3] uint8 -> [R, round(R*aspect), 3] uint8
    """Pad (wide canvas) or crop (tall canvas) a square render to the canvas aspect width/height, keeping the
    vertical field of view: the browser stretches the background image over the whole canvas."""
    h, w = image.shape[:2]
    if not np.isfinite(aspect) or aspect <= 0:
        return image
    width = max(2, int(round(h * float(aspect))))
    if width == w:
        return image
    if width < w:
        left = (w - width) // 2
        return np.ascontiguousarray(image[:, left:left + width])
    fill = np.clip(np.round(np.asarray(background, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    out = np.empty((h, width, 3), np.uint8)
    out[:] = fill
    left = (width - w) // 2
    out[:, left:left + w] = image
    return out


def view_background(avatar, state: ViewState):
    """What the tab renders behind the avatar: "plate" (its room) when asked for and it has one, else the colour."""
    if state.room and avatar.plate is not None:
        return "plate"
    return tuple(float(c) for c in state.background)


def widen_with_plate(image: np.ndarray, plate, camera, aspect: float) -> np.ndarray:
    # image: [R,R,3] uint8 -> [R, round(R*aspect), 3] uint8
    """A wide canvas filled by the same camera's view of the plate (wider, same focal length), the render in its
    centre; a tall one is cropped as fit_aspect does."""
    h, w = image.shape[:2]
    width = max(2, int(round(h * float(aspect)))) if np.isfinite(aspect) and aspect > 0 else w
    if width <= w:
        return fit_aspect(image, aspect, (1.0, 1.0, 1.0))
    left = (width - w) // 2
    K = np.asarray(camera.K.detach().cpu(), np.float64).copy()
    K[0, 2] += left
    out = plate.render(K, camera.viewmat, width, h)
    out[:, left:left + w] = image
    return out


def render_view(avatar, params, index: int, state: ViewState, resolution: int, aspect: float = 1.0,
                progress: float = 0.0) -> np.ndarray:  # -> [R, R*aspect, 3] uint8
    """Frame `index` of `params` (a DriveParams) as the tab with `state` sees it."""
    index = min(max(int(index), 0), len(params) - 1)
    background = view_background(avatar, state)
    controls = to_controls(state)
    frame = RENDERS.run(lambda: avatar.render_frame(params, index, controls=controls, resolution=int(resolution),
                                                    background=background, progress=progress))
    if background == "plate":
        return widen_with_plate(np.asarray(frame.image), avatar.plate, frame.camera, aspect)
    return fit_aspect(np.asarray(frame.image), aspect, background)
