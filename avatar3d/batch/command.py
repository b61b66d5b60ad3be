"""`avatar3d batch enroll` and `avatar3d batch render`: many single commands as one, on Ray (docs/batch.md)."""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from avatar3d.batch import runner, summary
from avatar3d.batch.jobs import Job
from avatar3d.config import Preset
from avatar3d.errors import InputError


@dataclass(kw_only=True)
class BatchCommon:
    """Where and how a batch runs (the same for enrollments and clips)."""

    options: str = ""
    """Options for every job, as the single command takes them (e.g. "--train.iterations 3000"); a row's own
    `options` come after them, so they win."""
    address: Optional[str] = None
    """A Ray cluster to run on: `auto` (the cluster this machine belongs to) or `ray://HEAD:10001` (Ray Client).
    Default: a Ray started for this batch on this machine's cores. On a cluster every path must be on a file
    system all its machines share."""
    local_cpus: Optional[int] = None
    """Without --address: the cores the batch's Ray may use (default: all of this machine's)."""
    cpus_per_job: Optional[float] = None
    """CPU cores each job reserves. Default: an enrollment a machine's cores (at most 8), a clip 1 core."""
    gpus_per_job: Optional[float] = None
    """GPUs each job reserves. Default where the cluster has GPUs: 1 per enrollment (it then trains with --device
    cuda) and 0.25 per clip; else 0."""
    json: Optional[Path] = None
    """Where the summary JSON goes (default: OUT/batch-enroll.json or OUT/batch-render.json)."""
    dry_run: bool = False
    """Check the jobs and list what would run and what is already done, then stop (Ray is not started)."""
    progress: bool = True
    """Show the overall progress bar with its ETA on stderr (the line per job is printed either way)."""


@dataclass
class BatchEnrollConfig(BatchCommon):
    videos: tyro.conf.Positional[Path]
    """A folder of talking videos (each becomes OUT/<its file name without the extension>) or a manifest (.csv or
    .yaml with columns video, name, preset, options: docs/batch.md)."""
    out: Path = Path("avatars")
    """The folder the avatars are written into, one sub-folder each (created when missing)."""
    preset: Preset = "default"
    """The preset of every enrollment whose row names none."""


@dataclass
class BatchRenderConfig(BatchCommon):
    jobs: tyro.conf.Positional[Path]
    """The clips to render: a .csv or .yaml with columns avatar, audio | drive_video | tracking, out, options
    (docs/batch.md). Relative paths are relative to this file's folder."""
    out: Path = Path("clips")
    """The folder the clips are written into (created when missing)."""


def _skipped(job: Job) -> dict:
    return job.result("skipped", "already done with these inputs and settings", has_log=False)


def _is_current(job: Job) -> bool:
    from avatar3d.batch.current import avatar_is_current, clip_is_current

    if job.kind == "render":
        return clip_is_current(job.output, job.key)
    return avatar_is_current(job.config)


def _out_folder(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder (it is created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _dry_run(jobs: list[Job], skipped: set) -> int:
    for job in jobs:
        state = "skip" if job.name in skipped else "run "
        print(f"{state} {job.name:<28} {job.command}")
    print(f"{len(jobs) - len(skipped)} to run, {len(skipped)} already done (dry run: nothing was started)")
    return 0


def _cancelled(jobs: list[Job], results: list[dict]) -> list[dict]:
    finished = {r["job"] for r in results}
    return results + [j.result("cancelled", "interrupted before it finished") for j in jobs if j.name not in finished]


def _finish(kind: str, jobs: list[Job], results: list[dict], json_path: Path, started: float, ray_start_s,
            settings: dict) -> dict:
    """Sort the results as the manifest, print the table, write the JSON; returns the counts."""
    order = {job.name: i for i, job in enumerate(jobs)}
    results.sort(key=lambda r: order[r["job"]])
    print(summary.table(results))
    summary.write_json(json_path, kind, results, wall_s=time.perf_counter() - started, ray_start_s=ray_start_s,
                       settings=settings)
    n = summary.counts(results)
    cancelled = f", {n['cancelled']} cancelled" if n["cancelled"] else ""
    print(f"{n['done']} done, {n['skipped']} skipped, {n['failed']} failed{cancelled} in "
          f"{time.perf_counter() - started:.0f} s; summary: {json_path}")
    return n


def run_batch(kind: str, jobs: list[Job], cfg: BatchCommon, out: Path, settings: dict) -> int:
    """Skip what is current, run the rest on Ray, print and save the summary; exit code 1 when any job failed."""
    from tqdm import tqdm

    started = time.perf_counter()
    current = {job.name for job in jobs if _is_current(job)}
    if cfg.dry_run:
        return _dry_run(jobs, current)
    json_path = _summary_path(cfg.json, _out_folder(out), kind)
    results = [_skipped(job) for job in jobs if job.name in current]
    # the skipped jobs start the bar (tqdm's rate, hence the ETA, counts only what runs after them)
    bar = tqdm(total=len(jobs), initial=len(results), unit="job", desc=f"batch {kind}", file=sys.stderr,
               disable=not cfg.progress, dynamic_ncols=True)
    finished = []

    def report(result: dict, ran: bool = True) -> None:
        finished.append(result)
        line = summary.job_line(result, len(finished), len(jobs))
        bar.write(line, file=sys.stderr) if cfg.progress else print(line, file=sys.stderr, flush=True)
        if ran:
            bar.update(1)

    for result in results:
        report(result, ran=False)
    todo = [job for job in jobs if job.name not in current]
    ray_start_s = None
    try:
        if todo:
            cluster, ray_start_s = runner.timed_start(cfg.address, cfg.local_cpus)
            resources = runner.choose_resources(kind, cluster, cfg.cpus_per_job, cfg.gpus_per_job)
            runner.say(f"{len(todo)} job(s) on Ray ({cluster['cpus']:g} cores, {cluster['gpus']:g} GPUs, started in "
                       f"{ray_start_s:.1f} s); each reserves {resources.cpus:g} core(s), {resources.gpus:g} GPU(s)")
            settings = {**settings, "cpus_per_job": resources.cpus, "gpus_per_job": resources.gpus,
                        "cluster": cluster}
            results += runner.run_jobs(todo, resources, report)
    except KeyboardInterrupt:
        bar.close()
        runner.stop_ray()
        _finish(kind, jobs, _cancelled(jobs, list(finished)), json_path, started, ray_start_s,
                settings)
        print(f"\navatar3d batch {kind}: interrupted. Finished jobs are kept; run the same command again: what is "
              f"done is skipped and an interrupted enrollment continues from its checkpoint", file=sys.stderr)
        return 130
    finally:
        runner.stop_ray()
    bar.close()
    n = _finish(kind, jobs, results, json_path, started, ray_start_s, settings)
    return 1 if n["failed"] else 0


def _summary_path(given: Optional[Path], out: Path, kind: str) -> Path:
    """Where the summary goes, checked before any job runs (a long batch must not end on a bad path)."""
    path = Path(given) if given is not None else out / f"batch-{kind}.json"
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"--json {path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}; pass a "
                         f"file path in an existing folder")
    return path


def main_enroll(cfg: BatchEnrollConfig) -> int:
    from avatar3d.batch.jobs import enroll_jobs

    options = _split_options(cfg.options)
    jobs = enroll_jobs(cfg.videos, cfg.out, cfg.preset, options)
    return run_batch("enroll", jobs, cfg, cfg.out, {"preset": cfg.preset, "options": options,
                                                "address": cfg.address, "source": str(cfg.videos)})


def main_render(cfg: BatchRenderConfig) -> int:
    from avatar3d.batch.jobs import render_jobs

    options = _split_options(cfg.options)
    jobs = render_jobs(cfg.jobs, cfg.out, options)
    return run_batch("render", jobs, cfg, cfg.out, {"options": options, "address": cfg.address,
                                                "source": str(cfg.jobs)})


def _split_options(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise InputError(f"--options {text!r} cannot be split into words ({err}); quote them as a shell would") \
            from err
