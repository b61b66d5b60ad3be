"""Installed head models: convert once, cache, load fast.

Each installed model lives in `models_dir()/<name>/`:

    rig.safetensors   HeadRig.state_dict() tensors (MediaPipe embedding included)
    model.json        rig info (name, expression names, meta), the source files and options, the cache
                      key (checksum of the inputs + converter version) and a summary for `models list`

The cache key is a SHA-256 over the input files' contents and the converter version. Loading checks
the converter version and, cheaply, the inputs' sizes and modification times; only when those changed
are the inputs hashed again, and a changed checksum (or a corrupt cache) rebuilds the model from its
source. Both files are written atomically (model.json last, so it is the commit point).

"synthetic" is built in and always loads; it is never the silent default.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable, Optional

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from avatar3d.errors import HeadModelError
from avatar3d.head.embedding import attach_mediapipe_embedding
from avatar3d.head.rig import HeadRig
from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json
from avatar3d.paths import models_dir

EMBEDDING_VERSION = "mp-1"
FLAME_CONVERTER_VERSION = "flame-1"
FORMAT_VERSION = 1
DEFAULT_MODEL = "ict"
SYNTHETIC = "synthetic"
INSTALL_HINT = (
    "install one with `avatar3d models install --ict PATH/TO/ICT-FaceKit` (a clone of "
    "https://github.com/ICT-VGL/ICT-FaceKit) or `avatar3d models install --flame PATH/TO/FLAME.pkl`"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def converter_version(kind: str) -> str:
    """Version string of the conversion of one model kind (part of the cache key)."""
    if kind == "ict":
        from avatar3d.head.ict import CONVERTER_VERSION as version
    else:
        version = FLAME_CONVERTER_VERSION
    return f"{version}+{EMBEDDING_VERSION}+f{FORMAT_VERSION}"


# ---------------------------------------------------------------------------------------- files
def _check_name(name: str) -> str:
    if name == SYNTHETIC or not _NAME.match(name):
        raise HeadModelError(
            f"{name!r} cannot name an installed head model; use letters, digits, '_', '-', '.' "
            f"(and not {SYNTHETIC!r}, which is built in)"
        )
    return name


def model_dir(name: str) -> Path:
    return models_dir() / name


def _fingerprint(files: list[Path]) -> list[list]:
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def inputs_checksum(files: list[Path]) -> str:
    """SHA-256 over the inputs' names and contents (order matters; names relative to the first file's folder)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        h.update(b"\1")
    return h.hexdigest()


def _cache_key(checksum: str, kind: str, options: dict) -> str:
    blob = json.dumps({"inputs": checksum, "converter": converter_version(kind), "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------- building
def _input_files(kind: str, source: dict) -> list[Path]:
    if kind == "ict":
        from avatar3d.head.ict import ict_input_files

        return ict_input_files(Path(source["folder"]))
    files = [Path(source["pkl"])]
    files += [Path(source[k]) for k in ("masks", "embedding") if source.get(k)]
    for f in files:
        if not f.is_file():
            raise HeadModelError(f"{f} does not exist; pass the path of the FLAME file you downloaded")
    return files


def _convert(kind: str, source: dict, options: dict, name: str, say: Callable[[str], None]) -> HeadRig:
    if kind == "ict":
        from avatar3d.head.ict import convert_ict

        rig = convert_ict(Path(source["folder"]), progress=say)
    else:
        from avatar3d.head.flame import load_flame_pkl

        rig = load_flame_pkl(Path(source["pkl"]), masks_path=source.get("masks"),
                             embedding_path=source.get("embedding"), name=name, **options)
    rig.name = name
    given = rig.landmarks_mp
    say("building the MediaPipe-478 landmark embedding")
    attach_mediapipe_embedding(rig)
    if given is not None and given.valid is not None:  # the model's own (partial) embedding wins where it has points
        keep = given.valid.to(rig.device)
        rig.landmarks_mp.face_idx[keep] = given.face_idx.to(rig.device)[keep]
        rig.landmarks_mp.bary[keep] = given.bary.to(rig.device, rig.landmarks_mp.bary.dtype)[keep]
        rig.meta["mp_embedding"]["from_model_files"] = int(keep.sum())
    return rig


def _install(kind: str, source: dict, options: dict, name: str, force: bool,
             progress: Optional[Callable[[str], None]]) -> dict:
    say = progress or (lambda msg: None)
    name = _check_name(name)
    files = _input_files(kind, source)
    say(f"checking {len(files)} input files")
    checksum = inputs_checksum(files)
    key = _cache_key(checksum, kind, options)
    folder = model_dir(name)
    if not force:
        info = _read_info(folder)
        if info is not None and info.get("cache_key") == key and (folder / "rig.safetensors").is_file():
            say(f"{name}: the cached conversion is up to date ({folder})")
            return info
    say(f"converting {kind} model {name!r}")
    rig = _convert(kind, source, options, name, say)
    rig.meta.update(cache_key=key, inputs_sha256=checksum, converter_version=converter_version(kind))
    return _save(rig, folder, kind=kind, source=source, options=options, key=key, checksum=checksum,
                 fingerprint=_fingerprint(files))


def _save(rig: HeadRig, folder: Path, **record) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    tensors, rig_info = rig.state_dict()
    blob = st_save(tensors)
    atomic_write_bytes(folder / "rig.safetensors", blob)
    info = {
        "format_version": FORMAT_VERSION,
        "name": rig.name,
        "kind": record["kind"],
        "source": {k: str(v) for k, v in record["source"].items() if v is not None},
        "options": record["options"],
        "cache_key": record["key"],
        "inputs_sha256": record["checksum"],
        "converter_version": converter_version(record["kind"]),
        "fingerprint": record["fingerprint"],
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "summary": _summary(rig),
        "rig": rig_info,
    }
    atomic_write_json(folder / "model.json", info)
    return info


def _summary(rig: HeadRig) -> dict:
    return {
        "vertices": rig.num_vertices,
        "triangles": rig.num_faces,
        "identity": rig.num_shape,
        "expressions": rig.num_expr,
        "jaw_fit_mm": rig.meta.get("jaw_fit_mm"),
    }


def install_ict(folder, name: str = "ict", force: bool = False,
                progress: Optional[Callable[[str], None]] = None) -> dict:
    """Convert an ICT-FaceKit folder (repository root or FaceXModel) and install it as `name`.

    Returns the installed model's record (as in model.json). A valid cache is reused unless `force`.
    """
    return _install("ict", {"folder": str(Path(folder).expanduser().resolve())}, {}, name, force, progress)


def install_flame(pkl, name: str = "flame", masks=None, embedding=None, num_shape: Optional[int] = None,
                  num_expr: Optional[int] = None, force: bool = False,
                  progress: Optional[Callable[[str], None]] = None) -> dict:
    """Install the user's FLAME `.pkl` (optionally with FLAME_masks.pkl / a landmark embedding file)."""
    source = {"pkl": str(Path(pkl).expanduser().resolve())}
    for key, value in (("masks", masks), ("embedding", embedding)):
        if value is not None:
            source[key] = str(Path(value).expanduser().resolve())
    options = {k: v for k, v in (("num_shape", num_shape), ("num_expr", num_expr)) if v is not None}
    return _install("flame", source, options, name, force, progress)


# ---------------------------------------------------------------------------------------- listing
def _read_info(folder: Path) -> Optional[dict]:
    try:
        info = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "kind" in info and "rig" in info else None


def installed_names() -> list[str]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.json").is_file())


def list_models() -> list[dict]:
    """One row per installed model: name, kind, vertices, triangles, identity/expression counts, jaw fit, cache."""
    rows = []
    for name in installed_names():
        folder = model_dir(name)
        info = _read_info(folder)
        if info is None:
            rows.append({"name": name, "kind": "?", "status": "damaged (re-install it)", "cache": str(folder)})
            continue
        rows.append({"name": name, "kind": info["kind"], **info.get("summary", {}), "cache": str(folder),
                     "default": name == DEFAULT_MODEL, "status": "ok"})
    return rows


# ---------------------------------------------------------------------------------------- loading
def _rebuild(name: str, info: dict, why: str, progress) -> dict:
    kind, source = info["kind"], info.get("source", {})
    try:
        files = _input_files(kind, source)
    except HeadModelError:
        raise HeadModelError(
            f"the cached head model {name!r} is {why} and its source ({', '.join(source.values())}) is gone; "
            f"install it again with `avatar3d models install --{kind} PATH --name {name}`"
        ) from None
    if progress:
        progress(f"{name}: cache is {why}; rebuilding from {', '.join(str(f.parent) for f in files[:1])}")
    return _install(kind, source, info.get("options", {}), name, True, progress)


def _stale_reason(info: dict) -> Optional[str]:
    """Why the cache no longer matches its source (None when it matches or the source is gone)."""
    if info.get("format_version") != FORMAT_VERSION or info.get("converter_version") != converter_version(info["kind"]):
        return "from an older converter"
    paths = [Path(p) for p, _, _ in info.get("fingerprint", [])]
    if not paths or not all(p.is_file() for p in paths):
        return None  # source moved or deleted: the cache is self-contained, keep using it
    try:
        current = _input_files(info["kind"], info.get("source", {}))
    except HeadModelError:
        return None
    if _fingerprint(current) == info.get("fingerprint"):
        return None
    if inputs_checksum(current) != info.get("inputs_sha256"):
        return "out of date (its source files changed)"
    return None


def load_rig(name: Optional[str] = None, device=None, progress: Optional[Callable[[str], None]] = None) -> HeadRig:
    """The head model `name` (default: the installed ICT-FaceKit model). "synthetic" is built in.

    Raises HeadModelError saying how to install a model when none is installed or `name` is unknown.
    """
    if name is None:
        if DEFAULT_MODEL not in installed_names():
            others = installed_names()
            extra = f"; installed: {', '.join(others)} (pick one with --head-model NAME)" if others else ""
            raise HeadModelError(f"no ICT-FaceKit head model is installed{extra}; {INSTALL_HINT}, "
                                 f"or use --head-model {SYNTHETIC} for the built-in test head")
        name = DEFAULT_MODEL
    if name == SYNTHETIC:
        rig = synthetic_with_embedding()
        return rig if device is None else rig.to(device)
    folder = model_dir(name)
    info = _read_info(folder)
    if info is None:
        if (folder / "model.json").exists():
            raise HeadModelError(f"the cache of head model {name!r} in {folder} is damaged (unreadable model.json); "
                                 f"install it again with `avatar3d models install ... --name {name} --force`")
        names = installed_names()
        raise HeadModelError(f"no head model named {name!r} is installed (installed: {', '.join(names) or 'none'}; "
                             f"built in: {SYNTHETIC}); {INSTALL_HINT}")
    why = _stale_reason(info)
    if why is not None:
        info = _rebuild(name, info, why, progress)
    try:
        rig = _load_cached(folder, info)
    except HeadModelError as err:
        info = _rebuild(name, info, f"damaged ({err})", progress)
        rig = _load_cached(folder, info)
    return rig if device is None else rig.to(device)


def _load_cached(folder: Path, info: dict) -> HeadRig:
    try:
        blob = (folder / "rig.safetensors").read_bytes()
    except OSError as exc:
        raise HeadModelError(f"cannot read {folder / 'rig.safetensors'} ({exc})") from None
    if hashlib.sha256(blob).hexdigest() != info.get("tensors_sha256"):
        raise HeadModelError(f"{folder / 'rig.safetensors'} does not match its checksum")
    try:
        tensors = st_load(blob)
        rig = HeadRig.from_state_dict(tensors, info["rig"])
    except Exception as exc:  # any decoding problem means a damaged cache
        raise HeadModelError(f"{folder / 'rig.safetensors'} cannot be decoded ({type(exc).__name__})") from None
    rig.meta.setdefault("cache_key", info.get("cache_key"))
    rig.meta["cache_path"] = str(folder)
    return rig


_SYNTHETIC_CACHE: dict[str, HeadRig] = {}


def synthetic_with_embedding() -> HeadRig:
    """The built-in synthetic rig with its MediaPipe embedding (built once per process)."""
    if SYNTHETIC not in _SYNTHETIC_CACHE:
        from avatar3d.head.synthetic import synthetic_rig

        rig = synthetic_rig()
        if rig.landmarks_mp is None:
            attach_mediapipe_embedding(rig)
        _SYNTHETIC_CACHE[SYNTHETIC] = rig
    tensors, info = _SYNTHETIC_CACHE[SYNTHETIC].state_dict()
    # a copy, so callers may modify it
    return HeadRig.from_state_dict({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(info)))
