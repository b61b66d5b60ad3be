"""Phone segments of any speech, from pocketsphinx's allphone search (speech knowledge offline).

The pocketsphinx wheel ships an English acoustic model and a phone language model; the allphone search
decodes a phone sequence with 10 ms timings and no vocabulary, so it works on any speaker and any text.
The settings follow what Rhubarb Lip Sync uses with the same recogniser (phone LM `en-us-phone.lm.bin`,
beams 1e-20). Speech in another language still gets the nearest English phones: approximate, but their
timing (where the mouth opens and closes) holds.

Long audio is decoded in chunks of about `CHUNK_S` seconds, cut at the quietest 10 ms near each nominal
boundary (a pause, so no phone straddles a cut): memory stays constant and the decoder's state never grows
with the clip.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from avatar3d.errors import InputError
from avatar3d.io.media import AUDIO_RATE as SAMPLE_RATE

FRAME_S = 0.01  # the decoder's frame step
CHUNK_S = 30.0
CUT_SEARCH_S = 3.0  # a cut is placed at the quietest 10 ms within this distance of the nominal boundary
SILENCE = "SIL"
NOISE_PHONES = ("+NSN+", "+SPN+")  # non-speech noise, spoken noise
# The 39 phones of the CMU dictionary (ARPAbet, no stress), then silence and the two noise symbols.
PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
          "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
          "W", "Y", "Z", "ZH", SILENCE) + NOISE_PHONES
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}

_DECODER = None
_LOCK = threading.Lock()


@dataclass
class PhoneSegments:
    """Consecutive phone segments covering [0, duration): `phones[i]` from `starts[i]` to `ends[i]` seconds."""

    phones: list[str]
    starts: np.ndarray  # [S] float64 seconds
    ends: np.ndarray  # [S] float64 seconds
    duration: float

    def __len__(self) -> int:
        return len(self.phones)

    def ids(self) -> np.ndarray:  # [S] int64 index into PHONES
        return np.array([PHONE_INDEX.get(p, PHONE_INDEX[SILENCE]) for p in self.phones], np.int64)

    def speech_seconds(self) -> float:
        """Seconds covered by speech phones (not silence or noise)."""
        speech = np.array([p not in (SILENCE,) + NOISE_PHONES for p in self.phones], bool)
        return float(((self.ends - self.starts) * speech).sum()) if len(self) else 0.0

    def shifted(self, seconds: float) -> "PhoneSegments":
        return PhoneSegments(list(self.phones), self.starts + seconds, self.ends + seconds, self.duration)

    def to_json(self) -> list:
        return [[p, round(float(a), 3), round(float(b), 3)] for p, a, b in zip(self.phones, self.starts, self.ends)]


def _decoder():
    """The allphone decoder, made once per process (0.1 s); calls are serialised by _LOCK."""
    global _DECODER
    if _DECODER is None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as err:
            raise InputError("phonetic lip sync needs the `pocketsphinx` package (pip install pocketsphinx==5.1.1)"
                             ) from err
        models = get_model_path()
        _DECODER = Decoder(hmm=os.path.join(models, "en-us", "en-us"),
                           allphone=os.path.join(models, "en-us", "en-us-phone.lm.bin"),
                           beam=1e-20, pbeam=1e-20, lw=2.0, loglevel="FATAL")
    return _DECODER


def chunk_bounds(wave: np.ndarray, chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
    # wave: [A] 16 kHz
    """Sample ranges of the decoding chunks: about `chunk_s` long, each cut at the quietest 10 ms within
    CUT_SEARCH_S of its nominal end."""
    n, hop = len(wave), int(FRAME_S * SAMPLE_RATE)
    size, search = int(chunk_s * SAMPLE_RATE), int(CUT_SEARCH_S * SAMPLE_RATE)
    bounds, start = [], 0
    while n - start > size + search:
        lo, hi = start + size - search, start + size + search
        frames = wave[lo: hi - (hi - lo) % hop].reshape(-1, hop).astype(np.float64)
        cut = lo + int(np.argmin((frames ** 2).mean(1))) * hop + hop // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def _decode_chunk(pcm: np.ndarray) -> list[tuple[str, int, int]]:  # pcm: [A] int16 -> (phone, first, last frame)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    return [(seg.word, int(seg.start_frame), int(seg.end_frame)) for seg in decoder.seg()]


def decode_phones(wave: np.ndarray, chunk_s: float = CHUNK_S) -> PhoneSegments:
    # wave: [A] float 16 kHz mono (any level)
    """Phone segments of the waveform; gaps the decoder leaves are filled with silence."""
    wave = np.asarray(wave, np.float32)
    duration = len(wave) / SAMPLE_RATE
    peak = float(np.percentile(np.abs(wave), 99.9)) if wave.size else 0.0
    scale = 0.0 if peak < 1e-6 else 0.5 / peak  # a level the acoustic model knows, clipped only at the very peaks
    phones, starts, ends = [], [], []
    with _LOCK:
        for a, b in chunk_bounds(wave, chunk_s):
            if b - a < int(0.1 * SAMPLE_RATE):  # too short to hold a phone
                continue
            pcm = (np.clip(wave[a:b] * scale, -1.0, 1.0) * 32767.0).astype(np.int16)
            for phone, first, last in _decode_chunk(pcm):
                phones.append(phone if phone in PHONE_INDEX else SILENCE)
                starts.append(a / SAMPLE_RATE + first * FRAME_S)
                ends.append(a / SAMPLE_RATE + (last + 1) * FRAME_S)
    return _fill_gaps(phones, np.array(starts), np.array(ends), duration)


def _fill_gaps(phones: list[str], starts: np.ndarray, ends: np.ndarray, duration: float) -> PhoneSegments:
    """Sort, clip to [0, duration], and cover every gap (and the ends) with silence."""
    out_p, out_s, out_e, t = [], [], [], 0.0
    for i in np.argsort(starts, kind="stable") if len(phones) else []:
        a, b = max(float(starts[i]), t), min(float(ends[i]), duration)
        if b <= a:
            continue
        if a > t + 1e-9:
            out_p.append(SILENCE), out_s.append(t), out_e.append(a)
        out_p.append(phones[i]), out_s.append(a), out_e.append(b)
        t = b
    if duration > t + 1e-9:
        out_p.append(SILENCE), out_s.append(t), out_e.append(duration)
    return PhoneSegments(out_p, np.array(out_s, np.float64), np.array(out_e, np.float64), duration)
