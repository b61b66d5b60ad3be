"""Media I/O: write/read round trips (frames, rates, audio length and pitch), rotation, 10-bit, errors."""
from __future__ import annotations

import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from avatar3d.errors import InputError, MediaError
from avatar3d.io.audio import write_wav
from avatar3d.io.media import Mp4Writer, VideoReader, read_audio, write_mp4

SR = 16000


def tone(freq: float, seconds: float, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[np.argmax(spectrum)])


def pattern(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A dark frame with a red top-left marker and a white 8x8 square moving 2 px right per frame."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[: h // 4, : w // 4] = (230, 20, 20)
    x = (4 + 2 * i) % (w - 8)
    img[h // 2: h // 2 + 8, x: x + 8] = 255
    return img


def square_x(img: np.ndarray) -> int:
    """Left edge of the white square (columns whose lower half is bright)."""
    h = img.shape[0]
    bright = img[h // 2: h // 2 + 8, :, :].min(axis=2).mean(axis=0) > 150
    return int(np.argmax(bright))


def write_with_pyav(path, frames, fps=25, codec="libx264", pix_fmt="yuv420p", rotation=None, pts=None,
                    time_base=None, fmt="mp4"):
    """Write a clip directly with PyAV (for what Mp4Writer deliberately does not do: rotation, 10-bit, VFR)."""
    out = av.open(str(path), "w", format=fmt)
    stream = out.add_stream(codec, rate=fps)
    stream.height, stream.width = frames[0].shape[:2] if frames else (48, 64)
    stream.pix_fmt = pix_fmt
    if codec == "libx265":
        stream.options = {"x265-params": "log-level=error"}
    if time_base is not None:
        stream.codec_context.time_base = time_base
    if rotation is not None:
        stream.set_display_rotation(rotation)
    if not frames:
        out.start_encoding()
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i if pts is None else pts[i]
        if time_base is not None:
            frame.time_base = time_base
        out.mux(stream.encode(frame))
    if frames:
        out.mux(stream.encode(None))
    out.close()
    return path


def write_audio_file(path, samples, rate, codec, fmt, layout="mono"):
    out = av.open(str(path), "w", format=fmt)
    stream = out.add_stream(codec, rate=rate)
    stream.layout = layout
    channels = 2 if layout == "stereo" else 1
    planar = np.ascontiguousarray(np.repeat(samples[None, :], channels, axis=0))
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path


def encoder_exists(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


# ------------------------------------------------------------------------------------------ round trips

def test_round_trip_frames_rate_audio_and_pitch(tmp_path, seed):
    rng = np.random.default_rng(seed)
    freq = float(rng.uniform(300.0, 1500.0))
    n, fps = 50, 25
    audio = tone(freq, n / fps + 0.3)  # longer than the video: must be trimmed
    path = write_mp4(tmp_path / "clip.mp4", (pattern(i) for i in range(n)), fps, audio=audio,
                     metadata={"title": "round trip", "avatar_id": "synthetic-7"})

    with VideoReader(path, require_audio=True) as video:
        assert video.num_frames == n
        assert video.fps == Fraction(25)
        assert (video.width, video.height, video.rotation) == (64, 48, 0)
        assert video.has_audio and video.codec == "h264" and video.pix_fmt == "yuv420p"
        assert video.metadata["title"] == "round trip"
        assert video.metadata["avatar_id"] == "synthetic-7"
        assert video.metadata["comment"].startswith("made by avatar3d")
        frames = 0
        for i, (t, img) in enumerate(video.frames_with_times()):
            assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
            assert t == pytest.approx(i / fps, abs=1e-6)
            assert abs(square_x(img) - (4 + 2 * i) % 56) <= 1
            assert np.abs(img.astype(int) - pattern(i)).mean() < 6.0
            frames += 1
        assert frames == n
        samples = video.read_audio()
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SR - n / fps) <= 1.0 / fps
    assert abs(peak_hz(samples, SR) - freq) < 3.0


def test_short_audio_is_padded_to_the_video_length(tmp_path):
    n, fps = 40, 25
    path = write_mp4(tmp_path / "pad.mp4", (pattern(i) for i in range(n)), fps, audio=tone(440.0, 0.5))
    samples = read_audio(path)
    assert abs(len(samples) / SR - n / fps) <= 1.0 / fps
    assert np.abs(samples[: int(0.4 * SR)]).max() > 0.3  # the tone is there...
    assert np.abs(samples[int(0.7 * SR):]).max() < 0.02  # ...then silence up to the end of the video


def test_ntsc_rate_round_trip(tmp_path):
    fps = Fraction(30000, 1001)
    n = 30
    path = write_mp4(tmp_path / "ntsc.mp4", (pattern(i) for i in range(n)), fps, audio=tone(440.0, 1.0))
    video = VideoReader(path)
    assert video.fps == fps
    assert video.num_frames == n == sum(1 for _ in video)
    assert np.allclose(np.diff(video.timestamps), 1001 / 30000, atol=1e-4)
    assert not video.is_variable_frame_rate
    assert abs(len(video.read_audio()) / SR - n / float(fps)) <= 1.0 / float(fps)


def test_float_frames_and_fraction_string_fps(tmp_path, seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, size=(1, 1, 3)).astype(np.float32)
    frames = [np.broadcast_to(base, (32, 48, 3)).copy() for _ in range(5)]
    path = write_mp4(tmp_path / "float.mp4", frames, "30000/1001")
    video = VideoReader(path)
    assert video.fps == Fraction(30000, 1001) and not video.has_audio
    first = next(iter(video))
    assert np.abs(first.astype(float) / 255.0 - base).max() < 0.03


def test_variable_frame_rate_reports_average_and_timestamps(tmp_path):
    steps_ms = [40 if i % 2 == 0 else 20 for i in range(39)]
    pts = np.concatenate([[0], np.cumsum(steps_ms)]).astype(int)
    frames = [pattern(i) for i in range(40)]
    path = write_with_pyav(tmp_path / "vfr.mp4", frames, pts=list(pts), time_base=Fraction(1, 1000))
    video = VideoReader(path)
    assert video.num_frames == 40
    assert video.is_variable_frame_rate
    assert np.allclose(video.timestamps, pts / 1000.0, atol=1e-3)
    assert float(video.fps) == pytest.approx(40 / (pts[-1] / 1000.0), rel=0.05)  # ~32.8, not 25 or 50
    times = [t for t, _ in video.frames_with_times()]
    assert np.allclose(times, pts / 1000.0, atol=1e-3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_clip_comes_back_upright(tmp_path, rotation):
    frames = [pattern(i, h=32, w=64) for i in range(6)]
    path = write_with_pyav(tmp_path / f"rot{rotation}.mp4", frames, rotation=rotation)
    video = VideoReader(path)
    assert video.rotation == rotation
    expected_size = (32, 64) if rotation in (90, 270) else (64, 32)
    assert (video.width, video.height) == expected_size
    assert (video.coded_width, video.coded_height) == (64, 32)
    for i, img in enumerate(video):
        assert img.shape == (expected_size[1], expected_size[0], 3)
        # counter-clockwise display rotation (FFmpeg's display-matrix convention)
        assert np.abs(img.astype(int) - np.rot90(frames[i], rotation // 90)).mean() < 6.0


def test_phone_style_negative_rotation_turns_clockwise(tmp_path):
    """Phones tag portrait clips 'rotate=90' (clockwise), i.e. a display matrix of -90 degrees."""
    frames = [pattern(0, h=32, w=64)]
    video = VideoReader(write_with_pyav(tmp_path / "phone.mp4", frames, rotation=-90))
    assert video.rotation == 270 and (video.width, video.height) == (32, 64)
    img = next(iter(video))
    # clockwise: the red top-left marker ends up top-right
    assert img[2, -3, 0] > 180 and img[2, -3, 1] < 80
    assert img[2, 2].max() < 80


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_ten_bit_clips_decode_to_8bit_rgb(tmp_path, codec):
    if not encoder_exists(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder, so no 10-bit {codec} clip can be made")
    frames = [pattern(i) for i in range(8)]
    path = write_with_pyav(tmp_path / f"{codec}_10bit.mp4", frames, codec=codec, pix_fmt="yuv420p10le")
    video = VideoReader(path)
    assert "10" in video.pix_fmt
    assert video.codec == ("h264" if codec == "libx264" else "hevc")
    decoded = list(video)
    assert len(decoded) == 8
    for img, ref in zip(decoded, frames):
        assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
        assert np.abs(img.astype(int) - ref).mean() < 6.0


@pytest.mark.parametrize("kind", ["wav44k_stereo", "flac", "mp3", "m4a"])
def test_read_audio_resamples_any_format_to_16k_mono(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    freq = float(rng.uniform(200.0, 2000.0))
    if kind == "wav44k_stereo":
        wave = tone(freq, 1.5, rate=44100)
        path = write_wav(tmp_path / "a.wav", np.stack([wave, wave], axis=1), 44100)
    else:
        codec, fmt, ext = {"flac": ("flac", "flac", "flac"), "mp3": ("libmp3lame", "mp3", "mp3"),
                           "m4a": ("aac", "ipod", "m4a")}[kind]
        if not encoder_exists(codec):
            pytest.skip(f"this PyAV build has no {codec} encoder")
        path = write_audio_file(tmp_path / f"a.{ext}", tone(freq, 1.5, rate=48000), 48000, codec, fmt,
                                layout="stereo")
    samples = read_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 1.5 * SR) < 0.06 * SR  # mp3 adds a little padding
    assert abs(peak_hz(samples, SR) - freq) < 3.0
    assert 0.3 < np.abs(samples).max() < 0.7  # downmixed, not summed or halved twice
    assert len(read_audio(path, sample_rate=8000)) == pytest.approx(len(samples) / 2, abs=2)


# ------------------------------------------------------------------------------------------ writer rules

def test_odd_sizes_are_padded_or_refused(tmp_path):
    odd = [np.full((49, 65, 3), 120, np.uint8)] * 3
    video = VideoReader(write_mp4(tmp_path / "odd.mp4", odd, 25))
    assert (video.width, video.height) == (66, 50)
    with pytest.raises(MediaError, match="even"):
        write_mp4(tmp_path / "odd2.mp4", odd, 25, odd_size="error")
    assert not (tmp_path / "odd2.mp4").exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_mp4(tmp_path / "keep.mp4", [pattern(i) for i in range(5)], 25)
    before = path.read_bytes()

    def broken():
        yield pattern(0)
        yield pattern(1)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_mp4(path, broken(), 25)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_streaming_writer_rejects_bad_frames(tmp_path):
    writer = Mp4Writer(tmp_path / "w.mp4", 25)
    writer.write(pattern(0))
    with pytest.raises(MediaError, match="same size"):
        writer.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(MediaError, match=r"\[H,W,3\]"):
        writer.write(np.zeros((48, 64), np.uint8))
    writer.write(pattern(1))
    assert writer.close() == tmp_path / "w.mp4"
    assert VideoReader(tmp_path / "w.mp4").num_frames == 2


def test_writer_with_no_frames_is_an_error(tmp_path):
    with pytest.raises(MediaError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [], 25)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        Mp4Writer(tmp_path / "missing_folder" / "x.mp4", 25)
    with pytest.raises(MediaError, match="fps"):
        Mp4Writer(tmp_path / "x.mp4", 0)


# ------------------------------------------------------------------------------------------ read errors

def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        VideoReader(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="not found"):
        read_audio(tmp_path / "nope.wav")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match="not a readable"):
        VideoReader(fake)


def test_audio_only_file_as_video(tmp_path):
    wav = write_wav(tmp_path / "speech.wav", tone(300.0, 0.5), SR)
    with pytest.raises(MediaError, match="no video stream"):
        VideoReader(wav)


def test_video_without_audio_when_audio_is_required(tmp_path):
    path = write_mp4(tmp_path / "silent.mp4", [pattern(i) for i in range(3)], 25)
    assert not VideoReader(path).has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        VideoReader(path, require_audio=True)
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(path)


def test_zero_frame_video(tmp_path):
    # An empty mp4 track vanishes on read (reported as 'no video stream'); AVI keeps an empty stream.
    path = write_with_pyav(tmp_path / "empty.avi", [], codec="mpeg4", fmt="avi")
    with pytest.raises(MediaError, match="zero frames"):
        VideoReader(path)


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.6, 0.9])
def test_truncated_video_is_reported_as_damaged(tmp_path, keep):
    path = write_mp4(tmp_path / "t.mp4", [pattern(i) for i in range(20)], 25)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])  # faststart: the index comes first, samples after
    with pytest.raises(MediaError, match="damaged|no video stream"):
        for _ in VideoReader(cut):  # some cuts fail on open, others only part way through
            pass


# ------------------------------------------------------------------------------------------ real data

def test_development_clip_streams(shared):
    path = shared / "data" / "video" / "May_5s.mp4"
    video = VideoReader(path, require_audio=True)
    assert (video.num_frames, video.fps, video.width, video.height) == (125, Fraction(25), 512, 512)
    tracemalloc.start()
    try:
        count = 0
        for img in video:
            assert img.shape == (512, 512, 3) and img.dtype == np.uint8
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 125
    assert peak < 20 * 512 * 512 * 3  # a handful of frames at most, never the whole clip (125 frames)
    samples = video.read_audio()
    assert abs(len(samples) / SR - 5.0) <= 1 / 25
    assert np.abs(samples).max() > 0.05  # speech, not silence
