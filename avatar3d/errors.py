"""Exceptions raised for bad input. Each message names the problem and the fix."""
import errno
import os


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


NATIVE_BUILD_HINT = (
    "build it with `make build` or `python setup.py build_ext --inplace` in the repository "
    "(a C++ compiler is needed; for the CUDA kernels a CUDA build of torch and nvcc, forced with "
    "`AVATAR3D_CUDA=1 python setup.py build_ext --inplace`), or use backend='torch'"
)


# OS errors a user can act on (the CLI turns them into a message instead of a traceback).
USER_OS_ERRORS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
}


def describe_os_error(err: OSError) -> str | None:
    """A message naming what could not be written and how to fix it, or None for other OS errors.

    The path named is the user's folder, never one of our temp names inside it (".NAME.tmp-...").
    """
    reason = USER_OS_ERRORS.get(err.errno)
    if reason is None:
        return None
    path = err.filename
    if path is None:
        return f"{reason}; check the output folder's permissions and free space, or choose another one"
    path = os.fspath(path)
    name = os.path.basename(path.rstrip("/"))
    if name.startswith(".") and (".tmp-" in name or ".staging" in name or ".old-" in name or ".reserved" in name):
        path = os.path.dirname(path.rstrip("/")) or "."
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write in {path}: {reason}; free some space or choose an output folder on another disk"
    return (f"cannot write in {path}: {reason}; choose an output folder you can write to (e.g. under your home "
            f"folder) or fix its permissions")
