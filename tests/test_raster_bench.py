"""The rasterizer benchmark (tiny sizes) and the synthetic scenes it and the backend tests use."""
from __future__ import annotations

import json

import pytest
import torch

from avatar3d.errors import BackendUnavailableError, InputError
from avatar3d.benchmarks.raster import BenchRasterConfig, main, run_raster_bench
from avatar3d.render import native
from avatar3d.render.scenes import head_scene, random_scene


def test_scenes_are_reproducible_and_shaped(seed):
    a = random_scene(50, 40, 30, seed=seed, channels=5)
    b = random_scene(50, 40, 30, seed=seed, channels=5)
    for name, t in a.params().items():
        assert torch.equal(t, getattr(b, name)), name
    assert a.colors.shape == (50, 5) and a.background.shape == (5,) and a.means.dtype == torch.float32
    sh = random_scene(7, 16, 16, seed=seed, sh_degree=2, dtype=torch.float64)
    assert sh.colors.shape == (7, 9, 3) and sh.sh_degree == 2 and sh.means.dtype == torch.float64
    assert not torch.equal(random_scene(50, 40, 30, seed=seed + 1).means, a.means)


def test_head_scene_looks_like_a_head():
    scene = head_scene(2000, 64, 64)
    extent = scene.means.max(0).values - scene.means.min(0).values
    assert 0.15 < float(extent[1]) < 0.25  # ~0.2 m tall
    assert torch.all(scene.scales < 0.004) and torch.all(scene.scales > 1e-4)
    assert float(scene.opacities.median()) > 0.8
    centre = -scene.viewmat[:3, :3].T @ scene.viewmat[:3, 3]
    torch.testing.assert_close(centre, torch.tensor([0.0, 0.0, 0.6]))


def test_bench_writes_the_json_schema(tmp_path):
    out = tmp_path / "sub" / "bench.json"
    result = run_raster_bench(device="cpu", json_path=out, sizes=(32,), ns=(50, 120), repeats=1, torch_repeats=1,
                              backends=("torch",), torch_max_n=60, print_fn=None)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    assert set(data) == {"device", "threads", "cases", "speedup_cpu_vs_torch_fwd", "speedup_cpu_vs_torch_fwdbwd",
                         "ratio_cuda_vs_gsplat_fwdbwd"}
    assert [(c["backend"], c["n"]) for c in data["cases"]] == [("torch", 50)]  # 120 > torch_max_n: skipped
    case = data["cases"][0]
    assert set(case) == {"backend", "n", "width", "height", "fwd_ms", "fwdbwd_ms", "stages_ms"}
    assert case["stages_ms"] is None  # stages are timed inside the native CPU kernels only
    assert case["fwd_ms"] > 0 and case["fwdbwd_ms"] > 0 and (case["width"], case["height"]) == (32, 32)
    assert data["speedup_cpu_vs_torch_fwd"] is None and data["ratio_cuda_vs_gsplat_fwdbwd"] is None
    assert data["threads"] == torch.get_num_threads()
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temp file left behind


def test_bench_main_and_bad_options(tmp_path, capsys):
    cfg = BenchRasterConfig(json=None, sizes=(16,), ns=(20,), repeats=1, torch_repeats=1, backends=("torch",))
    result = main(cfg)
    assert len(result["cases"]) == 1
    assert "fwd+bwd" in capsys.readouterr().out
    with pytest.raises(InputError):
        run_raster_bench(device="tpu", print_fn=None)
    with pytest.raises(BackendUnavailableError):
        run_raster_bench(device="cpu", backends=("gsplat",), sizes=(16,), ns=(10,), print_fn=None)


@pytest.mark.skipif(not native.is_available(), reason="the native extension avatar3d._C is not built (make build)")
def test_bench_splits_the_native_cpu_time_into_stages(tmp_path, capsys):
    result = run_raster_bench(device="cpu", sizes=(48,), ns=(300,), repeats=2, backends=("cpu",))
    stages = result["cases"][0]["stages_ms"]
    assert list(stages) == list(native.STAGES)
    assert all(v >= 0 for v in stages.values()) and stages["blend"] > 0 and stages["blend_backward"] > 0
    # the stages are parts of the forward+backward, which also holds Python and autograd
    assert sum(stages.values()) <= result["cases"][0]["fwdbwd_ms"] * 1.5
    assert "stages of fwd+bwd" in capsys.readouterr().out
