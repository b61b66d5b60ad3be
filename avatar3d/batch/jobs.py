"""Jobs: each manifest row as the words of its single command, read and checked before anything starts.

A job is `avatar3d enroll ...` or `avatar3d render ...` with its output inside the batch's folder; the words are
read by the command line's own parser (`cli.parse`), so a job accepts exactly the options the command does. Every
problem of every row is collected and reported at once (a missing file, an unknown avatar, a bad control value,
two jobs writing one name) before the first job runs.
"""
from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from avatar3d.batch.current import BATCH_DIR, render_key
from avatar3d.batch.manifest import ENROLL_COLUMNS, RENDER_COLUMNS, Row, read_rows
from avatar3d.config import option_value
from avatar3d.errors import InputError

TRUE_WORDS = ("1", "true", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "no", "n", "off")


@dataclass(frozen=True)
class Job:
    """One enrollment or clip of a batch."""

    kind: str  # "enroll" or "render"
    name: str  # the avatar's folder name or the clip's file name: unique within the batch
    argv: tuple  # the single command's words: `avatar3d <argv>` runs this job alone
    output: Path  # the avatar folder or the clip
    where: str  # the manifest row it came from
    key: str = ""  # a clip's inputs and settings (batch/current.py); "" for enrollments
    also_writes: tuple = ()  # outputs besides `output` (a clip's alpha), checked for clashes too
    config: object = field(default=None, compare=False, repr=False)  # the command's parsed config (enrollments)

    @property
    def command(self) -> str:
        return shlex.join(["avatar3d", *self.argv])

    @property
    def log(self) -> Path:
        return self.output.parent / BATCH_DIR / "logs" / f"{self.name}.log"

    def result(self, status: str, message: Optional[str], seconds: Optional[float] = None,
               has_log: bool = True) -> dict:
        """What came of this job, as the summary lists it (batch/summary.py)."""
        return {"job": self.name, "kind": self.kind, "status": status, "seconds": seconds, "message": message,
                "where": self.where, "log": str(self.log) if has_log else None, "command": self.command}


def _problems_error(source: Path, problems: list[str]) -> InputError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return InputError(f"{len(problems)} problem(s) in {Path(source).name}; nothing was started:\n{listed}")


def _plain_name(name: str, where: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise InputError(f"{where}: {name!r} is not a plain file or folder name (no '/', not starting with '.')")
    return name


def _parse(words: list[str], where: str):
    from avatar3d import cli

    try:
        return cli.parse(words)[2]
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


def _refuse_out(options: list[str], where: str, column: str) -> None:
    if "--out" in options or any(o.startswith("--out=") for o in options):
        raise InputError(f"{where}: --out is set by the batch (its folder + the {column!r} column); drop it from "
                         f"the options")


def _unique(jobs: list[Job]) -> list[str]:
    """Two jobs must never write one output (compared without case: some file systems ignore it)."""
    seen: dict[str, Job] = {}
    problems = []
    for job in jobs:
        for path in (job.output, *job.also_writes):
            other = seen.setdefault(str(path).casefold(), job)
            if other is not job:
                problems.append(f"{job.where} and {other.where} both write {Path(path).name}; give one of them "
                                f"another {'name' if job.kind == 'enroll' else 'out'}")
    return problems


def _collect(rows: list[Row], build) -> tuple[list[Job], list[str]]:
    jobs, problems = [], []
    for row in rows:
        try:
            jobs.append(build(row))
        except InputError as err:
            problems.append(str(err))
    return jobs, problems + _unique(jobs)


# ---------------------------------------------------------------------------------------------- enrollments
def enroll_jobs(source: Path, out_dir: Path, preset: str, options: list[str]) -> list[Job]:
    """The enrollments of a folder of videos or a manifest, each into OUT_DIR/NAME, checked."""
    jobs, problems = _collect(read_rows(source, ENROLL_COLUMNS),
                              lambda row: _enroll_job(row, Path(out_dir), preset, options))
    if problems:
        raise _problems_error(source, problems)
    return jobs


def _enroll_job(row: Row, out_dir: Path, preset: str, options: list[str]) -> Job:
    from avatar3d.io.ownership import check_replaceable

    video = row.path("video")
    if video is None:
        raise InputError(f"{row.where}: no video; every row names its video file")
    video, out_dir = video.resolve(), out_dir.resolve()  # a worker (on a cluster) may run in another folder
    name = _plain_name(str(row.values.get("name") or video.stem), row.where)
    extra = [*options, *row.options()]
    _refuse_out(extra, row.where, "name")
    given_config = option_value(extra, "--config") is not None
    preset_words = [] if given_config else ["--preset", str(row.values.get("preset") or preset)]
    words = ["enroll", str(video), "--out", str(out_dir / name), *preset_words, *extra]
    config = _parse(words, row.where)
    if not video.is_file():
        raise InputError(f"{row.where}: the video {video} does not exist")
    try:
        check_replaceable(config.out, config.force)
    except InputError as err:
        raise InputError(f"{row.where}: {err}") from err
    return Job("enroll", name, tuple(words), out_dir / name, row.where, config=config)


# ---------------------------------------------------------------------------------------------- clips
def render_jobs(source: Path, out_dir: Path, options: list[str]) -> list[Job]:
    """The clips of a jobs file, each into OUT_DIR/OUT, checked (their avatars are read, not loaded)."""
    jobs, problems = _collect(read_rows(source, RENDER_COLUMNS), lambda row: _render_job(row, Path(out_dir), options))
    if problems:
        raise _problems_error(source, problems)
    return jobs


def _driver(row: Row) -> tuple[list[str], str]:
    """The row's driver as render's words, and the name part it gives the clip: speech, a motion (another video,
    or the enrollment's replay), or both (a dub)."""
    motions = []
    if row.values.get("drive_video") is not None:
        motions.append((["--drive-video", str(row.path("drive_video").resolve())], row.path("drive_video").stem))
    tracking = str(row.values.get("tracking", "false")).strip().lower()
    if tracking not in TRUE_WORDS + FALSE_WORDS:
        raise InputError(f"{row.where}: tracking {row.values['tracking']!r} is neither true nor false (write true, "
                         f"or leave the cell empty)")
    if tracking in TRUE_WORDS:
        motions.append((["--tracking"], "tracking"))
    if len(motions) > 1:
        raise InputError(f"{row.where}: drive_video and tracking are two motions; give one of them (with audio "
                         f"to dub)")
    parts = motions + ([(["--audio", str(row.path("audio").resolve())], row.path("audio").stem)]
                       if row.values.get("audio") is not None else [])
    if not parts:
        raise InputError(f"{row.where}: no driver; give audio, drive_video or tracking (true), or audio with one of "
                         f"the other two to dub")
    return [w for words, _ in parts for w in words], "_".join(name for _, name in parts)


def _render_job(row: Row, out_dir: Path, options: list[str]) -> Job:
    avatar = row.path("avatar")
    if avatar is None:
        raise InputError(f"{row.where}: no avatar; every job names its avatar folder")
    avatar, out_dir = avatar.resolve(), out_dir.resolve()  # a worker (on a cluster) may run in another folder
    driver_words, driver_name = _driver(row)
    name = _plain_name(str(row.values.get("out") or f"{avatar.name}_{driver_name}.mp4"), row.where)
    extra = [*options, *row.options()]
    _refuse_out(extra, row.where, "out")
    words = ["render", str(avatar), "--out", str(out_dir / name), "--no-progress", *driver_words, *extra]
    config = _parse(words, row.where)
    _check_render(config, row.where)
    return Job("render", name, tuple(words), out_dir / name, row.where, key=render_key(config),
               also_writes=_alpha_output(config))


def _alpha_output(cfg) -> tuple:
    """Where a clip's --alpha goes, when it asks for one (as render decides it)."""
    if not cfg.alpha and cfg.alpha_out is None:
        return ()
    return (Path(cfg.alpha_out or Path(cfg.out).with_name(Path(cfg.out).stem + "_alpha")).resolve(),)


def _check_render(cfg, where: str) -> None:
    """What render would refuse, found without loading the avatar: drivers, files, controls, background."""
    from avatar3d.commands.render import build_controls, check_drivers
    from avatar3d.export.clip import parse_background
    from avatar3d.io.avatar_dir import AvatarPaths, read_manifest

    try:
        check_drivers(cfg)
        for label, path in (("audio", cfg.audio), ("drive_video", cfg.drive_video)):
            if path is not None and not Path(path).is_file():
                raise InputError(f"the {label} file {path} does not exist")
        manifest = read_manifest(cfg.avatar)
        if cfg.audio is not None and not AvatarPaths(cfg.avatar).has_audio_model():
            raise InputError(f"{cfg.avatar} has no audio-to-expression model; train it with `avatar3d train "
                             f"audio2expr {cfg.avatar}`, or drive this job with tracking or drive_video")
        build_controls(cfg, _expression_names(manifest.rig_name))
        parse_background(cfg.background)
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


@functools.lru_cache(maxsize=None)
def _expression_names(rig_name: Optional[str]) -> list[str]:
    from avatar3d.head.registry import load_rig

    return list(load_rig(rig_name, device="cpu").expr_names)
