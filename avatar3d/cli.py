"""`avatar3d <verb> [<sub-verb>] [options]`.

Each verb is a dataclass config (a docstring under every field) turned into a CLI by tyro, and a
`main(config)` function (avatar3d/commands/, one module per verb). Nested configs give dotted flags
(`avatar3d enroll clip.mp4 --train.iterations 400`); a config class with `cli_default(args)` supplies the
defaults those flags override (the preset's sections, or a saved config). Verb modules are imported lazily so `avatar3d --help` is instant and a
verb never pays for another verb's imports. Before any verb loads torch, `avatar3d.runtime.configure_process`
sets how this process shares the CPU (see there).
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Sequence

from avatar3d import __version__
from avatar3d.errors import Avatar3DError, InputError, describe_os_error


@dataclass(frozen=True)
class Verb:
    module: str  # module holding the config class and main()
    config: str  # dataclass name
    summary: str
    main: str = "main"


# verb -> Verb, or verb -> {sub-verb -> Verb}
VERBS: dict[str, Verb | dict[str, Verb]] = {
    "enroll": Verb("avatar3d.commands.enroll", "EnrollConfig",
                   "Make an avatar from a talking video: track, segment, train, evaluate."),
    "track": Verb("avatar3d.commands.track", "TrackConfig",
                  "Track a video: landmarks and per-frame rig parameters."),
    "train": {
        "gaussians": Verb("avatar3d.commands.train", "TrainGaussiansConfig",
                          "Re-run Gaussian training of an avatar from its stored frames.",
                          main="main_gaussians"),
        "audio2expr": Verb("avatar3d.commands.train", "TrainAudio2ExprConfig",
                           "Train the audio-to-expression model of an avatar (its voice and its phones; phones "
                           "come from an English recogniser, approximate for other languages).",
                           main="main_audio2expr"),
    },
    "render": Verb("avatar3d.commands.render", "RenderConfig",
                   "Render a clip of an avatar driven by speech, its own tracking or another video."),
    "view": Verb("avatar3d.commands.view", "ViewConfig", "Open the interactive 3D viewer in the browser."),
    "export": Verb("avatar3d.commands.export", "ExportConfig",
                   "Export an avatar as a 3DGS PLY or as a rigged bundle.", main="main_export"),
    "eval": {
        "lipsync": Verb("avatar3d.commands.eval", "EvalLipsyncConfig",
                        "Lip-sync metrics on the held-out tail of the enrollment video, and across speakers "
                        "(--drive-video)."),
        "identity": Verb("avatar3d.commands.eval", "EvalIdentityConfig",
                         "Is it still this person? Face-recognition distance of renders under changed cameras, "
                         "emotions and another voice to the real frames.", main="main_identity"),
        "synthetic": Verb("avatar3d.commands.eval", "EvalSyntheticConfig",
                          "Train on the synthetic subject and score novel views against ground truth.",
                          main="main_synthetic"),
    },
    "bench": {
        "raster": Verb("avatar3d.commands.bench", "BenchRasterConfig",
                       "Benchmark the rasterizer backends (table + JSON).", main="main_raster"),
        "contention": Verb("avatar3d.commands.bench", "BenchContentionConfig",
                           "Time two jobs at once against one alone: how jobs share the cores (table + JSON).",
                           main="main_contention"),
        "lipsync": Verb("avatar3d.commands.bench", "BenchLipsyncConfig",
                        "Time an avatar's audio drive stage by stage on one core (table + JSON).",
                        main="main_lipsync"),
        "portrait": Verb("avatar3d.commands.bench", "BenchPortraitConfig",
                         "Time a portrait's clip against the same avatar's head alone (table + JSON).",
                         main="main_portrait"),
        "render": Verb("avatar3d.commands.bench", "BenchRenderConfig",
                       "Time a clip of an avatar stage by stage: where a frame's time goes (table + JSON).",
                       main="main_render"),
    },
    "models": {
        "install": Verb("avatar3d.commands.models", "ModelsInstallConfig",
                        "Install a head model (FLAME .pkl or ICT-FaceKit folder).", main="main_install"),
        "list": Verb("avatar3d.commands.models", "ModelsListConfig",
                     "List installed head models.", main="main_list"),
    },
    "batch": {
        "enroll": Verb("avatar3d.batch.command", "BatchEnrollConfig",
                       "Enroll many videos (a folder or a manifest) on Ray: skips what is done, goes on past "
                       "failures, ends with a summary.", main="main_enroll"),
        "render": Verb("avatar3d.batch.command", "BatchRenderConfig",
                       "Render many clips (a jobs file) on Ray: skips what is done, goes on past failures, ends "
                       "with a summary.", main="main_render"),
    },
    "demo": Verb("avatar3d.commands.demo", "DemoConfig", "Run the main job on the built-in synthetic subject."),
}


def _usage() -> str:
    lines = [f"avatar3d {__version__}: personalized 3D Gaussian talking heads", "",
             "usage: avatar3d <verb> [<sub-verb>] [options]   (avatar3d <verb> --help for its options)", "",
             "verbs:"]
    for name, verb in VERBS.items():
        if isinstance(verb, Verb):
            lines.append(f"  {name:<20} {verb.summary}")
        else:
            for sub, sv in verb.items():
                lines.append(f"  {name + ' ' + sub:<20} {sv.summary}")
    lines += ["", "options:",
              f"  {'-h, --help':<20} this help (exit code 0; `avatar3d` alone prints it and exits with 2, as for a "
              "missing argument)",
              f"  {'-V, --version':<20} the version",
              f"  {'--verbose':<20} with any verb: keep the log lines native libraries print (MediaPipe, TensorFlow "
              "Lite)"]
    return "\n".join(lines)


def _sub_usage(name: str, subs: dict[str, Verb]) -> str:
    lines = [f"usage: avatar3d {name} <sub-verb> [options]", "", "sub-verbs:"]
    lines += [f"  {sub:<12} {sv.summary}" for sub, sv in subs.items()]
    return "\n".join(lines)


def _plain_warnings(prog: str) -> None:
    """Warnings as one line of ours ("avatar3d train gaussians: warning: ..."), not Python's file, line and
    source (kept with --verbose)."""
    import warnings

    from avatar3d.runtime import verbose

    if verbose():
        return

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file or sys.stderr, flush=True)

    warnings.showwarning = show


def _interrupted_advice(prog: str, args: list[str], config) -> str:
    """What to type after Ctrl-C: the same command with --resume where the verb can resume (outputs only
    appear once complete, so nothing half-written is left either way)."""
    import shlex

    if hasattr(config, "resume"):
        again = [*prog.split(), *[a for a in args if a not in ("--resume", "--restart")], "--resume"]
        return (f"interrupted; the finished stages and the last checkpoint are kept. Continue with: "
                f"{shlex.join(again)}")
    return "interrupted; nothing half-written was left (outputs appear only when complete). Run it again to redo it."


def find_verb(argv: Sequence[str]) -> tuple[str, Verb, list[str]] | int:
    """(program name, verb, its arguments) for `argv`, or the exit code after printing help or a usage error."""
    if not argv:
        print(_usage(), file=sys.stderr)
        print("\navatar3d: give a verb (exit code 2)", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    name, rest = argv[0], list(argv[1:])
    verb = VERBS.get(name)
    if verb is None:
        print(f"avatar3d: unknown verb {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    prog = f"avatar3d {name}"
    if isinstance(verb, dict):
        if not rest or rest[0] in ("-h", "--help"):
            print(_sub_usage(name, verb))
            return 0 if rest else 2
        sub = verb.get(rest[0])
        if sub is None:
            print(f"avatar3d {name}: unknown sub-verb {rest[0]!r}.\n\n{_sub_usage(name, verb)}", file=sys.stderr)
            return 2
        prog, verb, rest = f"{prog} {rest[0]}", sub, rest[1:]
    return prog, verb, rest


def _parse_config(prog: str, verb: Verb, rest: list[str]):
    """The verb's config from its arguments (tyro prints help or a usage error and exits on its own)."""
    import tyro

    config_cls = getattr(importlib.import_module(verb.module), verb.config)
    # a config with `cli_default(args)` fills its defaults first (a preset, a saved config); flags override
    default = config_cls.cli_default(rest) if hasattr(config_cls, "cli_default") else None
    return tyro.cli(config_cls, args=rest, prog=prog, description=verb.summary, default=default)


def _condense(tyro_text: str) -> str:
    """tyro's boxed usage error as one line: its statements and suggestions, without rules and help hints."""
    box = " \u2502\u256d\u256e\u2570\u256f|"
    lines = [line.strip(box) for line in tyro_text.splitlines()]
    kept = [line for line in lines if line.strip("-\u2500 ") and not line.startswith("For full helptext")
            and not line.endswith("--help")]
    if len(kept) > 1 and kept[1].startswith(kept[0]):  # the box's title repeated by its first line
        kept = kept[1:]
    return " ".join(dict.fromkeys(kept)) or "the options could not be read"


def parse(argv: Sequence[str]) -> tuple[str, Verb, object]:
    """(program name, verb, config) of a command line, read exactly as `run` reads it, without running it. A
    mistake raises InputError with the message the command would print (batches check every job this way)."""
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
        found = find_verb(list(argv))
    if isinstance(found, int):
        raise InputError(f"`{' '.join(argv[:2])}` is not a command of avatar3d (`avatar3d --help` lists them)")
    prog, verb, rest = found
    if any(a in ("-h", "--help") for a in rest):
        raise InputError(f"{prog}: --help is not an option of a job")
    try:
        with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
            config = _parse_config(prog, verb, rest)
    except SystemExit as err:
        raise InputError(f"{prog}: {_condense(text.getvalue())}") from err
    return prog, verb, config


def execute(prog: str, verb: Verb, config) -> tuple[int, str | None]:
    """Run a parsed verb: (exit code, the error message the user is shown, or None). Expected failures (our
    errors, an unwritable output) come back as code 1 with their message; anything else propagates."""
    _plain_warnings(prog)
    module = importlib.import_module(verb.module)
    try:
        result = getattr(module, verb.main)(config)
    except Avatar3DError as err:
        return 1, str(err)
    except OSError as err:
        message = describe_os_error(err)
        if message is None:
            raise
        return 1, message
    return (int(result) if isinstance(result, int) else 0), None


def run(argv: Sequence[str]) -> int:
    """Parse `argv` (without the program name), run the verb, return the exit code."""
    from avatar3d.runtime import VERBOSE_ENV, configure_process

    argv = list(argv)
    if "--verbose" in argv:
        argv = [a for a in argv if a != "--verbose"]
        os.environ[VERBOSE_ENV] = "1"
    configure_process()
    found = find_verb(argv)
    if isinstance(found, int):
        return found
    prog, verb, rest = found
    config = None
    try:
        config = _parse_config(prog, verb, rest)
        code, message = execute(prog, verb, config)
    except Avatar3DError as err:  # from the parse (a preset or a saved config that cannot be read)
        code, message = 1, str(err)
    except KeyboardInterrupt:
        print(f"\n{prog}: {_interrupted_advice(prog, rest, config)}", file=sys.stderr)
        return 130
    if message is not None:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def entry() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    entry()
