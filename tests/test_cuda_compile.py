"""The torch-free CUDA kernel files compile with plain nvcc for sm_90 (no GPU needed); skipped without nvcc."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from avatar3d.paths import REPO_ROOT

EXT_DIR = REPO_ROOT / "cuda_ext"
CU_FILES = sorted(EXT_DIR.glob("*_cuda.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed here")
@pytest.mark.timeout(120)
def test_cuda_kernels_compile_for_sm90(tmp_path: Path):
    assert CU_FILES, "no cuda_ext/*_cuda.cu files found"
    # Compiled in parallel: each file is independent.
    procs = {
        cu.name: subprocess.Popen(
            ["nvcc", "-std=c++17", "-O1", "-arch=sm_90", "-I", str(EXT_DIR / "include"), "-c", str(cu),
             "-o", str(tmp_path / (cu.stem + ".o"))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cu in CU_FILES
    }
    failures = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=110)
        if proc.returncode != 0:
            failures[name] = out[-3000:]
    assert not failures, "nvcc failed:\n" + "\n".join(f"--- {k}\n{v}" for k, v in failures.items())
    assert all((tmp_path / (cu.stem + ".o")).stat().st_size > 0 for cu in CU_FILES)
