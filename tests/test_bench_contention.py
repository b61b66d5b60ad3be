"""The contention benchmark's mechanics, on stand-in jobs (the real figures come from `avatar3d bench contention`)."""
from __future__ import annotations

import sys

import pytest

from avatar3d.benchmarks import contention
from avatar3d.errors import Avatar3DError


def _sleeper(seconds: float):
    def command(kind, cfg, folder, avatar):
        return [sys.executable, "-c", f"import time, pathlib; pathlib.Path({str(folder)!r}).mkdir(exist_ok=True); "
                                      f"time.sleep({seconds})"]
    return command


def test_slowdowns_of_jobs_that_do_not_compete(tmp_path, monkeypatch):
    monkeypatch.setattr(contention, "_command", _sleeper(0.3))
    cfg = contention.BenchContentionConfig(out=tmp_path / "b", json=tmp_path / "r.json", jobs=("demo",), peer=True)
    lines = []
    result = contention.run_contention_bench(cfg, say=lines.append)
    (job,) = result["jobs"]
    assert len(job["together_s"]) == 2 and len(job["peer_together_s"]) == 2
    assert all(0.5 < s < 2.0 for s in job["slowdown"])  # sleeping jobs do not slow each other much
    assert result["within_limit"] and (tmp_path / "r.json").is_file()
    assert "peer worst" in lines[-1] and "within the limit" in lines[-1]


def test_a_failing_job_names_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(contention, "_command", lambda *a: [sys.executable, "-c", "raise SystemExit('boom')"])
    cfg = contention.BenchContentionConfig(out=tmp_path / "b", jobs=("demo",), peer=False)
    with pytest.raises(Avatar3DError, match=r"(?s)exit code 1.*alone-0.log.*boom"):
        contention.run_contention_bench(cfg, say=lambda _: None)
