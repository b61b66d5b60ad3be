"""Inference: any speech clip -> per-frame rig parameters of the person.

`animate(model_dir, audio, fps=None, seed=0)` returns a dict of per-frame arrays (`expr [T,E]`,
`jaw [T,3]`, `neck [T,3]`, `eyes [T,2,3]`, plus `fps`, `speech [T]`); `to_rig_params` turns it into
`RigParams`. The network runs over chunks of frames with overlap: its attention is local, so away from
a chunk's borders its output equals whole-clip inference exactly; neighbouring chunks are cross-faded
only inside the part of the overlap where both are exact, so there are no seams and memory does not
grow with the clip. On top, seeded procedural motion: blinks at a natural rate (also in silence), gaze
fixations with small saccades around a target (the camera by default: the person's tracked mean gaze),
and slow idle head motion that grows in pauses.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from avatar3d.audio2expr.features import (MIN_REF, SAMPLE_RATE, FeatureExtractor, frame_energy, load_audio,
                                          loudness_reference, make_extractor)
from avatar3d.audio2expr.model import Audio2Expr, ModelConfig
from avatar3d.audio2expr.phonetic import speech_features
from avatar3d.audio2expr.prosody import median_f0
from avatar3d.audio2expr.ridge import LipRidge
from avatar3d.audio2expr.visemes import VisemeModel
from avatar3d.audio2expr.voiceprint import voice_distance as voice_distance_of_prints
from avatar3d.audio2expr.voiceprint import VoicePrint, voice_print
from avatar3d.errors import InputError

SMOOTH_S = 0.025  # output smoothing (Gaussian sigma, seconds): removes single-frame jumps, keeps syllables
BLINKS_PER_MIN = 17.0


@dataclass
class LoadedModel:
    config: dict
    mean: Tensor  # [C] tracked mean of expr|jaw|neck
    std: Tensor  # [C]
    eyes_mean: Tensor  # [2,3]
    nets: list[Audio2Expr]  # the ensemble (empty: no network); outputs are averaged
    extractor: Optional[FeatureExtractor]
    ridge: Optional[LipRidge] = None
    ridge_extractor: Optional[FeatureExtractor] = None
    visemes: Optional[VisemeModel] = None  # the phonetic path (phones -> the person's visemes)


_CACHE: dict[tuple, LoadedModel] = {}


def load_model(model_dir: Union[str, Path], audio_encoder: Optional[Path] = None) -> LoadedModel:
    """Read AVATAR/audio2expr (or the folder itself); cached per folder and file time."""
    folder = Path(model_dir)
    if (folder / "audio2expr" / "config.json").is_file():
        folder = folder / "audio2expr"
    cfg_path, model_path = folder / "config.json", folder / "model.safetensors"
    if not cfg_path.is_file() or not model_path.is_file():
        raise InputError(f"{folder} holds no trained audio-to-expression model; run "
                         f"`avatar3d train audio2expr {folder.parent if folder.name == 'audio2expr' else folder}`")
    key = (str(folder.resolve()), cfg_path.stat().st_mtime_ns, model_path.stat().st_mtime_ns, str(audio_encoder))
    if key in _CACHE:
        return _CACHE[key]
    try:
        config = json.loads(cfg_path.read_text())
        tensors = load_file(str(model_path))
    except Exception as err:
        raise InputError(f"{folder} is damaged ({type(err).__name__}: {err}); re-run `avatar3d train audio2expr`") from err
    nets, extractor = [], None
    if config.get("kind") == "transformer":
        mcfg = ModelConfig(**config["model"])
        # ensemble members are saved as net0.*, net1.*, ...; models from before ensembles hold one net.*
        prefixes = [f"net{m}." for m in range(int(config["members"]))] if "members" in config else ["net."]
        for prefix in prefixes:
            net = Audio2Expr(mcfg)
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                net.load_state_dict(state)
            except RuntimeError as err:
                raise InputError(f"{folder} is damaged (network {prefix[:-1]}: {err}); re-run "
                                 "`avatar3d train audio2expr`") from err
            nets.append(net.eval())
        extractor = make_extractor(config.get("features"), audio_encoder)
    ridge = ridge_ex = None
    if "ridge" in config and "ridge.weight" in tensors:
        ridge = LipRidge.from_tensors(config["ridge"], tensors)
        ridge_ex = make_extractor(config.get("ridge_features"))
    visemes = VisemeModel.from_tensors(config["visemes"], tensors) if "visemes" in config else None
    loaded = LoadedModel(config, tensors["mean"], tensors["std"], tensors["eyes_mean"], nets, extractor, ridge, ridge_ex,
                         visemes)
    _CACHE.clear()
    _CACHE[key] = loaded
    return loaded


def _chunks(total: int, chunk: int, overlap: int):
    """(start, length) of chunks covering [0, total) with `overlap` frames shared by neighbours."""
    if total <= chunk:
        return [(0, total)]
    step = chunk - overlap
    starts = list(range(0, max(1, total - overlap), step))
    if starts[-1] + chunk < total:
        starts.append(total - chunk)
    return [(s, min(chunk, total - s)) for s in starts]


def predict_normalised(model: LoadedModel, wave: np.ndarray, fps: float, num_frames: int, chunk: int = 512) -> Tensor:
    """[T,C] normalised channels: the acoustic path (the transformers' mean, the lip regressor, or their blend)
    and the phonetic path, blended by the shares training chose. Raises PhonesUnreliable when only the phonetic
    path exists and this audio's phones cannot be trusted."""
    other = voice_distance(model, wave) if model.visemes is not None else 0.0
    share, gain = voice_mix(model, wave, other) if model.visemes is not None else (0.0, 1.0)
    phonetic = None
    if share > 0.0:
        features, judged = speech_features(wave, fps, num_frames)
        if judged.reliable:
            phonetic = model.visemes.predict(features, other)
        elif model.nets or model.ridge is not None:
            warnings.warn(f"the phones of this audio are not reliable ({judged.reason}); the lips follow the "
                          "acoustic model alone", AudioWarning)
            share, gain = 0.0, 1.0  # the gain was chosen for the blend
        else:
            raise PhonesUnreliable(judged.reason)
    acoustic = None if share >= 1.0 else predict_acoustic(model, wave, fps, num_frames, chunk)
    if phonetic is None:
        out = acoustic
    elif acoustic is None:
        out = phonetic
    else:
        out = share * phonetic + (1.0 - share) * acoustic
    return smooth_frames(out * gain, SMOOTH_S * fps)


VOICE_STEP = math.log(1.15)  # a pitch this far from the enrollment voice's counts as another voice


def voice_distance(model: LoadedModel, wave: np.ndarray) -> float:
    """How far this audio's voice is from the enrollment voice, 0 (the same) to 1 (another speaker's): by the
    voices' spectral prints (voiceprint.py); for models saved before them, by the median pitch (1 at 15 % apart).
    A voice that cannot be measured counts as a stranger's."""
    enrolled = model.config.get("voice_print")
    if enrolled is not None:
        heard = voice_print(wave)
        return 1.0 if heard is None else voice_distance_of_prints(VoicePrint.from_json(enrolled), heard)
    f0_train, f0 = model.config.get("voice_f0_hz"), median_f0(wave)
    return 1.0 if f0_train is None or f0 is None else min(1.0, abs(math.log(f0 / f0_train)) / VOICE_STEP)


def voice_mix(model: LoadedModel, wave: np.ndarray, other: Optional[float] = None) -> tuple[float, float]:
    """(phonetic share, output gain) for this audio: training's choices for the enrollment voice, moving to its
    choices for other voices with the voice distance `other` (voice_distance, computed when not given)."""
    cfg = model.config
    w = voice_distance(model, wave) if other is None else float(other)
    same = float(cfg.get("phonetic_share", 0.0)), float(cfg.get("gain", 1.0))
    far = float(cfg.get("phonetic_share_other_voice", same[0])), float(cfg.get("gain_other_voice", same[1]))
    return (1.0 - w) * same[0] + w * far[0], (1.0 - w) * same[1] + w * far[1]


class AudioWarning(UserWarning):
    """Something about the driving audio that makes the animation less good than it could be."""


class PhonesUnreliable(Exception):
    """The phonetic-only model met audio whose phones cannot be trusted (the energy fallback takes over)."""


def predict_acoustic(model: LoadedModel, wave: np.ndarray, fps: float, num_frames: int, chunk: int = 512) -> Tensor:
    """[T,C] the acoustic path: the transformers' mean, the lip regressor, or their blend (share from training)."""
    blend = float(model.config.get("blend", 0.0)) if model.ridge is not None else 0.0
    if not model.nets and model.ridge is None:
        raise InputError("this audio-to-expression model has neither a network nor a regressor; re-run "
                         "`avatar3d train audio2expr`")
    out = None
    if model.nets and blend < 1.0:
        out = run_network(model, wave, fps, num_frames, chunk=chunk) * (1.0 - blend)
    if model.ridge is not None and (blend > 0.0 or not model.nets):
        r = model.ridge.predict(model.ridge_extractor, wave, fps, num_frames, 0.0, chunk=max(chunk, 256))
        out = r * (blend if model.nets else 1.0) + (0.0 if out is None else out)
    return out


def smooth_frames(x: Tensor, sigma: float) -> Tensor:
    """x: [T,C] -> [T,C] Gaussian-smoothed over time (sigma in frames; edges held)."""
    radius = int(np.ceil(3 * sigma))
    if sigma <= 0 or radius == 0 or x.shape[0] < 2:
        return x
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).repeat(x.shape[1], 1, 1)  # [C,1,K] one kernel per channel
    padded = torch.nn.functional.pad(x.T[None], (radius, radius), mode="replicate")  # [1,C,T+2r]
    return torch.nn.functional.conv1d(padded, k, groups=x.shape[1])[0].T


def run_network(model: LoadedModel, wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0,
                chunk: int = 512, overlap: Optional[int] = None) -> Tensor:
    """Normalised output [T,C] of the networks (their mean) for frames at t0 + i/fps, chunked with exact
    cross-fades."""
    nets, ex = model.nets, model.extractor
    reach = nets[0].cfg.reach
    overlap = 2 * reach + 16 if overlap is None else int(overlap)
    if chunk <= overlap + 1:
        raise InputError(f"chunk ({chunk} frames) must exceed the overlap ({overlap}); use a larger chunk")
    fade_lo, fade_hi = (reach, overlap - reach) if overlap > 2 * reach else (0, overlap)
    out = torch.zeros(num_frames, nets[0].cfg.out_dim)
    weight = torch.zeros(num_frames, 1)
    spans = _chunks(num_frames, chunk, overlap)
    with torch.no_grad():
        for n, (s, length) in enumerate(spans):
            feats = ex.frames(wave, fps, length, t0 + s / fps)  # [L,k,D]
            y = torch.stack([net(feats[None])[0] for net in nets]).mean(0)  # [L,C]
            w = torch.ones(length, 1)
            ramp = torch.clamp((torch.arange(length, dtype=torch.float32) - fade_lo + 0.5) / max(1, fade_hi - fade_lo), 0, 1)
            if n > 0:  # rising edge at the start, inside the exact part of the overlap
                w = w * ramp[:, None]
            if n + 1 < len(spans):
                nxt = spans[n + 1][0] - s  # where the next chunk begins inside this one
                fall = 1 - torch.clamp((torch.arange(length, dtype=torch.float32) - nxt - fade_lo + 0.5)
                                       / max(1, fade_hi - fade_lo), 0, 1)
                w = w * fall[:, None]
            out[s:s + length] += y * w
            weight[s:s + length] += w
    return out / weight.clamp_min(1e-8)


# ------------------------------------------------------------------------------------------ procedural motion
def blink_curve(num_frames: int, fps: float, rng: np.random.Generator, per_min: float = BLINKS_PER_MIN) -> np.ndarray:
    """[T] eyelid closure in [0,1]: gamma-distributed intervals (mean 60/per_min s), 80 ms close, 170 ms open."""
    curve = np.zeros(num_frames)
    mean = 60.0 / per_min
    t = float(rng.uniform(0.3, mean))
    duration = num_frames / fps
    times = np.arange(num_frames) / fps
    while t < duration:
        close, reopen = 0.08 * rng.uniform(0.8, 1.2), 0.17 * rng.uniform(0.8, 1.3)
        rise = np.clip((times - (t - close)) / close, 0, 1)
        fall = np.clip(1 - (times - t) / reopen, 0, 1)
        shape = np.where(times < t, rise, fall)
        curve = np.maximum(curve, np.sin(0.5 * np.pi * shape) ** 2)
        t += max(0.6, float(rng.gamma(3.0, mean / 3.0)))
    return curve


def saccades(num_frames: int, fps: float, rng: np.random.Generator, spread_deg: float = 1.5) -> np.ndarray:
    """[T,2] gaze offsets (pitch, yaw) in radians: fixations of 0.3-1.8 s joined by ~50 ms saccades."""
    out = np.zeros((num_frames, 2))
    times = np.arange(num_frames) / fps
    t, prev = 0.0, np.zeros(2)
    while t < num_frames / fps:
        target = np.deg2rad(rng.normal(0.0, spread_deg, 2)) * np.array([0.6, 1.0])  # less vertical than horizontal
        w = np.clip((times - t) / 0.05, 0, 1)[:, None]
        out = np.where((times >= t)[:, None], prev * (1 - w) + target * w, out)
        prev = target
        t += float(rng.uniform(0.3, 1.8))
    return out


def idle_motion(num_frames: int, fps: float, rng: np.random.Generator, amp_rad: np.ndarray) -> np.ndarray:
    """[T,3] slow head sway: a few low-frequency sinusoids per axis with random phases (amplitude amp_rad [3])."""
    times = np.arange(num_frames) / fps
    out = np.zeros((num_frames, 3))
    for axis in range(3):
        for _ in range(3):
            f = rng.uniform(0.05, 0.35)
            out[:, axis] += np.sin(2 * np.pi * f * times + rng.uniform(0, 2 * np.pi)) / 3.0
    return out * amp_rad[None]


def speech_activity(wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0) -> np.ndarray:
    """[T] in [0,1]: smoothed speech presence per frame (for idle motion in pauses)."""
    e = frame_energy(wave, fps, num_frames, t0, 1.0).numpy()
    active = np.clip((e - 0.45) / 0.25, 0, 1)  # energy relative to the normalised speech level
    k = max(1, int(round(0.4 * fps)))
    return np.convolve(active, np.ones(k) / k, mode="same")


# ------------------------------------------------------------------------------------------ the API
def animate(model_dir: Union[str, Path], audio, fps: Optional[float] = None, seed: int = 0, *,
            sample_rate: Optional[int] = None, tracked_mean: Optional[dict] = None,
            gaze_offset_deg: tuple = (0.0, 0.0), procedural: bool = True, chunk: int = 512,
            audio_encoder: Optional[Path] = None) -> dict:
    """Per-frame rig parameters for `audio` (a path to wav/mp3/m4a/mp4, or an array with `sample_rate`).

    fps: output frame rate (default: the enrollment video's). tracked_mean: optional overrides of the
    person's mean ({"expr": [E], "jaw": [3], "neck": [3], "eyes": [2,3]}). gaze_offset_deg: (pitch, yaw)
    of the gaze target relative to the camera. Returns {"expr" [T,E], "jaw" [T,3], "neck" [T,3],
    "eyes" [T,2,3], "speech" [T], "fps"} as float32 numpy arrays. Deterministic for a seed.
    """
    model = load_model(model_dir, audio_encoder)
    cfg = model.config
    fps = float(fps if fps is not None else cfg["fps"])
    if not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps}; use e.g. 25")
    wave = load_audio(audio, sample_rate)
    wave = (wave / max(loudness_reference(wave), MIN_REF)).astype(np.float32)
    num_frames = max(1, int(round(len(wave) / SAMPLE_RATE * fps)))
    e = int(cfg["num_expr"])
    mean = model.mean.double().numpy().copy()
    std = model.std.double().numpy()
    eyes_mean = model.eyes_mean.double().numpy().copy()
    if tracked_mean:
        for key, sl in (("expr", slice(0, e)), ("jaw", slice(e, e + 3)), ("neck", slice(e + 3, e + 6))):
            if key in tracked_mean:
                mean[sl] = np.asarray(tracked_mean[key], np.float64).reshape(-1)
        if "eyes" in tracked_mean:
            eyes_mean = np.asarray(tracked_mean["eyes"], np.float64).reshape(2, 3)
    z = None
    if cfg.get("kind") in ("transformer", "ridge", "phonetic"):
        try:
            z = predict_normalised(model, wave, fps, num_frames, chunk=chunk).double().numpy()
        except PhonesUnreliable as err:
            warnings.warn(f"the phones of this audio are not reliable ({err}); the jaw follows its loudness "
                          "instead", AudioWarning)
    if z is not None:
        values = mean + z * std
    else:  # energy fallback: the jaw follows the loudness, the rest stays at the person's mean
        energy = frame_energy(wave, fps, num_frames, 0.0, 1.0).numpy().astype(np.float64)
        values = np.repeat(mean[None], num_frames, 0)
        values[:, e:e + 3] = np.asarray(cfg["energy"]["a"])[None] + energy[:, None] * np.asarray(cfg["energy"]["b"])[None]
    expr, jaw, neck = values[:, :e], values[:, e:e + 3], values[:, e + 3:e + 6]
    eyes = np.repeat(eyes_mean[None], num_frames, 0)
    activity = speech_activity(wave, fps, num_frames)
    if procedural:
        rng = np.random.default_rng(seed)
        blink = blink_curve(num_frames, fps, rng)
        for idx in cfg.get("blink_channels", []):
            expr[:, idx] = expr[:, idx] + (1.0 - expr[:, idx]) * blink
        gaze = saccades(num_frames, fps, rng) + np.deg2rad(np.asarray(gaze_offset_deg, np.float64))[None]
        eyes[:, :, 0] += gaze[:, None, 0]  # pitch about x
        eyes[:, :, 1] += gaze[:, None, 1]  # yaw about y
        amp = np.clip(np.asarray(cfg.get("head_motion_std", [0.02] * 3)), np.deg2rad(0.5), np.deg2rad(3.0))
        idle = idle_motion(num_frames, fps, rng, amp)
        neck = neck + idle * (0.4 + 0.6 * (1.0 - activity))[:, None]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"expr": f32(expr), "jaw": f32(jaw), "neck": f32(neck), "eyes": f32(eyes), "speech": f32(activity),
            "fps": fps}


def to_rig_params(params: dict, shape, global_rot=None, transl=None):
    """`RigParams` from `animate`'s output; shape: [S] identity; global_rot/transl: [3] or [T,3] (default 0)."""
    from avatar3d.head.rig import RigParams

    t = params["expr"].shape[0]
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    rows = lambda a: as_t(np.zeros((t, 3)) if a is None else np.broadcast_to(np.asarray(a), (t, 3)).copy())  # noqa: E731
    return RigParams(as_t(shape), as_t(params["expr"]), rows(global_rot), as_t(params["neck"]), as_t(params["jaw"]),
                     as_t(params["eyes"]), rows(transl))
