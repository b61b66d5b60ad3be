"""`avatar3d bench lipsync`: how fast an avatar's audio drive runs, stage by stage, on one core.

For a speech clip: phone decoding (one decode, and the front-end's averaged decodes), the phonetic features,
the acoustic path (networks and lip regressor), and the whole `animate` call, each the median of `repeats`
runs after a warm-up, with one torch thread (what one core gives). The real-time factor is seconds of audio
per second of compute; the acoustic path alone is the peer (what driving cost before the phonetic path).
Prints a table; writes JSON with --json: {"audio_s", "threads", "stages": {name: {"median_s", "realtime"}}}.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import tyro

from avatar3d.benchmarks import report


@dataclass
class BenchLipsyncConfig:
    """Time the audio drive of an avatar, stage by stage (table + optional JSON)."""

    avatar: tyro.conf.Positional[Path]
    """An enrolled avatar with a trained audio-to-expression model."""
    audio: Path = Path("speech.wav")
    """The speech clip to drive it with (e.g. a minute of someone talking)."""
    repeats: int = 3
    """Timed runs per stage (the median is reported)."""
    threads: int = 1
    """torch threads (1: one core, the target's setting)."""
    json: Optional[Path] = None
    """Write the results as JSON to this file (atomically)."""


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: caches, the decoder, the model
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_lipsync(cfg: BenchLipsyncConfig) -> dict:
    import numpy as np
    import torch

    from avatar3d.audio2expr.features import MIN_REF, SAMPLE_RATE, load_audio, loudness_reference
    from avatar3d.audio2expr.infer import animate, load_model, predict_acoustic, voice_distance
    from avatar3d.audio2expr.phones import decode_phones
    from avatar3d.audio2expr.phonetic import phonetic_frames, speech_features

    torch.set_num_threads(max(1, int(cfg.threads)))
    model = load_model(cfg.avatar)
    wave = load_audio(cfg.audio)
    wave = (wave / max(loudness_reference(wave), MIN_REF)).astype(np.float32)
    seconds = len(wave) / SAMPLE_RATE
    fps = float(model.config["fps"])
    frames = max(1, int(round(seconds * fps)))
    stages: dict[str, Callable[[], object]] = {"phone decoding (one decode)": lambda: decode_phones(wave)}
    seg = decode_phones(wave)
    stages["phonetic features (one decode)"] = lambda: phonetic_frames(seg, wave, fps, frames)
    stages["phonetic front-end (all decodes)"] = lambda: speech_features(wave, fps, frames)
    stages["voice print (which voice)"] = lambda: voice_distance(model, wave)
    if model.nets or model.ridge is not None:
        stages["acoustic path (peer)"] = lambda: predict_acoustic(model, wave, fps, frames)
    stages["animate (everything)"] = lambda: animate(cfg.avatar, wave, fps, 0, sample_rate=SAMPLE_RATE)
    result = {"audio_s": round(seconds, 2), "threads": int(cfg.threads), "stages": {}}
    for name, fn in stages.items():
        t = _median_time(fn, cfg.repeats)
        result["stages"][name] = {"median_s": round(t, 3), "realtime": round(seconds / max(t, 1e-9), 1)}
    return result


def format_table(result: dict) -> str:
    lines = [f"{'stage':36s} {'median s':>9s} {'x real time':>12s}"]
    for name, r in result["stages"].items():
        lines.append(f"{name:36s} {r['median_s']:9.3f} {r['realtime']:12.1f}")
    lines.append(f"{result['audio_s']:.1f} s of audio, {result['threads']} torch thread(s)")
    return "\n".join(lines)


def main(cfg: BenchLipsyncConfig) -> int:
    from avatar3d.errors import InputError

    if not cfg.audio.is_file():
        raise InputError(f"--audio {cfg.audio} does not exist; pass a speech clip (wav/mp3/m4a/mp4)")
    result = bench_lipsync(cfg)
    report(format_table(result), result, cfg.json)
    return 0
