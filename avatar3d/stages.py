"""Wall time per stage of the frame path, for `avatar3d bench render`.

The frame path marks its stages (`with stage("pose_rig"): ...`); while a `recording()` is open, each mark adds
its seconds to the recorder, from any thread (the clip's encoder runs in its own). With no recording open a
mark costs one global lookup. `add` records a time measured elsewhere (the native kernels' own timers).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator, Optional


class StageRecorder:
    """Seconds per stage, one entry per time the stage ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name].append(float(seconds))  # list.append is atomic: safe from the encoder thread


_recorder: Optional[StageRecorder] = None


def active() -> bool:
    """Whether a recording is open (callers skip gathering what only a recording needs)."""
    return _recorder is not None


def add(name: str, seconds: float) -> None:
    """Record `seconds` for `name` in the open recording, if any."""
    recorder = _recorder
    if recorder is not None:
        recorder.add(name, seconds)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage `name` while a recording is open."""
    recorder = _recorder
    if recorder is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        recorder.add(name, time.perf_counter() - started)


@contextlib.contextmanager
def recording() -> Iterator[StageRecorder]:
    """Open a recording for the block (one at a time in a process: the stages are the process's)."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("a stage recording is already open; close it before opening another")
    _recorder = StageRecorder()
    try:
        yield _recorder
    finally:
        _recorder = None
