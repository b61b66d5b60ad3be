#!/usr/bin/env python3
"""Soak the random tests: run them again and again with fresh seeds until a count or a time is reached.

CI runs every random test with the fixed seeds of tests/conftest.py (CI_SEEDS). This draws fresh seeds instead,
a round of several at a time (one pytest process per round, so torch loads once per round), passes them as
AVATAR3D_SEEDS, and stops at the first failure with the command that replays it.

    python tools/soak.py --runs 500 tests/test_raster_native.py tests/test_training.py
    python tools/soak.py --minutes 60                 # every random test (the ids that carry a seed)
    make soak SOAK_RUNS=500 SOAK_TESTS="tests/test_raster_native.py"   # the Makefile's default set otherwise

A "run" is one seed through every selected test. Exit code 0 when every run passed, 1 on a failure.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tests", nargs="*", default=["tests"], help="test files or node ids (default: tests/)")
    ap.add_argument("--runs", type=int, default=0, help="stop after this many seeds have passed (0: no limit)")
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this long (0: no limit)")
    ap.add_argument("--per-round", type=int, default=10, help="seeds per pytest process")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here as JSON")
    args = ap.parse_args(argv)
    if args.runs <= 0 and args.minutes <= 0:
        ap.error("give --runs N and/or --minutes M (otherwise it would never stop)")
    if args.per_round < 1:
        ap.error("--per-round must be at least 1")
    return args


def _pytest(tests: list[str], seeds: list[int]) -> tuple[int, str]:
    env = {**os.environ, "AVATAR3D_SEEDS": ",".join(map(str, seeds))}
    env.pop("AVATAR3D_SEED", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "seed", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def _count_passed(output: str) -> int:
    for line in reversed(output.splitlines()):
        if " passed" in line:
            for part in line.replace(",", " ").split(" passed")[0].split()[-1:]:
                if part.isdigit():
                    return int(part)
    return 0


def main(argv: list[str]) -> int:
    args = _args(argv)
    rng = random.SystemRandom()
    start, seeds_done, tests_passed = time.monotonic(), 0, 0
    summary: dict = {"tests": args.tests, "failed": None}
    while True:
        elapsed_min = (time.monotonic() - start) / 60.0
        if (args.runs and seeds_done >= args.runs) or (args.minutes and elapsed_min >= args.minutes):
            break
        n = args.per_round if not args.runs else min(args.per_round, args.runs - seeds_done)
        seeds = [rng.randrange(2**31) for _ in range(n)]
        code, output = _pytest(args.tests, seeds)
        if code == 5:
            print("soak: no test with a seed was selected", file=sys.stderr)
            return 2
        if code != 0:
            failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
            print(output[-6000:])
            print(f"soak: a failure after {seeds_done} passing seeds: {failed[:3]}")
            print(f"soak: replay with AVATAR3D_SEEDS={','.join(map(str, seeds))} "
                  f"python -m pytest -x {' '.join(args.tests)}")
            summary["failed"] = {"seeds": seeds, "lines": failed}
            break
        seeds_done += n
        tests_passed += _count_passed(output)
        print(f"soak: {seeds_done} seeds passed ({tests_passed} test runs, "
              f"{(time.monotonic() - start) / 60.0:.1f} min)", flush=True)
    summary.update(seeds=seeds_done, test_runs=tests_passed, minutes=round((time.monotonic() - start) / 60.0, 2))
    print(f"soak: {seeds_done} fresh seeds, {tests_passed} test runs passed in {summary['minutes']} min"
          + ("" if summary["failed"] is None else " before a failure"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["failed"] is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
