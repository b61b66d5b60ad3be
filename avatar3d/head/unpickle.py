"""A restricted unpickler for head-model pickles from outside (FLAME `.pkl`, FLAME masks).

A pickle can name any importable callable, so loading one with `pickle.load` runs whatever the file
says. `safe_load_pickle` resolves only an allow-list: numpy arrays/dtypes/scalars, the byte-string
helpers Python-2/3 pickles use, and plain containers. scipy.sparse matrices and chumpy objects are
never constructed: their classes are replaced by inert stand-ins that only record the pickled state,
and after loading they are rebuilt as `scipy.sparse` matrices / plain numpy arrays (chumpy `Ch`
objects keep their value under 'x' in their state; chumpy is never imported). Everything else is
refused with `HeadModelError` before it is called.
"""
from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import HeadModelError

# ---------------------------------------------------------------------------- inert stand-ins


class _Recorded:
    """Base of the stand-ins: accepts any constructor arguments and records the BUILD state."""

    kind = "object"
    origin_name = "object"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):  # NEWOBJ/REDUCE may pass args; they carry nothing we need
        pass

    def __setstate__(self, state):
        self.state = state


def _stand_in(kind: str, origin: str) -> type:
    return type(f"_{kind}_{origin.replace('.', '_')}", (_Recorded,), {"kind": kind, "origin_name": origin})


class _PlainObject:
    """Stands in for `object` in `copyreg._reconstructor(cls, object, None)`."""


# ---------------------------------------------------------------------------- safe callables


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """Python-3 pickles (protocol < 3) store bytes as _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise HeadModelError("refusing a pickled _codecs.encode call with unexpected arguments; the file is not a "
                             "plain data pickle (re-export it with numpy arrays only)")
    return text.encode(encoding, errors)


def _bytes(*args):
    if not args:
        return b""
    if len(args) <= 2 and isinstance(args[0], (str, bytes, bytearray)):
        return bytes(*args)
    raise HeadModelError("refusing a pickled bytes() call with unexpected arguments (not a plain data pickle)")


def _reconstructor(cls, base, state):
    """copyreg._reconstructor for protocol 0/1 pickles: only our stand-ins may be created."""
    if isinstance(cls, type) and issubclass(cls, _Recorded) and base in (_PlainObject, object):
        obj = cls.__new__(cls)
        if state is not None:
            obj.state = state
        return obj
    raise HeadModelError(f"refusing to reconstruct {cls!r} from a pickle (not a plain data pickle)")


def _newobj(cls, *args):
    if isinstance(cls, type) and issubclass(cls, _Recorded):
        return cls.__new__(cls)
    raise HeadModelError(f"refusing to create {cls!r} from a pickle (not a plain data pickle)")


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise HeadModelError(f"refusing to build the array subclass {subtype!r} from a pickle; only numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise HeadModelError("refusing a pickled numpy object scalar (only numeric data is accepted)")
    return np.frombuffer(_latin1_bytes(data), dtype=dtype, count=1)[0]


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise HeadModelError("refusing a pickled numpy object buffer (only numeric data is accepted)")
    arr = np.frombuffer(_latin1_bytes(buf), dtype=dtype)
    return arr.reshape(shape, order=order).copy()


def _latin1_bytes(data) -> bytes:
    if isinstance(data, str):  # Python-2 str read with encoding='latin1'
        return data.encode("latin1")
    return bytes(data)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copyreg", "__newobj__"): _newobj,
    ("copy_reg", "__newobj__"): _newobj,
    ("__builtin__", "object"): _PlainObject,
    ("builtins", "object"): _PlainObject,
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _bytes,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): OrderedDict,
}
for _m in _NUMPY_MODULES:
    _ALLOWED[(_m, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_m, "scalar")] = _np_scalar
    _ALLOWED[(_m, "_frombuffer")] = _np_frombuffer

_SPARSE_FORMATS = {"csc", "csr", "coo"}
_stand_ins: dict[str, type] = {}


def _sparse_format(module: str, name: str) -> str | None:
    """'csc'/'csr'/'coo' for scipy.sparse(._csc|.csc|...).{csc,csr,coo}_{matrix,array}, else None."""
    if module != "scipy.sparse" and not module.startswith("scipy.sparse."):
        return None
    for suffix in ("_matrix", "_array"):
        if name.endswith(suffix) and name[: -len(suffix)] in _SPARSE_FORMATS:
            return name[: -len(suffix)]
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        origin = f"{module}.{name}"
        fmt = _sparse_format(module, name)
        if fmt is not None:
            return _stand_ins.setdefault(origin, _stand_in("sparse_" + fmt, origin))
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_ins.setdefault(origin, _stand_in("chumpy", origin))
        raise HeadModelError(
            f"refusing to load {origin!r} from a pickle: only numpy arrays, scipy.sparse matrices, chumpy arrays "
            "and plain containers are allowed. The file is not a head-model pickle (or it is malicious); use the "
            "original model file")

    def persistent_load(self, pid):
        raise HeadModelError("refusing a pickle with persistent ids (not a plain data pickle)")


# ---------------------------------------------------------------------------- rebuild stand-ins


def _state_dict(obj: _Recorded) -> dict:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
        merged = dict(state[0] or {})
        merged.update(state[1])
        state = merged
    if not isinstance(state, dict):
        raise HeadModelError(f"a pickled {obj.origin_name} has no readable state; the file is damaged or of an "
                             "unknown kind (use the original model file)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in state.items()}


def _rebuild_sparse(obj: _Recorded):
    import scipy.sparse as sp

    st = _state_dict(obj)
    shape = st.get("_shape", st.get("shape"))
    fmt = obj.kind.split("_", 1)[1]
    try:
        shape = tuple(int(s) for s in shape)
        if fmt in ("csc", "csr"):
            cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            return cls((np.asarray(st["data"]), np.asarray(st["indices"]), np.asarray(st["indptr"])), shape=shape)
        if "coords" in st:
            row, col = st["coords"]
        else:
            row, col = st["row"], st["col"]
        return sp.coo_matrix((np.asarray(st["data"]), (np.asarray(row), np.asarray(col))), shape=shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadModelError(f"a pickled {obj.origin_name} is incomplete or inconsistent ({exc}); the file is "
                             "damaged (use the original model file)") from exc


def _rebuild_chumpy(obj: _Recorded):
    st = _state_dict(obj)
    if "x" not in st:
        raise HeadModelError(
            f"the pickle holds a chumpy expression ({obj.origin_name}) rather than a chumpy array; it cannot be "
            "evaluated without chumpy. Use the original model file, or re-save it with plain numpy arrays")
    return np.asarray(_rebuild(st["x"]))


def _rebuild(value):
    if isinstance(value, _Recorded):
        if value.kind.startswith("sparse_"):
            return _rebuild_sparse(value)
        if value.kind == "chumpy":
            return _rebuild_chumpy(value)
        raise HeadModelError(f"unexpected object {value.origin_name} in a pickle")
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise HeadModelError("the pickle holds a numpy object array; only numeric arrays are accepted "
                             "(use the original model file)")
    if isinstance(value, dict):
        return type(value)((_rebuild(k), _rebuild(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_rebuild(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebuild(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(_rebuild(v) for v in value)
    return value


# ---------------------------------------------------------------------------- entry point


def safe_load_pickle(source: Union[str, os.PathLike, bytes, bytearray], *, allow_object_arrays: bool = False):
    """Load a data pickle without running code from it.

    source: a path or the pickle's bytes. Python-2 pickles are read with latin1 (as numpy needs).
    allow_object_arrays: keep numpy object arrays (their items were themselves unpickled through the
        allow-list); needed for `np.save`d dicts such as FLAME's landmark_embedding.npy.
    Returns plain Python containers, numpy arrays and scipy.sparse matrices.
    Raises HeadModelError for a missing, truncated or non-pickle file and for any disallowed object.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        label = "the given bytes"
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise HeadModelError(f"{path} does not exist or is not a file; pass the path of the model's .pkl file")
        data = path.read_bytes()
    if not data:
        raise HeadModelError(f"{label} is empty; download the model file again")
    try:
        raw = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        return _rebuild_allowing_objects(raw) if allow_object_arrays else _rebuild(raw)
    except HeadModelError:
        raise
    except RecursionError as exc:
        raise HeadModelError(f"{label} nests its contents far deeper than a head model does, so it was not read; "
                             "pass the original model .pkl file") from exc
    except EOFError as exc:
        raise HeadModelError(f"{label} ends too early (truncated download?); download the model file again") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise HeadModelError(f"{label} is not a readable pickle ({type(exc).__name__}: {exc}); pass the original "
                             "model .pkl file") from exc


def _rebuild_allowing_objects(value):
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        out = np.empty(value.shape, dtype=object)
        for idx in np.ndindex(value.shape):
            out[idx] = _rebuild_allowing_objects(value[idx])
        return out
    if isinstance(value, dict):
        return type(value)((k, _rebuild_allowing_objects(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_rebuild_allowing_objects(v) for v in value)
    return _rebuild(value)
