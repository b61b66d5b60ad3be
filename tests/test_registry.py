"""Installed head models: install, list, load, cache reuse, stale/corrupt caches, the default, the CLI."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from avatar3d.errors import HeadModelError
from avatar3d.head import registry
from avatar3d.commands.models import ModelsInstallConfig, ModelsListConfig, main_install, main_list


@pytest.fixture(scope="module")
def flame_like():
    """The synthetic rig's arrays in FLAME's pickle layout (identity shapes only), as a dict."""
    rig = registry.synthetic_with_embedding()
    return {
        "v_template": rig.template.double().numpy(),
        "f": rig.faces.numpy().astype(np.uint32),
        "shapedirs": rig.shape_basis.double().numpy(),
        "posedirs": rig.pose_correctives.double().numpy().reshape(-1, 36),
        "J_regressor": rig.joint_regressor.double().numpy(),
        "weights": rig.lbs_weights.double().numpy(),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    }


def _write(path, data):
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def test_nothing_installed_says_how_to_install(tmp_home):
    assert registry.list_models() == []
    with pytest.raises(HeadModelError, match=r"avatar3d models install --ict PATH/TO/ICT-FaceKit"):
        registry.load_rig()
    with pytest.raises(HeadModelError, match="no head model named 'nope'"):
        registry.load_rig("nope")


def test_synthetic_always_loads(tmp_home):
    rig = registry.load_rig("synthetic")
    assert rig.landmarks_mp is not None and rig.landmarks_mp.face_idx.shape == (478,)
    rig.template.add_(1.0)  # callers get their own copy
    assert not torch.equal(registry.load_rig("synthetic").template, rig.template)


def test_install_list_load_and_default(tmp_home, tmp_path, flame_like):
    pkl = _write(tmp_path / "mini_flame.pkl", flame_like)
    info = registry.install_flame(pkl, name="mini")
    rows = registry.list_models()
    assert [r["name"] for r in rows] == ["mini"]
    row = rows[0]
    assert row["vertices"] == len(flame_like["v_template"]) and row["triangles"] == len(flame_like["f"])
    assert row["identity"] == flame_like["shapedirs"].shape[2] and row["expressions"] == 0
    assert row["cache"] == str(tmp_home / "models" / "mini")
    rig = registry.load_rig("mini")
    assert np.allclose(rig.template.numpy(), flame_like["v_template"], atol=1e-7)
    assert rig.landmarks_mp is not None and rig.meta["cache_key"] == info["cache_key"]
    # ICT is the only default: with just another model installed the message names it
    with pytest.raises(HeadModelError, match="installed: mini"):
        registry.load_rig()


def test_cache_is_reused_then_rebuilt_when_the_source_changes(tmp_home, tmp_path, flame_like, monkeypatch):
    pkl = _write(tmp_path / "flame.pkl", flame_like)
    first = registry.install_flame(pkl)
    calls = []
    real_convert = registry._convert
    monkeypatch.setattr(registry, "_convert", lambda *a, **k: calls.append(1) or real_convert(*a, **k))

    assert registry.install_flame(pkl)["cache_key"] == first["cache_key"]
    registry.load_rig("flame")
    assert calls == []  # cache used, nothing converted

    changed = dict(flame_like, v_template=flame_like["v_template"] + 0.001)
    before = pkl.stat().st_mtime_ns
    _write(pkl, changed)
    os.utime(pkl, ns=(before + 2 * 10**9, before + 2 * 10**9))  # a later edit, even on coarse-mtime file systems
    rig = registry.load_rig("flame")
    assert calls == [1]
    assert np.allclose(rig.template.numpy(), changed["v_template"], atol=1e-7)
    registry.load_rig("flame")
    assert calls == [1]  # rebuilt once, then cached again

    monkeypatch.setattr(registry, "FLAME_CONVERTER_VERSION", "flame-test")
    registry.load_rig("flame")
    assert calls == [1, 1]  # a new converter version rebuilds


def test_corrupt_cache_is_rebuilt_or_reported(tmp_home, tmp_path, flame_like):
    pkl = _write(tmp_path / "flame.pkl", flame_like)
    registry.install_flame(pkl, name="f1")
    cache = tmp_home / "models" / "f1" / "rig.safetensors"
    cache.write_bytes(b"garbage")
    rig = registry.load_rig("f1")  # the source is still there: rebuilt
    assert rig.num_vertices == len(flame_like["v_template"])
    cache.write_bytes(cache.read_bytes()[:100])
    pkl.unlink()
    with pytest.raises(HeadModelError, match="install it again"):
        registry.load_rig("f1")


def test_bad_names_and_bad_sources(tmp_home, tmp_path):
    with pytest.raises(HeadModelError, match="built in"):
        registry.install_flame(tmp_path / "x.pkl", name="synthetic")
    with pytest.raises(HeadModelError, match="does not exist"):
        registry.install_flame(tmp_path / "missing.pkl")
    with pytest.raises(HeadModelError, match="ICT-FaceKit"):
        registry.install_ict(tmp_path)


def test_models_cli_install_and_list(tmp_home, tmp_path, flame_like, capsys):
    with pytest.raises(HeadModelError, match="exactly one"):
        main_install(ModelsInstallConfig())
    assert main_list(ModelsListConfig()) == 0
    assert "no head models installed" in capsys.readouterr().out
    pkl = _write(tmp_path / "flame.pkl", flame_like)
    assert main_install(ModelsInstallConfig(flame=pkl, name="cli")) == 0
    assert "installed 'cli'" in capsys.readouterr().out
    assert main_list(ModelsListConfig()) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert header.split()[:6] == ["name", "kind", "vertices", "triangles", "identity", "expressions"]
    assert row.split()[:4] == ["cli", "flame", str(len(flame_like["v_template"])), str(len(flame_like["f"]))]
