"""Running a batch's jobs on Ray: a local Ray on this machine's cores by default, or a cluster given its address.

Each job is one Ray task that declares what it needs (CPU cores; a GPU for an enrollment on a cluster that has
them), so Ray runs as many at once as the cores allow. A line is printed as each job finishes, under a bar with
an ETA. Ray's own retries cover a lost worker or node once; a job's own failure is not retried (it would fail
the same way).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

from avatar3d.batch.jobs import Job
from avatar3d.config import option_value
from avatar3d.errors import InputError

MAX_ENROLL_CPUS = 8  # an enrollment's training scales little past this; more cores run more jobs at once
OBJECT_STORE_BYTES = 128 << 20  # the jobs pass paths and small results, never frames
RETRIES_ON_LOST_WORKER = 1


@dataclass
class Resources:
    """What each job of a batch reserves."""

    cpus: float
    gpus: float


def start_ray(address: Optional[str], local_cpus: Optional[int] = None) -> dict:
    """Start a local Ray on `local_cpus` cores (default: all; address None) or connect to a cluster; returns what it
    has (cpus, gpus, the biggest machine's cores)."""
    try:
        import ray
    except ImportError as err:
        raise InputError("avatar3d batch runs its jobs on Ray, which is not installed: `pip install "
                         "'avatar3d[batch]'` (or `make`, which installs it)") from err
    from avatar3d.runtime import available_cores

    if local_cpus is not None and local_cpus < 1:
        raise InputError(f"--local-cpus {local_cpus}: give at least 1 core")
    quiet = dict(log_to_driver=False, logging_level="error")
    try:
        if address is None:
            ray.init(address="local", num_cpus=min(local_cpus or available_cores(), available_cores()),
                     include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as err:
        if address is None:
            raise InputError(f"a local Ray could not start ({err}); see `ray status`, or free memory and cores") \
                from err
        raise InputError(f"Ray could not connect to {address} ({err}); check the address (`ray status` on the "
                         f"cluster's head node), or leave --address out to run on this machine") from err
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return {"cpus": sum(n.get("CPU", 0) for n in nodes), "gpus": sum(n.get("GPU", 0) for n in nodes),
            "node_cpus": max((n.get("CPU", 0) for n in nodes), default=0),
            "node_gpus": max((n.get("GPU", 0) for n in nodes), default=0), "nodes": len(nodes)}


def choose_resources(kind: str, cluster: dict, cpus: Optional[float], gpus: Optional[float]) -> Resources:
    """A job's reservation: the user's, else an enrollment takes a node's cores (up to MAX_ENROLL_CPUS) and a GPU
    where there is one, a clip one core (and a quarter of a GPU where there is one)."""
    if cpus is None:
        cpus = min(MAX_ENROLL_CPUS, cluster["node_cpus"]) if kind == "enroll" else 1
    if gpus is None:
        gpus = (1.0 if kind == "enroll" else 0.25) if cluster["gpus"] > 0 else 0.0
    if not 0 < cpus <= cluster["node_cpus"]:
        raise InputError(f"--cpus-per-job {cpus:g}: each job must fit on one machine, which has at most "
                         f"{cluster['node_cpus']:g} cores here; pass 1..{cluster['node_cpus']:g}")
    if gpus < 0 or gpus > cluster["node_gpus"]:
        raise InputError(f"--gpus-per-job {gpus:g}: each job must fit on one machine, which has at most "
                         f"{cluster['node_gpus']:g} GPU(s) here; pass 0 to run on CPUs")
    return Resources(float(cpus), float(gpus))


def with_device(job: Job, resources: Resources) -> Job:
    """An enrollment that reserves a GPU trains on it (unless its options already pick a device)."""
    if job.kind != "enroll" or resources.gpus <= 0 or option_value(list(job.argv), "--device") is not None:
        return job
    return dataclasses.replace(job, argv=(*job.argv, "--device", "cuda"))


def _failure(job: Job, err: Exception) -> dict:
    first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
    return job.result("failed", f"its worker failed ({type(err).__name__}: {first[:300]})")


def run_jobs(jobs: list[Job], resources: Resources, report: Callable[[dict], None]) -> list[dict]:
    """Run every job on the Ray already started; `report(result)` as each finishes. Ctrl-C cancels what runs."""
    import ray

    from avatar3d.batch.task import run_job

    task = ray.remote(run_job).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                       max_retries=RETRIES_ON_LOST_WORKER)
    threads = max(1, int(resources.cpus))
    pending = {task.remote(with_device(job, resources), threads): job for job in jobs}
    results = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:
                    result = _failure(job, err)
                results.append(result)
                report(result)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results


def stop_ray() -> None:
    """Shut the batch's Ray down, if one was started (never imports Ray: it may not be installed)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def timed_start(address: Optional[str], local_cpus: Optional[int] = None) -> tuple[dict, float]:
    """start_ray and the seconds it took (the batch's start-up overhead)."""
    tic = time.perf_counter()
    cluster = start_ray(address, local_cpus)
    return cluster, time.perf_counter() - tic


def say(text: str) -> None:
    print(f"[batch] {text}", file=sys.stderr, flush=True)
