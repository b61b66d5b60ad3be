"""Sound in the browser: the clip's audio as a WAV data: URL inside an <audio> element.

The element starts itself (`autoplay`; the user's click on "Play" is the gesture browsers require) and,
on its `playing` event, clicks a sync button in the panel (by its element id), so the server learns the
moment the sound really started and starts the frame clock then (see `playback.Playback`).
"""
from __future__ import annotations

import base64
import io
import wave

import numpy as np

AUDIO_RATE = 16000


def wav_bytes(audio: np.ndarray, rate: int = AUDIO_RATE) -> bytes:  # audio: [A] float mono in [-1,1]
    """16-bit PCM mono WAV of `audio`."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def audio_element(audio: np.ndarray, sync_button_id: str, token: int) -> str:  # audio: [A] float32 16 kHz
    """HTML of an autoplaying <audio> that clicks the button `sync_button_id` when the sound starts.

    `token` makes every play a new element (the browser restarts it even for the same clip).
    """
    url = "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio)).decode("ascii")
    click = f"var b=document.getElementById('{sync_button_id}');if(b)b.click();"
    return (f'<audio id="avatar3d-audio-{int(token)}" autoplay preload="auto" src="{url}" '
            f'onplaying="{click}"></audio>'
            f'<div style="font-size:0.8em;opacity:0.7">sound playing in this tab</div>')
