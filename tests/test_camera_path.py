"""Camera paths: keyframes are hit exactly, motion is smooth and never overshoots, bad files fail clearly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avatar3d.drive.camera_path import INTERPOLATIONS, CameraPath
from avatar3d.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "orbit_zoom.json"


def _random_path(rng, n=6, interpolation="catmull-rom") -> tuple[CameraPath, list[dict]]:
    times = np.cumsum(rng.uniform(0.2, 1.5, n))
    keyframes = [{"time": float(t), "yaw": float(rng.uniform(-90, 90)), "pitch": float(rng.uniform(-40, 40)),
                  "distance": float(rng.uniform(0.3, 2.0)), "fov": float(rng.uniform(10, 60)),
                  "target_offset": [float(v) for v in rng.uniform(-0.05, 0.05, 3)]} for t in times]
    return CameraPath.from_json({"interpolation": interpolation, "keyframes": keyframes}), keyframes


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_keyframe_is_hit_exactly(seed, interpolation):
    path, keyframes = _random_path(np.random.default_rng(seed), interpolation=interpolation)
    for kf in keyframes:
        got = path.at(kf["time"])
        for key in ("yaw", "pitch", "distance", "fov"):
            assert got[key] == pytest.approx(kf[key], rel=1e-12, abs=1e-12), key
        assert np.allclose(got["target_offset"], kf["target_offset"], atol=1e-12)


def test_catmull_rom_is_smooth_and_stays_between_its_keyframes(seed):
    path, keyframes = _random_path(np.random.default_rng(seed), n=7)
    times = [kf["time"] for kf in keyframes]
    linear = CameraPath.from_json({"interpolation": "linear", "keyframes": keyframes})

    def kink(p: CameraPath, t: float, eps: float) -> float:  # |slope after - slope before| at t
        f = lambda x: p.at(x)["yaw"]  # noqa: E731
        return abs((f(t + eps) - f(t)) / eps - (f(t) - f(t - eps)) / eps)

    for t in times[1:-1]:  # velocity is continuous through inner keyframes: the kink vanishes with eps
        assert kink(path, t, 1e-5) < 0.2 * kink(path, t, 1e-4) + 1e-6, t
    # (a linear path's kink does not shrink: the check can tell C0 from C1)
    t_mid = times[len(times) // 2]
    assert kink(linear, t_mid, 1e-5) == pytest.approx(kink(linear, t_mid, 1e-4), rel=1e-3)
    for a, b in zip(keyframes[:-1], keyframes[1:]):  # no overshoot: each segment stays in its keyframes' range
        for s in np.linspace(a["time"], b["time"], 25):
            got = path.at(float(s))
            for key in ("yaw", "pitch", "distance", "fov"):
                lo, hi = sorted((a[key], b[key]))
                assert lo - 1e-9 <= got[key] <= hi + 1e-9, (key, s, got[key], lo, hi)
    # between keyframes it is a curve, not the straight line (Catmull-Rom, not linear)
    mids = [0.5 * (a + b) for a, b in zip(times[:-1], times[1:])]
    assert max(abs(path.at(m)["yaw"] - linear.at(m)["yaw"]) for m in mids) > 1e-3


def test_two_keyframes_make_a_constant_speed_turntable_and_values_hold_outside():
    path = CameraPath.from_json([{"t": 0.0, "yaw": 0}, {"t": 1.0, "yaw": 360}])
    clip = 8.0
    yaws = [path.at(s, clip)["yaw"] for s in np.linspace(0, clip, 17)]
    assert np.allclose(np.diff(yaws), 360 / 16)  # continuous angles: a full turn, evenly
    assert path.at(-1.0, clip)["yaw"] == 0.0 and path.at(clip + 3, clip)["yaw"] == 360.0
    assert set(path.at(1.0, clip)) == {"yaw"}  # fields no keyframe sets are left to the caller


def test_smoothstep_eases_in_and_out():
    path = CameraPath.from_json({"interpolation": "smoothstep",
                                 "keyframes": [{"time": 0, "pitch": 0}, {"time": 2, "pitch": 30}]})
    assert path.at(1.0)["pitch"] == pytest.approx(15.0)
    linear_start = 30 * 0.02 / 2
    assert 0 < path.at(0.02)["pitch"] < 0.1 * linear_start  # starts (and ends) far slower than linear
    assert 30 - path.at(1.98)["pitch"] < 0.1 * linear_start


def test_shortest_angles_wrap_each_step():
    keyframes = [{"t": 0, "yaw": 350}, {"t": 1, "yaw": 10}]
    shortest = CameraPath.from_json({"angles": "shortest", "keyframes": keyframes})
    continuous = CameraPath.from_json({"keyframes": keyframes})
    assert shortest.at(0.5, 1.0)["yaw"] == pytest.approx(360.0)  # through 0, +20 degrees in all
    assert shortest.at(1.0, 1.0)["yaw"] == pytest.approx(370.0)  # same direction as 10
    assert continuous.at(0.5, 1.0)["yaw"] == pytest.approx(180.0)  # as written: the long way round


def test_distance_zooms_evenly_in_the_logarithm():
    path = CameraPath.from_json([{"time": 0, "distance_scale": 2.0}, {"time": 1, "distance_scale": 0.5}])
    assert path.at(0.5)["distance_scale"] == pytest.approx(1.0)  # geometric middle: the face size halfway
    assert path.duration == 1.0


def test_clip_fractions_need_the_clip_length():
    path = CameraPath.from_json([{"t": 0, "fov": 20}, {"t": 1, "fov": 40}])
    assert path.duration is None
    with pytest.raises(InputError, match="clip length"):
        path.at(1.0)
    assert path.at(2.0, 2.0)["fov"] == pytest.approx(40.0)


def test_the_documented_example_loads():
    path = CameraPath.load(EXAMPLE)
    assert path.at(0.0, 4.0) == {"distance_scale": 1.0, "yaw": -30.0, "pitch": 0.0, "target_offset": [0.0, 0.0, 0.0]}
    mid = path.at(2.0, 4.0)
    assert mid["yaw"] == pytest.approx(0.0, abs=1e-9) and mid["distance_scale"] == pytest.approx(0.7)


@pytest.mark.parametrize("content, match", [
    ("{\"keyframes\": [{\"t\": 0, \"yaw\": 1}", "not valid JSON.*line 1"),
    ("{\"keyframes\": [{\"t\": 0, \"yaw\": NaN}]}", "NaN"),
    ("{\"keyframes\": [{\"t\": 0, \"yaww\": 1}]}", "unknown key 'yaww'.*'yaw'"),
    ("{\"keyframes\": [{\"t\": 0}], \"interpolate\": \"linear\"}", "unknown key 'interpolate'"),
    ("{\"keyframes\": [{\"time\": 1, \"yaw\": 0}, {\"time\": 1, \"yaw\": 5}]}", "keyframe 1.*strictly increasing"),
    ("{\"keyframes\": [{\"time\": 2, \"yaw\": 0}, {\"time\": 1, \"yaw\": 5}]}", "keyframe 1.*does not come after"),
    ("{\"keyframes\": [{\"time\": 0, \"yaw\": 0}, {\"t\": 1, \"yaw\": 5}]}", "\"time\".*\"t\""),
    ("{\"keyframes\": [{\"time\": 0, \"t\": 0}]}", "both"),
    ("{\"keyframes\": [{\"yaw\": 3}]}", "no \"time\""),
    ("{\"keyframes\": [{\"t\": 1.5}]}", "outside 0..1"),
    ("{\"keyframes\": [{\"time\": -1}]}", "negative"),
    ("{\"keyframes\": [{\"t\": 0, \"distance\": 0}]}", "not positive"),
    ("{\"keyframes\": [{\"t\": 0, \"distance\": 1}, {\"t\": 1, \"distance_scale\": 1}]}", "mix"),
    ("{\"keyframes\": [{\"t\": 0, \"fov\": 180}]}", "fov"),
    ("{\"keyframes\": [{\"t\": 0, \"pitch\": 95}]}", "pitch"),
    ("{\"keyframes\": [{\"t\": 0, \"yaw\": \"10\"}]}", "must be a number"),
    ("{\"keyframes\": [{\"t\": 0, \"yaw\": true}]}", "must be a number"),
    ("{\"keyframes\": [{\"t\": 0, \"target_offset\": [0, 1]}]}", "list of 3"),
    ("{\"keyframes\": []}", "no keyframes"),
    ("{\"frames\": []}", "unknown key 'frames'"),
    ("{}", "no \"keyframes\""),
    ("3", "top level"),
    ("{\"keyframes\": [{\"t\": 0}], \"interpolation\": \"cubic\"}", "interpolation 'cubic'"),
    ("{\"keyframes\": [5]}", "keyframe 0.*must be an object"),
])
def test_bad_files_fail_with_a_clear_message(tmp_path, content, match):
    f = tmp_path / "path.json"
    f.write_text(content)
    with pytest.raises(InputError, match=match):
        CameraPath.load(f)


def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist.*orbit_zoom.json"):
        CameraPath.load(tmp_path / "nope.json")
    with pytest.raises(InputError, match="is a folder"):
        CameraPath.load(tmp_path)


def test_a_round_trip_through_a_file(tmp_path, seed):
    _, keyframes = _random_path(np.random.default_rng(seed), n=3)
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"keyframes": keyframes}))
    path = CameraPath.load(f)
    assert path.fields == ("distance", "yaw", "pitch", "fov", "target_offset")
    assert path.at(keyframes[1]["time"])["fov"] == pytest.approx(keyframes[1]["fov"])
