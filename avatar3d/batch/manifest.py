"""Manifests: the rows of a batch, from a CSV file, a YAML list or a folder of videos.

A row is a mapping of known column names to strings (or, in YAML, a boolean `tracking` and a list `options`).
Relative paths in a row are relative to the manifest's own folder, so a manifest and its files can move together.
Unknown columns are refused with the known ones: a typo must not silently drop a setting.
"""
from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avatar3d.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
ENROLL_COLUMNS = ("video", "name", "preset", "options")
RENDER_COLUMNS = ("avatar", "audio", "drive_video", "tracking", "out", "options")


@dataclass(frozen=True)
class Row:
    """One row of a manifest: its values and where it is (for messages)."""

    values: dict  # column -> value (absent columns are missing, not empty)
    where: str  # e.g. "jobs.csv row 3"
    base: Path  # the folder relative paths are resolved against

    def path(self, column: str) -> Path | None:
        value = self.values.get(column)
        if value is None:
            return None
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else self.base / path

    def options(self) -> list[str]:
        """The row's extra command-line options (a shell-quoted string, or a YAML list of words)."""
        value = self.values.get("options")
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value]
        try:
            return shlex.split(str(value))
        except ValueError as err:
            raise InputError(f"{self.where}: options {value!r} cannot be split into words ({err}); quote them as "
                             f"a shell would") from err


def read_rows(source: Path, columns: tuple[str, ...]) -> list[Row]:
    """The rows of a manifest file (.csv, .yaml/.yml) or, for enrollments, a folder of videos."""
    source = Path(source)
    if source.is_dir():
        if "video" not in columns:
            raise InputError(f"{source} is a folder; batch render reads a jobs file (.csv or .yaml, docs/batch.md)")
        return _video_folder(source)
    if not source.is_file():
        raise InputError(f"{source} does not exist; pass a manifest (.csv or .yaml) or a folder of videos")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(source)
    elif suffix in (".yaml", ".yml"):
        rows = _yaml_rows(source)
    else:
        raise InputError(f"{source}: a manifest is a .csv or .yaml file (docs/batch.md shows both)")
    for row in rows:
        unknown = sorted(set(row.values) - set(columns))
        if unknown:
            raise InputError(f"{row.where}: unknown column(s) {', '.join(unknown)}; known: {', '.join(columns)}")
    if not rows:
        raise InputError(f"{source} lists no jobs; docs/batch.md shows the format")
    return rows


def _video_folder(folder: Path) -> list[Row]:
    videos = sorted(p for p in folder.iterdir()  # hidden files (e.g. macOS's ._name.mp4) are not videos
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}); pass a folder of talking videos "
                         f"or a manifest")
    return [Row({"video": p.name}, where=f"{folder.name}/{p.name}", base=folder) for p in videos]


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Blank cells are absent; column names are trimmed."""
    out = {}
    for key, value in values.items():
        if key is None:
            continue
        if isinstance(value, str):
            value = value.strip()
        if value not in (None, ""):
            out[str(key).strip()] = value
    return out


def _csv_rows(path: Path) -> list[Row]:
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        lines = ["" if line.lstrip().startswith("#") else line  # comments blanked: the line numbers stay true
                 for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path} cannot be read as text ({type(err).__name__}); save the manifest as UTF-8 CSV") \
            from err
    header = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    reader = csv.DictReader(lines[header:])  # its first line is the header
    rows = []
    for values in reader:
        number = header + reader.line_num
        if None in values:
            raise InputError(f"{path.name} row {number}: more cells than the header has columns")
        values = _clean(values)
        if values:
            rows.append(Row(values, where=f"{path.name} row {number}", base=path.parent))
    return rows


def _yaml_rows(path: Path) -> list[Row]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"{path} cannot be read as YAML ({type(err).__name__}); docs/batch.md shows the format") \
            from err
    if isinstance(data, dict) and "jobs" in data:
        data = data["jobs"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise InputError(f"{path}: expected a list of jobs (mappings of column: value); docs/batch.md shows one")
    return [Row(_clean(item), where=f"{path.name} job {i + 1}", base=path.parent) for i, item in enumerate(data)]
