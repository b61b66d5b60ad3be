"""Audio features aligned to video frames, behind one interface.

`FeatureExtractor.frames(wave, fps, num_frames, t0)` returns `[num_frames, per_frame, dim]`: for video
frame i (time `t0 + i / fps` in the waveform), `per_frame` feature vectors centred on the sub-frame
times `t0 + (i + (j + 0.5) / per_frame - 0.5) / fps`, so the frame's own timestamp sits in the middle of
its features. Times outside the waveform read silence, so any window of a clip can be featurised alone
(chunked inference and training windows see the same values as the whole clip, given enough audio
context around them).

Two kinds:
- `LogMel` (default): log-mel spectrogram in torch at a 100 Hz base rate (25 ms Hann windows), sampled
  at the sub-frame times by linear interpolation (any frame rate, not only divisors of 100). No downloads.
- `PretrainedEncoder`: a frozen wav2vec 2.0 / HuBERT / WavLM model (`transformers` layout) read from a
  local folder; its 50 Hz hidden states are interpolated the same way.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from avatar3d.errors import InputError, MediaError
from avatar3d.io.media import AUDIO_RATE as SAMPLE_RATE

BASE_HOP = 160  # 10 ms: the log-mel base rate is 100 Hz
WIN = 400  # 25 ms
N_FFT = 512
CONTEXT_S = 0.5  # audio read around a window so edge features equal whole-clip ones
MIN_REF = 0.01  # loudness floor (-40 dBFS): near-silent input is not amplified to speech level
PAUSE_MIN_S = 0.3  # quiet for this long in a row: a pause (shorter: a gap between words)
PAUSE_ENERGY = 0.25  # frame energy (0: 40 dB under the speech level, 1: at it) below which a frame is quiet


def load_audio(audio: Union[str, Path, np.ndarray, Tensor], sample_rate: Optional[int] = None) -> np.ndarray:
    """Any audio input as float32 mono [A] at 16 kHz.

    audio: a path (wav/mp3/m4a/mp4/...) or an array [A] / [A,C] / [C,A] (then `sample_rate` is required).
    """
    if isinstance(audio, (str, Path)):
        from avatar3d.io.media import read_audio

        path = Path(audio)
        if not path.is_file():
            raise MediaError(f"{path} does not exist; pass the path of a wav/mp3/m4a/mp4 file with speech")
        if path.stat().st_size == 0:
            raise MediaError(f"{path} is empty (0 bytes); pass a real audio file (wav/mp3/m4a/mp4)")
        try:
            wave = read_audio(path, SAMPLE_RATE)
        except MediaError:
            raise
        except Exception as err:  # decoders raise many types for non-media files
            raise MediaError(f"{path} cannot be decoded as audio ({type(err).__name__}: {err}); "
                             "pass a wav/mp3/m4a/mp4 file") from err
        if wave.size == 0:
            raise MediaError(f"{path} holds no audio samples; pass a file with a non-empty sound track")
        if not np.isfinite(wave).all():
            bad = int((~np.isfinite(wave)).sum())
            raise MediaError(f"{path} has {bad} NaN or infinite samples (a damaged floating-point wav?); export "
                             "it again, e.g. as 16-bit PCM wav")
        return wave
    if sample_rate is None or int(sample_rate) <= 0:
        raise InputError("an audio array needs its sample rate: pass sample_rate=... (Hz), e.g. 16000")
    wave = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio).detach().cpu().float()
    if wave.dim() == 2:  # channels: the short axis
        wave = wave.mean(dim=0 if wave.shape[0] < wave.shape[1] else 1)
    if wave.dim() != 1 or wave.numel() == 0:
        raise InputError(f"audio array has shape {tuple(wave.shape)}; pass a non-empty mono [A] or "
                         "multichannel [A,C] array")
    if not torch.isfinite(wave).all():
        raise InputError("audio array contains NaN or inf samples; clean the signal before animating")
    sr = int(sample_rate)
    if sr != SAMPLE_RATE:
        n = max(1, int(round(wave.numel() * SAMPLE_RATE / sr)))
        wave = torch.nn.functional.interpolate(wave[None, None], size=n, mode="linear", align_corners=False)[0, 0]
    return wave.numpy().astype(np.float32, copy=False)


def loudness_reference(wave: np.ndarray) -> float:  # wave: [A] 16 kHz
    """A level for normalising speech: the 90th percentile of 20 ms RMS (robust to silence and peaks)."""
    n = len(wave) // 320
    if n == 0:
        return 1.0
    rms = np.sqrt(np.mean(wave[: n * 320].reshape(n, 320).astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(max(np.percentile(rms, 90), 1e-4))


def speech_seconds(wave: np.ndarray) -> float:
    """Seconds of 20 ms frames loud enough to be speech (above -50 dBFS and 12 dB over the noise floor)."""
    n = len(wave) // 320
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(np.asarray(wave[: n * 320], np.float64).reshape(n, 320) ** 2, axis=1) + 1e-12)
    floor = np.percentile(rms, 10)
    return float(np.sum((rms > 0.003) & (rms > floor * 4.0)) * 0.02)


def sub_frame_times(fps: float, num_frames: int, per_frame: int, t0: float = 0.0) -> Tensor:
    """[num_frames, per_frame] seconds at which each frame's features are taken."""
    i = torch.arange(num_frames, dtype=torch.float64)[:, None]
    j = torch.arange(per_frame, dtype=torch.float64)[None]
    return t0 + (i + (j + 0.5) / per_frame - 0.5) / float(fps)


def interp_rows(table: Tensor, rate: float, times: Tensor) -> Tensor:
    """table: [N,D] sampled at k / rate seconds; times: [...] -> [...,D] (linear, edges held)."""
    pos = (times * rate).clamp(0, table.shape[0] - 1).to(table.dtype)
    lo = pos.floor().long().clamp(max=table.shape[0] - 1)
    hi = (lo + 1).clamp(max=table.shape[0] - 1)
    w = (pos - lo.to(pos.dtype))[..., None]
    return table[lo] * (1 - w) + table[hi] * w


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmin: float = 40.0,
                   fmax: float = 7600.0) -> Tensor:
    """[n_fft//2+1, n_mels] triangular HTK-mel filters (area-normalised)."""
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    mels = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    lo, mid, hi = hz[:-2][None], hz[1:-1][None], hz[2:][None]
    up = (bins - lo) / (mid - lo)
    down = (hi - bins) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0)
    fb = fb * (2.0 / (hi - lo))
    return fb.float()


class FeatureExtractor:
    """Interface: `dim` (per sub-frame), `per_frame`, `frames(wave, fps, num_frames, t0) -> [T,per_frame,dim]`."""

    kind = "base"
    dim: int
    per_frame: int

    def base_features(self, wave: Tensor) -> tuple[Tensor, float]:  # wave: [A] 16 kHz
        """A table over the whole waveform at its own rate, in the domain where it is interpolated:
        ([N,dim], rate in Hz); row m sits at m / rate seconds."""
        raise NotImplementedError

    def finish(self, x: Tensor) -> Tensor:  # x: [...,dim] interpolated table rows -> features
        return x

    def frames(self, wave, fps: float, num_frames: int, t0: float = 0.0) -> Tensor:
        """wave: [A] float 16 kHz (numpy or tensor); frame i sits at t0 + i/fps seconds -> [T,per_frame,dim]."""
        wave = torch.as_tensor(wave, dtype=torch.float32)
        if num_frames <= 0:
            return torch.zeros(0, self.per_frame, self.dim)
        times = sub_frame_times(fps, num_frames, self.per_frame, t0)
        # read only the audio the requested frames need (plus context), on the 10 ms grid of the whole clip,
        # so a window's features equal the whole clip's: cost follows the window, not the clip
        a = int(math.floor((float(times.min()) - CONTEXT_S) * SAMPLE_RATE / BASE_HOP)) * BASE_HOP
        b = int(math.ceil((float(times.max()) + CONTEXT_S) * SAMPLE_RATE / BASE_HOP)) * BASE_HOP
        seg = torch.zeros(b - a, dtype=torch.float32)  # silence outside the clip
        lo, hi = max(0, a), min(wave.numel(), b)
        if hi > lo:
            seg[lo - a: hi - a] = wave[lo:hi]
        start = a / SAMPLE_RATE
        table, rate = self.base_features(seg)
        return self.finish(interp_rows(table, rate, times - start))


class LogMel(FeatureExtractor):
    kind = "logmel"

    def __init__(self, n_mels: int = 80, per_frame: int = 4):
        self.dim = int(n_mels)
        self.per_frame = int(per_frame)
        self._fb = mel_filterbank(self.dim)
        self._window = torch.hann_window(WIN)

    def mel_power(self, wave: Tensor) -> Tensor:  # wave: [A] -> [N,n_mels] mel power at 100 Hz (row m: m/100 s)
        if wave.numel() < WIN:
            wave = torch.nn.functional.pad(wave, (0, WIN - wave.numel()))
        spec = torch.stft(wave, N_FFT, hop_length=BASE_HOP, win_length=WIN, window=self._window.to(wave.device),
                          center=True, pad_mode="constant", return_complex=True)  # [F,N]
        power = spec.real ** 2 + spec.imag ** 2
        return power.T @ self._fb.to(wave.device)

    def noise_mel(self) -> Tensor:
        """[n_mels] expected mel power of white noise of unit variance (for noise augmentation)."""
        return self._window.pow(2).sum() * self._fb.sum(0)

    def base_features(self, wave: Tensor) -> tuple[Tensor, float]:  # wave: [A]
        return self.mel_power(wave), SAMPLE_RATE / BASE_HOP  # interpolated as power, then logged

    def finish(self, x: Tensor) -> Tensor:
        return torch.log(x + 1e-6)

    def config(self) -> dict:
        return {"kind": self.kind, "n_mels": self.dim, "per_frame": self.per_frame}


class PretrainedEncoder(FeatureExtractor):
    """A frozen transformers speech encoder (wav2vec 2.0 / HuBERT / WavLM); 50 Hz hidden states."""

    kind = "encoder"

    def __init__(self, path: Optional[Union[str, Path]] = None, per_frame: int = 2, model=None):
        if model is None:
            model = load_encoder(path)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.path = None if path is None else str(path)
        self.dim = int(self.model.config.hidden_size)
        self.per_frame = int(per_frame)

    def base_features(self, wave: Tensor) -> tuple[Tensor, float]:  # wave: [A]
        x = (wave - wave.mean()) / (wave.std() + 1e-5) if wave.numel() > 1 else wave
        min_len = 400
        if x.numel() < min_len:
            x = torch.nn.functional.pad(x, (0, min_len - x.numel()))
        with torch.no_grad():
            hidden = self.model(x[None].to(next(self.model.parameters()).device)).last_hidden_state[0]  # [N,D]
        rate = hidden.shape[0] / (x.numel() / SAMPLE_RATE)  # ≈50 Hz; exact for this input's length
        # hidden state n covers the receptive field starting at n / rate; its centre is half a step later
        shifted = torch.cat([hidden[:1], hidden], dim=0)
        return shifted.float().cpu(), rate

    def config(self) -> dict:
        return {"kind": self.kind, "path": self.path, "per_frame": self.per_frame, "dim": self.dim}


def load_encoder(path: Union[str, Path]):
    """A transformers speech model from a local folder (config.json + weights); no downloads."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} is not a transformers model folder (no config.json); pass a local copy of "
                         "a wav2vec 2.0 / HuBERT / WavLM model (e.g. saved with save_pretrained)")
    try:
        from transformers import AutoModel
    except ImportError as err:
        raise InputError("--audio-encoder needs the `transformers` package; install it or drop the option "
                         "(log-mel features need nothing extra)") from err
    try:
        return AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise InputError(f"{folder} cannot be loaded as a speech encoder ({type(err).__name__}: {err}); pass a "
                         "wav2vec 2.0 / HuBERT / WavLM folder in the transformers layout") from err


def make_extractor(config: Optional[dict] = None, encoder_path: Optional[Union[str, Path]] = None) -> FeatureExtractor:
    """The extractor a model config names (default log-mel 80 x 4 per frame), or a pretrained encoder."""
    config = dict(config or {})
    if encoder_path is not None or config.get("kind") == "encoder":
        path = encoder_path if encoder_path is not None else config.get("path")
        if path is None:
            raise InputError("this model was trained on a pretrained audio encoder but its folder is unknown; "
                             "pass --audio-encoder PATH")
        return PretrainedEncoder(path, per_frame=int(config.get("per_frame", 2)))
    return LogMel(n_mels=int(config.get("n_mels", 80)), per_frame=int(config.get("per_frame", 4)))


def frame_energy(wave, fps: float, num_frames: int, t0: float = 0.0, ref: float = 1.0) -> Tensor:
    """Speech energy per video frame in [0, 1.2]: 0 at 40 dB below `ref` (or quieter), 1 at `ref`.

    wave: [A] 16 kHz; frame i at t0 + i/fps seconds; RMS over 25 ms windows averaged across the frame.
    Returns [num_frames] float32.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if num_frames <= 0:
        return torch.zeros(0)
    if wave.numel() < WIN:
        wave = torch.nn.functional.pad(wave, (0, WIN - wave.numel()))
    frames = torch.nn.functional.pad(wave, (WIN // 2, WIN // 2)).unfold(0, WIN, BASE_HOP)  # [N,WIN]
    rms = frames.pow(2).mean(-1).add(1e-10).sqrt()[:, None]  # [N,1] at 100 Hz
    times = sub_frame_times(fps, num_frames, 4, t0)
    db = 20 * torch.log10(interp_rows(rms, SAMPLE_RATE / BASE_HOP, times)[..., 0].mean(-1) / max(ref, 1e-8))
    return ((db + 40.0) / 40.0).clamp(0.0, 1.2).float()


def pause_frames(wave: np.ndarray, fps: float, num_frames: int, t0: float = 0.0) -> np.ndarray:
    # wave: [A] 16 kHz -> [T] bool for frames at t0 + i/fps
    """Frames inside the audio's pauses: quiet (frame energy under PAUSE_ENERGY relative to the clip's speech
    level) for at least PAUSE_MIN_S in a row. The one definition of a pause: the person's rest pose is learnt
    in the enrollment's pauses and checked in a driver's."""
    wave = np.asarray(wave, np.float32)
    energy = frame_energy(wave, fps, num_frames, t0, max(loudness_reference(wave), MIN_REF)).numpy()
    quiet = np.concatenate([[False], energy < PAUSE_ENERGY, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))  # run starts and ends, alternating
    out = np.zeros(num_frames, bool)
    need = int(np.ceil(PAUSE_MIN_S * fps))
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start >= need:
            out[start:end] = True
    return out
