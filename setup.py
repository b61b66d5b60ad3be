"""Builds the native extension `avatar3d._C` (cuda_ext/). Package metadata lives in pyproject.toml.

C++ with OpenMP always. The CUDA kernels are added when torch was built with CUDA and nvcc is found
(CUDA_HOME); `AVATAR3D_CUDA=1` forces them (an error if impossible), `AVATAR3D_CUDA=0` skips them.
`AVATAR3D_SKIP_EXT=1` declares no extension at all (an editable install that builds it separately).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
EXT_DIR = "cuda_ext"
CPP_SOURCES = ["ext.cpp", "project_glue.cpp", "rasterize_glue.cpp", "ssim_glue.cpp", "finish_glue.cpp",
               "bind_glue.cpp", "sh_glue.cpp", "project_cpu.cpp", "rasterize_cpu.cpp", "ssim_cpu.cpp", "finish_cpu.cpp", "bind_cpu.cpp",
               "sh_cpu.cpp"]
CUDA_SOURCES = ["project_cuda.cu", "rasterize_cuda.cu"]
# sm_90 (Hopper) plus the common ones; TORCH_CUDA_ARCH_LIST, when set, replaces this list.
DEFAULT_ARCHS = ["75", "80", "86", "89", "90"]  # CUDA 13 no longer builds for sm_70 (Volta)


def _want_cuda() -> bool:
    import torch
    from torch.utils import cpp_extension

    flag = os.environ.get("AVATAR3D_CUDA", "").strip()
    possible = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if flag == "0":
        return False
    if flag == "1":
        if not possible:
            sys.exit(
                "AVATAR3D_CUDA=1 but CUDA cannot be built: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cpp_extension.CUDA_HOME!r}. "
                "Install a CUDA build of torch and the CUDA toolkit (nvcc), or unset AVATAR3D_CUDA."
            )
        return True
    return possible


def _gencode_flags() -> list[str]:
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return []  # torch.utils.cpp_extension turns TORCH_CUDA_ARCH_LIST into -gencode flags itself
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in DEFAULT_ARCHS]
    return flags + [f"-gencode=arch=compute_{DEFAULT_ARCHS[-1]},code=compute_{DEFAULT_ARCHS[-1]}"]


def _extensions():
    if os.environ.get("AVATAR3D_SKIP_EXT") == "1":
        return [], {}
    from torch.utils import cpp_extension

    include = [str(ROOT / EXT_DIR / "include"), str(ROOT / EXT_DIR)]
    sources = [f"{EXT_DIR}/{s}" for s in CPP_SOURCES]
    # No -ffast-math: results must match the oracle. The other flags only let GCC vectorise the masked pixel
    # loops (-fno-wrapv undoes the -fwrapv of Python's own CFLAGS). -ffp-contract=off: no fused multiply-adds, so
    # every clone (avx2, default) rounds as written (simd8.h). The C++ standard is the one torch picks.
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fno-wrapv", "-ffp-contract=off"]
    if _want_cuda():
        ext = cpp_extension.CUDAExtension(
            name="avatar3d._C",
            sources=sources + [f"{EXT_DIR}/{s}" for s in CUDA_SOURCES],
            include_dirs=include,
            define_macros=[("A3D_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo", *_gencode_flags()]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            name="avatar3d._C",
            sources=sources,
            include_dirs=include,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
