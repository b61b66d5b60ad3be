"""Exceptions raised for bad input. Each message names the problem and the fix."""


class Avatar3DError(Exception):
    """Base class: an error the user can act on (the CLI prints it without a traceback)."""


class InputError(Avatar3DError, ValueError):
    """A user-supplied file, option or value is wrong."""


class MediaError(InputError):
    """A video or audio file cannot be used (missing, corrupt, no stream of the needed kind)."""


class HeadModelError(InputError):
    """A head-model file or folder is missing, damaged or of the wrong kind."""


class BackendUnavailableError(Avatar3DError, RuntimeError):
    """A requested compute backend (e.g. the native extension or CUDA) is not available."""


class NotYetAvailableError(Avatar3DError):
    """A verb or feature whose implementation has not landed yet."""


NATIVE_BUILD_HINT = (
    "build it with `make build` or `python setup.py build_ext --inplace` in the repository "
    "(a C++ compiler is needed; for the CUDA kernels a CUDA build of torch and nvcc, forced with "
    "`AVATAR3D_CUDA=1 python setup.py build_ext --inplace`), or use backend='torch'"
)
