"""Shared fixtures: seeds that are printed (so a failure can be replayed), the optional ../shared data."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from avatar3d.paths import shared_dir


@pytest.fixture
def seed(request) -> int:
    """A fresh random seed per test (or AVATAR3D_SEED to replay); printed on failure via the test id output."""
    value = int(os.environ.get("AVATAR3D_SEED", random.SystemRandom().randrange(2**31)))
    print(f"[seed] {request.node.nodeid}: AVATAR3D_SEED={value}")
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)
    return value


@pytest.fixture
def shared():
    """The development data folder; the test is skipped (with the reason) when it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (development videos, audio, head models) is not present on this machine")
    return path


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """An isolated AVATAR3D_HOME so tests never touch the user's installed models."""
    home = tmp_path / "avatar3d_home"
    monkeypatch.setenv("AVATAR3D_HOME", str(home))
    return home


def pytest_sessionstart(session):
    """Under `make test` (AVATAR3D_REQUIRE_EXT=1) a missing C++ extension is an error, not a silent skip."""
    if os.environ.get("AVATAR3D_REQUIRE_EXT") == "1":
        try:
            import avatar3d._C  # noqa: F401
        except ImportError as err:
            pytest.exit(f"the C++ extension avatar3d._C is required but did not import: {err}", returncode=1)


@pytest.fixture(scope="session")
def _ict_home_dir(tmp_path_factory):
    """An AVATAR3D_HOME with the ICT-FaceKit rig installed once per session (through the CLI)."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (development videos, head models) is not present on this machine")
    from avatar3d import cli

    home = tmp_path_factory.mktemp("ict_home")
    saved = os.environ.get("AVATAR3D_HOME")
    os.environ["AVATAR3D_HOME"] = str(home)
    try:
        if cli.run(["models", "install", "--ict", str(path / "headmodels" / "ICT-FaceKit")]) != 0:
            pytest.fail("installing the ICT-FaceKit rig failed")
    finally:
        _restore_env("AVATAR3D_HOME", saved)
    return home


@pytest.fixture(scope="module")
def ict_home(_ict_home_dir):
    """Use the session's ICT-installed AVATAR3D_HOME for a whole test module (restored afterwards)."""
    saved = os.environ.get("AVATAR3D_HOME")
    os.environ["AVATAR3D_HOME"] = str(_ict_home_dir)
    yield _ict_home_dir
    _restore_env("AVATAR3D_HOME", saved)


def _restore_env(name: str, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
