"""`avatar3d eval lipsync`, `avatar3d eval synthetic` and `avatar3d eval identity`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from avatar3d.config import Preset


@dataclass
class EvalLipsyncConfig:
    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar with a trained audio-to-expression model."""
    json: Optional[Path] = None
    """Also write the metrics to this JSON file."""
    long_audio: Optional[Path] = None
    """Also drive the avatar with this speech (e.g. a minute of another speaker) and report drift, frozen
    stretches and jitter of the mouth (added to the JSON under `long_audio`)."""
    plot: Optional[Path] = None
    """With --long-audio: save a PNG of the mouth opening and jaw angle over time next to the audio envelope."""
    drive_video: Optional[Path] = None
    """Also drive the avatar with the audio of another person's video (a video file, tracked here, or its
    `avatar3d track` folder) and score the mouth against that video's own tracked mouth: correlation, lip error
    after per-person normalisation, and the mouth in the driver's pauses against the rest pose (added to the JSON
    under `cross_speaker`). Phones come from an English recogniser: for other languages they are approximate."""


@dataclass
class EvalIdentityConfig:
    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar."""
    audio: Optional[Path] = None
    """Also drive the face with this speech (another voice) and score those renders."""
    frames: int = 8
    """Held-out frames rendered under each control (spread over the tail training never saw)."""
    json: Optional[Path] = None
    """Also write the report to this JSON file."""
    sheet: Optional[Path] = None
    """Also save a contact sheet (PNG) of the first render under each control: the cameras and the eight
    emotions at intensity 1."""
    backend: Literal["auto", "cpu", "torch", "cuda"] = "auto"
    """Rasterizer backend."""


@dataclass
class EvalSyntheticConfig:
    json: Optional[Path] = None
    """Also write the metrics to this JSON file (the side-by-side PNG is written next to it too)."""
    preset: Preset = "fast"
    """Training preset (configs/<preset>.yaml, section train)."""
    out: Path = Path("outputs/eval_synthetic")
    """Where the synthetic training video, the trained avatar, novel_views.png and report.json go."""
    seconds: float = 4.0
    """Length of the synthetic training video (all frames are trained on; 4 s shows more poses than 2 s)."""
    fps: float = 25.0
    """Frame rate of the synthetic training video."""
    resolution: Optional[int] = None
    """Side of the training frames and of the scored views, pixels (default: the preset's training resolution)."""
    iterations: Optional[int] = None
    """Training steps (default: the preset's)."""
    seed: int = 0
    """Seed of the synthetic subject (its texture, identity and motion)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Compute device for training and rendering."""
    framing: Literal["head", "portrait"] = "head"
    """head: the head alone over white; portrait: with shoulders in a shirt and its room behind, enrolled as a video
    is (the torso fitted to the person masks, the plate estimated from the frames) and scored over that plate."""


def main(cfg: EvalLipsyncConfig) -> int:
    from avatar3d.audio2expr.lipsync import evaluate_lipsync, format_table, write_json
    from avatar3d.errors import InputError

    if cfg.plot is not None and cfg.long_audio is None:
        raise InputError("--plot draws the drive by --long-audio; add --long-audio SPEECH.wav")
    result = evaluate_lipsync(cfg.avatar)
    print(format_table(result))
    if cfg.long_audio is not None:
        from avatar3d.audio2expr.long_audio import long_audio_report
        from avatar3d.head.registry import load_rig
        from avatar3d.tracking.sequence import TrackedSequence

        rig = load_rig(TrackedSequence.load(Path(cfg.avatar) / "tracking.npz").rig_name)
        long = long_audio_report(cfg.avatar, cfg.long_audio, rig, plot=cfg.plot)
        result["long_audio"] = long
        print(f"long audio {cfg.long_audio.name}: {long['audio_seconds']:.1f} s at {long['realtime_factor']:.0f}x "
              f"real time; mouth opening per 10 s {long['opening_mm_per_10s']} mm (drift {long['drift_mm']:.2f} mm); "
              f"longest still stretch in speech {long['longest_still_speech_frames']} frames; mean change "
              f"{long['mean_abs_change_mm']:.2f} mm/frame (tracked video {long['tracked_mean_abs_change_mm']:.2f}); "
              f"correlation with the envelope {long['corr_with_envelope']:.2f}"
              + (f"; plot {long['plot']}" if "plot" in long else ""))
        print("\n".join(long["chart"]))
    if cfg.drive_video is not None:
        from avatar3d.audio2expr.cross_speaker import evaluate_cross_speaker, format_cross_table

        result["cross_speaker"] = evaluate_cross_speaker(cfg.avatar, cfg.drive_video)
        result["cross_speaker"]["drive"] = cfg.drive_video.name
        print(format_cross_table(result["cross_speaker"], cfg.drive_video.name))
    if cfg.json is not None:
        write_json(cfg.json, result)
        print(f"wrote {cfg.json}")
    return 0


def main_synthetic(cfg: EvalSyntheticConfig) -> int:
    """Train on the synthetic subject with a preset and print/write PSNR/SSIM per novel view."""
    import shutil

    import torch

    from avatar3d.config import preset_section
    from avatar3d.errors import InputError
    from avatar3d.head.synthetic_subject import NOVEL_VIEWS
    from avatar3d.io.atomic import atomic_write_json
    from avatar3d.pipeline.synthetic_eval import format_table, run_synthetic_eval, scaled_schedule
    from avatar3d.training.config import TrainConfig

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    if not cfg.seconds > 0 or not cfg.fps > 0:
        raise InputError(f"--seconds {cfg.seconds} and --fps {cfg.fps} must be positive (e.g. 2 s at 25 fps)")
    train = preset_section(cfg.preset, "train", TrainConfig)
    if cfg.iterations is not None:
        train = scaled_schedule(train, cfg.iterations)

    def say(msg: str) -> None:
        print(f"[eval synthetic] {msg}", flush=True)

    report = run_synthetic_eval(cfg.out, train, seconds=cfg.seconds, fps=cfg.fps, resolution=cfg.resolution,
                                seed=cfg.seed, device=cfg.device, say=say, portrait=cfg.framing == "portrait")
    report["preset"] = cfg.preset
    atomic_write_json(Path(cfg.out) / "report.json", report)
    outputs = [str(Path(cfg.out) / "report.json"), report["outputs"]["sheet"]]
    if cfg.json is not None:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.json, report)
        sheet = Path(cfg.json).with_suffix(".png")
        shutil.copyfile(report["outputs"]["sheet"], sheet)
        outputs += [str(cfg.json), str(sheet)]
    print()
    print(format_table(report))
    s = report["seconds"]
    key = report["target_on"]
    short = [name for name in NOVEL_VIEWS if report["views"][name][key] < report["target_psnr"]]
    verdict = f"{key} below the {report['target_psnr']:.0f} dB target: {', '.join(short)}" if short else \
        f"every novel view meets the {report['target_psnr']:.0f} dB target on {key}"
    print(f"\nnovel views: {report['psnr']:.2f} dB mean ({verdict}); "
          f"{report['num_gaussians']} Gaussians, {report['iterations']} steps on {report['frames_train']} frames "
          f"at {report['resolution']} px; {s['total']:.0f} s (subject {s['subject']:.0f}, train {s['train']:.0f}, "
          f"eval {s['eval']:.0f})")
    print("wrote " + ", ".join(outputs) + " (rows: views; columns: ground truth | render | error x4)")
    return 0


def _check_identity_inputs(cfg: EvalIdentityConfig) -> None:
    """What would fail after the renders, found before them."""
    from avatar3d.errors import InputError
    from avatar3d.eval.identity import FaceEmbedder
    from avatar3d.io.avatar_dir import AvatarPaths, read_manifest

    read_manifest(cfg.avatar)
    FaceEmbedder()  # dlib and its models are there
    if cfg.audio is not None and not Path(cfg.audio).is_file():
        raise InputError(f"--audio {cfg.audio} does not exist; pass a speech file")
    if cfg.audio is not None and not AvatarPaths(cfg.avatar).has_audio_model():
        raise InputError(f"{cfg.avatar} has no audio-to-expression model for --audio; train it with `avatar3d train "
                         f"audio2expr {cfg.avatar}` or leave --audio out")
    for flag, path in (("--json", cfg.json), ("--sheet", cfg.sheet)):
        if path is not None and not Path(path).parent.is_dir():
            raise InputError(f"{flag} {path}: its folder does not exist; create it first")


def main_identity(cfg: EvalIdentityConfig) -> int:
    from avatar3d.errors import InputError
    from avatar3d.io.atomic import atomic_write_bytes, atomic_write_json
    from avatar3d.pipeline.identity_eval import contact_sheet, identity_report

    if not 1 <= cfg.frames <= 200:
        raise InputError(f"--frames {cfg.frames} is outside 1..200; use e.g. 8")
    _check_identity_inputs(cfg)
    print("control              identity distance to the real frames (one person: usually under 0.6)")
    report, firsts = identity_report(cfg.avatar, audio=cfg.audio, frames=cfg.frames, backend=cfg.backend)
    spread = report["real_spread"]
    print(f"{'real vs real':<20} {'n/a' if spread is None else f'{spread:.3f}'}  (the real frames among themselves; "
          f"no face in {report['real_no_face']} of {report['frames']})")
    if cfg.json is not None:
        atomic_write_json(cfg.json, report)
    if cfg.sheet is not None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(contact_sheet(firsts)).save(buf, format="PNG")
        atomic_write_bytes(cfg.sheet, buf.getvalue())
        print(f"contact sheet: {cfg.sheet}")
    return 0
