"""One job in a worker: its single command's code, its output into its log, and what came of it.

A job's failure stays its own: an expected one (a corrupt video, a face that is never found) ends with the
message the single command prints; anything else with its type and message, its traceback in the job's log.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, Optional

from avatar3d.batch.jobs import Job
from avatar3d.errors import InputError


@contextlib.contextmanager
def _logged(log: Path) -> Iterator[None]:
    """Python's stdout and stderr appended to `log` for the block (a worker runs one job at a time; an earlier,
    interrupted attempt's lines are kept above this one's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8", buffering=1) as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt", flush=True)
        yield


# a path through one of our hidden work folders (".NAME.tmp-...", ".NAME.staging", ...): internal, never shown
_TEMP_PATH = re.compile(r"[^\s'\"]*/\.[^/\s'\"]*\.(?:tmp-|old-|staging|reserved)[^\s'\"]*")


def _without_temp_paths(text: str) -> str:
    return _TEMP_PATH.sub("(a temporary file of the job)", text)


def _run_command(job: Job) -> tuple[str, Optional[str]]:
    """(status, message) of the job's command, run in this process."""
    from avatar3d import cli

    try:
        prog, verb, config = cli.parse(job.argv)
        print(f"$ {job.command}", flush=True)
        code, message = cli.execute(prog, verb, config)
    except InputError as err:
        return "failed", str(err)
    except Exception as err:  # noqa: BLE001  one job's fault must not end the batch
        traceback.print_exc()
        return "failed", f"{type(err).__name__}: {_without_temp_paths(str(err))} (the traceback is in {job.log.name})"
    if code != 0:
        return "failed", message or f"exit code {code} (see {job.log.name})"
    return "done", None


def _metric(job: Job, seconds: float) -> dict:
    """The figure a finished job reports: an avatar's held-out PSNR, a clip's frames per second (end to end)."""
    if job.kind == "enroll":
        try:
            summary = json.loads((job.output / "eval.json").read_text())
        except (OSError, ValueError):
            return {}
        value = summary.get("psnr_full")
        value = summary.get("psnr") if value is None else value  # a head has no portrait figure
        return {} if value is None else {"psnr": round(float(value), 2)}
    from avatar3d.io.media import VideoReader

    with VideoReader(job.output) as clip:
        frames = clip.num_frames
    return {"frames": frames, "fps": round(frames / max(seconds, 1e-9), 2)}


def run_job(job: Job, threads: int) -> dict:
    """Run `job` here with `threads` threads; returns its result (status, seconds, figure, message)."""
    from avatar3d.batch.current import record_clip
    from avatar3d.runtime import pin_threads

    pin_threads(threads)
    started = time.perf_counter()
    with _logged(job.log):
        status, message = _run_command(job)
        if message:
            print(f"avatar3d {job.argv[0]}: error: {message}", flush=True)
    seconds = time.perf_counter() - started
    result = job.result(status, message, seconds=round(seconds, 1))
    if status == "done":
        try:
            result.update(_metric(job, seconds))
        except Exception as err:  # noqa: BLE001  the output is there; only its figure could not be read
            result["message"] = f"done, but its figure could not be read ({type(err).__name__})"
        if job.kind == "render":
            record_clip(job.output, job.key, seconds=result["seconds"], fps=result.get("fps"))
    sys.stdout.flush()
    return result
