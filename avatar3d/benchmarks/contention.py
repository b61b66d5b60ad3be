"""`avatar3d bench contention`: how two jobs share this machine, measured by running them.

For each job kind (an `avatar3d demo`, an `avatar3d train gaussians` of a copy of the demo's avatar), the
wall time of one job alone (median of `repeats`), then of two identical jobs started together. Each job runs
as its own `avatar3d` process with this process's environment, so it chooses its threads and wait policy as
any user's job would (avatar3d/runtime.py). The figure is each job's slowdown: its time in the pair over the
time alone. On a machine the pair saturates, two CPU-bound jobs sharing fairly take about 2x; far more means
they fight (spinning OpenMP threads, more threads than cores). Prints a table; writes JSON with --json:
{"cores", "env", "jobs": [{"job", "command", "alone_s", "together_s": [...], "slowdown": [...], "worst",
 "peer_together_s", "peer_worst"}], "limit", "within_limit"}. The peer (on by default) is the same pair run
the way jobs ran before avatar3d managed its threads: it shows what the figure would be without it.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from avatar3d.errors import Avatar3DError, InputError
from avatar3d.io.atomic import atomic_write_json
from avatar3d.runtime import CHOSEN_ENV, THREADS_ENV, available_cores

JobKind = Literal["demo", "train"]


@dataclass
class BenchContentionConfig:
    """Time two avatar3d jobs at once against one alone (table + optional JSON)."""

    out: Path = Path("outputs/bench_contention")
    """Work folder for the jobs' outputs and logs (made if missing; only its job sub-folders are replaced)."""
    json: Optional[Path] = None
    """Write the results as JSON to this file (atomically)."""
    jobs: tuple[JobKind, ...] = ("demo", "train")
    """Job kinds to measure: demo (the whole `avatar3d demo`) and train (`avatar3d train gaussians` of a copy of
    the demo's avatar)."""
    repeats: int = 1
    """Runs of each setting (alone, together); medians are reported."""
    demo_seconds: float = 3.0
    """Length of the demo's synthetic video (its default)."""
    demo_iterations: int = 1000
    """Training steps inside the demo (its default)."""
    train_iterations: int = 1000
    """Steps of the train job (the fast preset's schedule scaled to this many)."""
    limit: float = 2.5
    """A job's slowdown in the pair above this counts as a failure of graceful sharing."""
    peer: bool = True
    """Also time the pair as jobs ran before avatar3d managed its threads, for comparison in the same run:
    each job with every core (OMP_NUM_THREADS) and spinning waits (OMP_WAIT_POLICY=ACTIVE)."""


def _command(kind: JobKind, cfg: BenchContentionConfig, folder: Path, avatar: Path) -> list[str]:
    base = [sys.executable, "-m", "avatar3d.cli"]
    if kind == "demo":
        return base + ["demo", "--out", str(folder), "--seconds", str(cfg.demo_seconds),
                       "--iterations", str(cfg.demo_iterations)]
    return base + ["train", "gaussians", str(folder / "avatar"), "--preset", "fast",
                   "--iterations", str(cfg.train_iterations)]


def _prepare(kind: JobKind, folder: Path, avatar: Path) -> None:
    """A fresh job folder: a demo writes its own; a train job gets its own copy of the avatar."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if kind == "train":
        shutil.copytree(avatar, folder / "avatar")


def _unmanaged_env() -> dict:
    """The environment of the peer pair: every job takes every core and spins while it waits."""
    cores = str(available_cores())
    env = {**os.environ, "OMP_NUM_THREADS": cores, "OMP_WAIT_POLICY": "ACTIVE", THREADS_ENV: cores}
    env.pop(CHOSEN_ENV, None)  # else the job would take OMP_NUM_THREADS for our own choice and choose again
    return env


def _run_together(commands: list[list[str]], logs: list[Path], env: Optional[dict] = None) -> list[float]:
    """Start every command at once; each one's wall time in seconds. A failed job raises with its log."""
    start = time.perf_counter()
    handles = []
    for command, log in zip(commands, logs):
        stream = open(log, "w")
        handles.append((subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env), stream, log))
    seconds = []
    for proc, stream, log in handles:
        code = proc.wait()
        seconds.append(time.perf_counter() - start)
        stream.close()
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise Avatar3DError(f"a benchmark job failed (exit code {code}); its log is {log}:\n{tail}")
    return seconds


def _measure(kind: JobKind, cfg: BenchContentionConfig, avatar: Path, say) -> dict:
    root = cfg.out / kind
    alone, together = [], []
    for r in range(cfg.repeats):
        folder = root / f"alone-{r}"
        _prepare(kind, folder, avatar)
        alone += _run_together([_command(kind, cfg, folder, avatar)], [root / f"alone-{r}.log"])
        say(f"  {kind} alone, run {r + 1}: {alone[-1]:.1f} s")
    for r in range(cfg.repeats):
        folders = [root / f"pair-{r}-{i}" for i in (0, 1)]
        for folder in folders:
            _prepare(kind, folder, avatar)
        times = _run_together([_command(kind, cfg, f, avatar) for f in folders],
                              [root / f"pair-{r}-{i}.log" for i in (0, 1)])
        together += times
        say(f"  {kind} two at once, run {r + 1}: {times[0]:.1f} s and {times[1]:.1f} s")
    peer = []
    if cfg.peer:
        folders = [root / f"peer-{i}" for i in (0, 1)]
        for folder in folders:
            _prepare(kind, folder, avatar)
        peer = _run_together([_command(kind, cfg, f, avatar) for f in folders],
                             [root / f"peer-{i}.log" for i in (0, 1)], env=_unmanaged_env())
        say(f"  {kind} two at once, unmanaged threads (peer): {peer[0]:.1f} s and {peer[1]:.1f} s")
    base = statistics.median(alone)
    slowdown = [t / base for t in together]
    return {"job": kind, "command": " ".join(_command(kind, cfg, Path("DIR"), avatar)[1:]),
            "alone_s": round(base, 2), "together_s": [round(t, 2) for t in together],
            "slowdown": [round(s, 3) for s in slowdown], "worst": round(max(slowdown), 3),
            "peer_together_s": [round(t, 2) for t in peer],
            "peer_worst": round(max(peer) / base, 3) if peer else None}


def format_table(result: dict) -> str:
    lines = [f"cores: {result['cores']}   OMP_NUM_THREADS={result['env']['OMP_NUM_THREADS']}   "
             f"OMP_WAIT_POLICY={result['env']['OMP_WAIT_POLICY']}",
             f"{'job':<6} {'alone s':>9} {'two at once s':>22} {'slowdown':>16} {'worst':>7} {'peer worst':>11}"]
    for job in result["jobs"]:
        together = ", ".join(f"{t:.1f}" for t in job["together_s"])
        slowdown = ", ".join(f"{s:.2f}x" for s in job["slowdown"])
        peer = "n/a" if job["peer_worst"] is None else f"{job['peer_worst']:.2f}x"
        lines.append(f"{job['job']:<6} {job['alone_s']:>9.1f} {together:>22} {slowdown:>16} {job['worst']:>6.2f}x "
                     f"{peer:>11}")
    verdict = "within" if result["within_limit"] else "OVER"
    lines.append(f"every job {verdict} the limit of {result['limit']:.1f}x its time alone")
    lines.append("peer: the same pair with every core per job and spinning OpenMP waits (jobs before avatar3d "
                 "managed its threads)")
    return "\n".join(lines)


def run_contention_bench(cfg: BenchContentionConfig, say=print) -> dict:
    """Run the benchmark; returns the JSON-ready dict (and writes it to cfg.json when given)."""
    if cfg.repeats < 1:
        raise InputError("--repeats must be at least 1")
    if not cfg.jobs:
        raise InputError("--jobs is empty; give demo and/or train")
    cfg.out.mkdir(parents=True, exist_ok=True)
    setup = cfg.out / "setup"
    if "train" in cfg.jobs and not (setup / "avatar" / "gaussians.safetensors").is_file():
        say("making the avatar the train jobs copy (one demo run, not timed)")
        _prepare("demo", setup, setup)
        _run_together([_command("demo", cfg, setup, setup)], [cfg.out / "setup.log"])
    jobs = []
    for kind in dict.fromkeys(cfg.jobs):
        jobs.append(_measure(kind, cfg, setup / "avatar", say))
    result = {"cores": available_cores(),
              "env": {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
              "jobs": jobs, "limit": cfg.limit, "within_limit": all(j["worst"] <= cfg.limit for j in jobs)}
    say(format_table(result))
    if cfg.json is not None:
        atomic_write_json(cfg.json, result)
    return result


def main(cfg: BenchContentionConfig) -> int:
    """Entry point of `avatar3d bench contention`: exit code 1 when a job is slowed beyond the limit."""
    return 0 if run_contention_bench(cfg)["within_limit"] else 1
