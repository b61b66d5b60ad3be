"""How a process shares the CPU (avatar3d/runtime.py): thread choice, the user's settings winning."""
import subprocess
import sys

import pytest

from avatar3d import runtime


@pytest.mark.parametrize("cores,busy,expected", [(2, 0.0, 2), (2, 1.0, 1), (2, 2.0, 1), (8, 0.0, 8), (8, 3.0, 5),
                                                 (8, 7.5, 4), (1, 5.0, 1), (16, 15.0, 8)])
def test_choose_threads_takes_the_free_cores_but_at_least_a_fair_half(cores, busy, expected):
    assert runtime.choose_threads(cores, busy) == expected


def _child_threads(env: dict) -> str:
    code = ("from avatar3d import runtime; n = runtime.configure_process(); import os; "
            "print(n, os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def _clean_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", runtime.THREADS_ENV, runtime.CHOSEN_ENV)}
    return env


def test_the_users_thread_settings_win():
    env = {**_clean_env(), "OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert _child_threads(env) == ["3", "3", "ACTIVE"]
    env = {**_clean_env(), runtime.THREADS_ENV: "5"}
    n, omp, policy = _child_threads(env)
    assert n == "5" and policy == "PASSIVE"


def test_a_child_chooses_again_when_it_inherits_our_choice():
    # OMP_NUM_THREADS=97 marked as chosen by an avatar3d parent: the child must not take it as the user's
    env = {**_clean_env(), "OMP_NUM_THREADS": "97", runtime.CHOSEN_ENV: "97"}
    n, omp, policy = _child_threads(env)
    assert n == omp and 1 <= int(n) <= runtime.available_cores()
    assert policy == "PASSIVE"


def test_adapt_threads_leaves_a_users_setting_alone(monkeypatch):
    monkeypatch.setitem(runtime._state, "configured", True)
    monkeypatch.setitem(runtime._state, "user_threads", 1)
    assert runtime.adapt_threads(force=True) is None


def test_deterministic_torch_is_scoped():
    import torch

    from avatar3d.runtime import deterministic_torch

    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_torch():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
    with pytest.raises(RuntimeError):
        with deterministic_torch():
            raise RuntimeError("a failing block still restores the setting")
    assert torch.are_deterministic_algorithms_enabled() == before


def test_numpys_blas_keeps_to_one_thread_unless_the_user_says_otherwise():
    code = "from avatar3d import runtime; runtime.configure_process(); import os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in _clean_env().items() if k != "OPENBLAS_NUM_THREADS"}
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,  # noqa: E731
                                   check=True).stdout.strip()
    assert run(env) == "1"
    assert run({**env, "OPENBLAS_NUM_THREADS": "4"}) == "4"
