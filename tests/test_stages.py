"""The frame path's stage marks: silent without a recording, summed per stage with one, from any thread."""
from __future__ import annotations

import threading
import time

import pytest

from avatar3d import stages


def test_marks_record_only_inside_a_recording():
    with stages.stage("outside"):
        pass
    stages.add("outside", 1.0)
    assert not stages.active()
    with stages.recording() as recorder:
        assert stages.active()
        with stages.stage("work"):
            time.sleep(0.01)
        worker = threading.Thread(target=lambda: stages.add("encode", 0.5))  # the encoder's thread
        worker.start()
        worker.join()
        with pytest.raises(RuntimeError, match="already open"):
            with stages.recording():
                pass
    assert set(recorder.seconds) == {"work", "encode"} and recorder.seconds["encode"] == [0.5]
    assert 0.005 < recorder.seconds["work"][0] < 1.0
    assert not stages.active()


def test_a_failing_stage_is_still_timed_and_the_recording_closes():
    with pytest.raises(ValueError):
        with stages.recording() as recorder:
            with stages.stage("fails"):
                raise ValueError("boom")
    assert len(recorder.seconds["fails"]) == 1 and not stages.active()
