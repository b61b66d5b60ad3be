"""Process-wide runtime settings: how this process shares the CPU, and what native libraries may print.

`configure_process()` runs before torch loads (the CLI calls it first thing; Python API users may call it
before importing torch or numpy). It makes idle OpenMP threads sleep instead of spin, keeps numpy's BLAS to one
thread, and picks the thread count for the cores this process may use and what else is running on them. A
user's own settings win:
OMP_WAIT_POLICY, OMP_NUM_THREADS, or AVATAR3D_THREADS (our own override, also read by `adapt_threads`).

Why: spinning OpenMP threads (GNU OpenMP spins for a while after each parallel region) burn the cores another
job needs; with two enrollments on a 2-core machine one training step went from 0.05 to 2.5 s. Sleeping
waits cost almost nothing on an idle machine. Long loops call `adapt_threads()` now and then, which follows
the load as other jobs start and finish.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from typing import Iterator, Optional

THREADS_ENV = "AVATAR3D_THREADS"
VERBOSE_ENV = "AVATAR3D_VERBOSE"
# The OMP_NUM_THREADS value configure_process chose, so a child process (a benchmark's or a batch's job)
# that inherits it knows it was ours, not the user's, and chooses again for itself.
CHOSEN_ENV = "AVATAR3D_CHOSEN_OMP_THREADS"
ADAPT_EVERY = 5.0  # seconds between two looks at the load in adapt_threads

_state: dict = {"configured": False, "user_threads": None, "last_check": 0.0, "last_cpu": None}


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, limited by a cgroup CPU quota where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota + 0.5)))
    return max(1, cores)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _cgroup_quota() -> Optional[float]:
    try:
        text = _read("/sys/fs/cgroup/cpu.max").split()
    except OSError:
        return None
    if len(text) == 2 and text[0] != "max":
        try:
            return float(text[0]) / float(text[1])
        except ValueError:
            return None
    return None


def _user_threads() -> Optional[int]:
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if name == "OMP_NUM_THREADS" and value and value == os.environ.get(CHOSEN_ENV):
            continue  # inherited from an avatar3d parent that chose it
        if value:
            try:
                return max(1, int(value.split(",")[0]))
            except ValueError:
                return None
    return None


def _busy_cores_elsewhere() -> float:
    """Runnable threads of other processes right now (from /proc/loadavg), an estimate of the cores in use."""
    try:
        running = int(_read("/proc/loadavg").split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, running - 1.0)  # this process's reading thread is one of them


def choose_threads(cores: int, busy: float) -> int:
    """Threads for a CPU-bound job given `cores` and `busy` cores taken by others: the free cores, at least one
    and at least half the machine (a fair share when two jobs split it), never more than `cores`."""
    free = int(round(cores - busy))
    return max(1, min(cores, max(free, (cores + 1) // 2)))


def configure_process() -> int:
    """Set the wait policy and thread count before torch loads; returns the thread count chosen."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # numpy's and scipy's OpenBLAS keep threads of their own that spin after each call; our numpy algebra is
    # small (3x3 and 4x4 per frame, fits of a few thousand rows), so those threads only take cores from torch's
    # (a rendered portrait frame lost ~10 % to them).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    user = _state["user_threads"] if _state["configured"] else _user_threads()
    _state.update(configured=True, user_threads=user)
    if user is not None:
        if os.environ.get("OMP_NUM_THREADS", "") in ("", os.environ.get(CHOSEN_ENV)):
            os.environ["OMP_NUM_THREADS"] = str(user)  # AVATAR3D_THREADS alone sets OpenMP's too
        return user
    threads = choose_threads(available_cores(), _busy_cores_elsewhere())
    os.environ["OMP_NUM_THREADS"] = os.environ[CHOSEN_ENV] = str(threads)
    return threads


def pin_threads(threads: int) -> None:
    """Use exactly `threads` threads from now on, as if the user had set AVATAR3D_THREADS: for a job given a share
    of the cores by a scheduler (a batch on Ray), in a worker process that may already have loaded torch."""
    threads = max(1, int(threads))
    os.environ[THREADS_ENV] = os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _state.update(configured=True, user_threads=threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def adapt_threads(force: bool = False) -> Optional[int]:
    """Follow the load: at most every ADAPT_EVERY seconds, set torch's thread count to the cores the other
    processes leave free (at least half the machine). Call it from the thread that runs the work (OpenMP
    thread counts are per calling thread). A user's own thread setting is never changed. Returns the count
    set, or None when nothing was done."""
    user = _state["user_threads"] if _state["configured"] else _user_threads()
    if user is not None:
        return None
    now = time.monotonic()
    if not force and now - _state["last_check"] < ADAPT_EVERY:
        return None
    _state["last_check"] = now
    import torch

    threads = choose_threads(available_cores(), _busy_cores_elsewhere_excluding_self())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Torch's deterministic kernels inside the block (the previous setting is restored after it). On the CPU
    some accumulating ops (e.g. the backward of indexing, index_put_ with accumulate) otherwise add in parallel
    with atomics, in an order that changes from run to run once there are two threads: two trainings of one
    avatar then drift apart. The deterministic versions cost about nothing here (training steps as fast)."""
    import torch

    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _busy_cores_elsewhere_excluding_self() -> float:
    """Cores used by other processes over the last interval: all busy CPU time (/proc/stat) minus ours."""
    try:
        fields = _read("/proc/stat").split("\n", 1)[0].split()[1:]
        values = [float(v) for v in fields]
    except (OSError, ValueError):
        return _busy_cores_elsewhere()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    total = sum(values[:8])
    now, ours = time.monotonic(), _process_cpu_seconds()
    last = _state["last_cpu"]
    _state["last_cpu"] = (now, total, idle, ours)
    if last is None or now - last[0] < 0.5:
        return _busy_cores_elsewhere()
    wall = now - last[0]
    busy_all = ((total - last[1]) - (idle - last[2])) / ticks / wall
    busy_ours = (ours - last[3]) / wall
    return max(0.0, busy_all - busy_ours)


# ------------------------------------------------------------------------------------------ native logs
# Lines native libraries print on every run that tell a user nothing (MediaPipe's TensorFlow Lite and absl).
NATIVE_NOISE = (
    "INFO: Created TensorFlow Lite",
    "WARNING: All log messages before absl::InitializeLog() is called",
    "inference_feedback_manager.cc",
    "gl_context.cc",
    "Initialized TensorFlow Lite runtime",
)


def verbose() -> bool:
    """`--verbose` was given (the CLI sets AVATAR3D_VERBOSE=1): native libraries' own log lines are kept."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def is_native_noise(line: str) -> bool:
    return any(pattern in line for pattern in NATIVE_NOISE)


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Drop the known banner lines native code writes to file descriptor 2 inside this block; every other
    line is written to stderr afterwards (nothing else is lost). A no-op with --verbose."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not is_native_noise(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
