"""FLAME .pkl loading through the restricted unpickler, with a synthetic pickle of FLAME's exact structure."""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from avatar3d.errors import HeadModelError
from avatar3d.head.flame import load_flame_pkl
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.rig import RigParams
from avatar3d.head.unpickle import safe_load_pickle

V, F = 60, 100


def _fake_chumpy():
    """Modules `chumpy` / `chumpy.ch` with a `Ch` class that pickles like chumpy's (state dict with 'x')."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._parents = {}
            self._cache = {}

        def __getstate__(self):  # chumpy drops its caches and keeps the value under 'x'
            return {"x": self.x, "_dirty_vars": set(), "_depends_on_deps": {}}

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch_mod.Ch = Ch
    root = types.ModuleType("chumpy")
    root.ch = ch_mod
    return root, ch_mod


def flame_dict(g: np.random.Generator, Ch, *, n_shape=300, n_expr=100):
    """FLAME 2020's key set and dtypes (chumpy arrays for shapedirs and J, csc J_regressor)."""
    v = g.normal(size=(V, 3)) * 0.05
    f = g.integers(0, V, size=(F, 3)).astype(np.uint32)
    weights = g.random((V, 5))
    weights /= weights.sum(1, keepdims=True)
    reg = sp.random(5, V, density=0.2, random_state=int(g.integers(1 << 30)), format="csc")
    reg = sp.csc_matrix(reg.multiply(1.0 / np.maximum(reg.sum(1), 1e-9)))
    return {
        "v_template": v,
        "f": f,
        "shapedirs": Ch(g.normal(size=(V, 3, n_shape + n_expr)) * 1e-3),
        "posedirs": g.normal(size=(V, 3, 36)) * 1e-3,
        "J_regressor": reg,
        "J_regressor_prior": reg.copy(),
        "weights": weights,
        "weights_prior": weights.copy(),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "J": Ch(reg @ v),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vt": g.random((V + 7, 2)),
        "ft": g.integers(0, V + 7, size=(F, 3)).astype(np.uint32),
    }


@pytest.fixture
def flame_file(tmp_path, seed, monkeypatch):
    g = np.random.default_rng(seed)
    root, ch_mod = _fake_chumpy()
    monkeypatch.setitem(sys.modules, "chumpy", root)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    data = flame_dict(g, ch_mod.Ch)
    blob = pickle.dumps(data, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    assert b"chumpy.ch\nCh" in blob  # referenced exactly like the real file
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(blob)
    plain = {k: (v.x if hasattr(v, "x") else v) for k, v in data.items()}
    return path, plain


def test_loads_flame_structure_without_chumpy(flame_file):
    path, src = flame_file
    assert "chumpy" not in sys.modules
    rig = load_flame_pkl(path)
    assert "chumpy" not in sys.modules
    assert rig.num_vertices == V and rig.num_faces == F
    assert (rig.num_shape, rig.num_expr) == (300, 100)
    assert rig.meta["num_shape"] == 300 and rig.meta["num_expr"] == 100 and rig.meta["version_guess"] == "2020"
    assert rig.meta["chumpy_in_file"] is True
    np.testing.assert_allclose(rig.template.numpy(), src["v_template"], rtol=1e-6)
    np.testing.assert_allclose(rig.shape_basis.numpy(), src["shapedirs"][:, :, :300], rtol=1e-6)
    np.testing.assert_allclose(rig.expr_basis.numpy(), src["shapedirs"][:, :, 300:], rtol=1e-6)
    np.testing.assert_allclose(rig.joint_regressor.numpy(), src["J_regressor"].toarray(), rtol=1e-6)
    np.testing.assert_allclose(rig.pose_correctives.numpy(), src["posedirs"], rtol=1e-6)
    assert torch.equal(rig.faces, torch.from_numpy(src["f"].astype(np.int64)))
    assert rig.uvs.shape == (V + 7, 2) and rig.face_uvs.shape == (F, 3)
    p = RigParams.zeros(rig, 2)
    p.jaw[0, 0] = 0.2
    assert torch.isfinite(pose_vertices(rig, p)).all()


def test_truncation_and_counts(flame_file):
    path, _ = flame_file
    rig = load_flame_pkl(path, num_shape=100, num_expr=50)
    assert (rig.num_shape, rig.num_expr, len(rig.expr_names)) == (100, 50, 50)
    with pytest.raises(HeadModelError, match="num_expr"):
        load_flame_pkl(path, num_expr=101)


def test_old_scipy_module_names_and_flat_posedirs(tmp_path, seed):
    g = np.random.default_rng(seed)
    data = flame_dict(g, np.asarray)
    data["posedirs"] = data["posedirs"].reshape(V * 3, 36)
    blob = pickle.dumps(data, protocol=2)
    # FLAME 2020 was pickled with old scipy: the matrix class lives in scipy.sparse.csc
    blob = blob.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")
    assert b"scipy.sparse.csc\ncsc_matrix" in blob
    path = tmp_path / "flame2023.pkl"
    path.write_bytes(blob)
    rig = load_flame_pkl(path)
    np.testing.assert_allclose(rig.pose_correctives.numpy(), data["posedirs"].reshape(V, 3, 36), rtol=1e-6)
    assert rig.meta["version_guess"] == "2023"


@pytest.mark.parametrize("damage", ["not_pickle", "truncated", "missing_key", "bad_weights", "not_dict",
                                    "bad_kintree", "empty", "absent"])
def test_clear_errors(tmp_path, seed, damage):
    g = np.random.default_rng(seed)
    data = flame_dict(g, np.asarray)
    path = tmp_path / "model.pkl"
    blob = pickle.dumps(data, protocol=2)
    if damage == "not_pickle":
        blob = b"\x89PNG\r\n\x1a\n" + bytes(g.integers(0, 256, 64, dtype=np.uint8))
    elif damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "missing_key":
        del data["J_regressor"]
        blob = pickle.dumps(data, protocol=2)
    elif damage == "bad_weights":
        data["weights"] = data["weights"][:, :4]
        blob = pickle.dumps(data, protocol=2)
    elif damage == "not_dict":
        blob = pickle.dumps([1, 2, 3], protocol=2)
    elif damage == "bad_kintree":
        data["kintree_table"] = np.array([[-1, 0, 0, 1, 1], [0, 1, 2, 3, 4]])
        blob = pickle.dumps(data, protocol=2)
    elif damage == "empty":
        blob = b""
    if damage != "absent":
        path.write_bytes(blob)
    expected = {"not_pickle": "pickle", "truncated": "truncated|ends too early|damaged|not a readable",
                "missing_key": "J_regressor", "bad_weights": "weights", "not_dict": "not a dict",
                "bad_kintree": "kintree", "empty": "empty", "absent": "does not exist"}[damage]
    with pytest.raises(HeadModelError, match=expected):
        load_flame_pkl(path)


def _evil_pickles(marker):
    cmd = f"touch {marker}".encode()
    code = f"open({str(marker)!r}, 'w').write('x')".encode()
    return [
        b"cos\nsystem\n(S'" + cmd + b"'\ntR.",  # protocol 0, os.system
        b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        b"c__builtin__\neval\n(S\"" + code + b"\"\ntR.",
        b"cbuiltins\nexec\n(S\"" + code + b"\"\ntR.",
        b"csubprocess\ncheck_call\n((S'touch'\nS'" + str(marker).encode() + b"'\nltR.",
        # hidden inside a dict entry and inside a chumpy object's state
        b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01cos\nsystem\nq\x02X" + len(cmd).to_bytes(4, "little") + cmd
        + b"q\x03\x85q\x04Rq\x05s.",
        b"\x80\x02cchumpy.ch\nCh\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00xq\x03cos\nsystem\nX"
        + len(cmd).to_bytes(4, "little") + cmd + b"\x85Rsb.",
    ]


def test_malicious_pickles_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    for i, blob in enumerate(_evil_pickles(marker)):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(blob)
        with pytest.raises(HeadModelError, match="refusing"):
            load_flame_pkl(path)
        with pytest.raises(HeadModelError, match="refusing"):
            safe_load_pickle(blob)
        assert not marker.exists(), f"pickle {i} ran code"
    # sanity: the same payload really runs under the plain unpickler (so the test can fail)
    pickle.loads(_evil_pickles(marker)[0])
    assert marker.exists()


def test_flame_side_files(flame_file, tmp_path, seed):
    path, src = flame_file
    g = np.random.default_rng(seed)
    masks = {"face": np.arange(10), "lips": np.arange(3, 6), "left_eyeball": np.arange(40, 45),
             "right_eyeball": np.arange(45, 50), "left_ear": np.array([20]), "right_ear": np.array([21]),
             "forehead": np.arange(5)}
    (tmp_path / "FLAME_masks.pkl").write_bytes(pickle.dumps(masks, protocol=2))
    emb = {"full_lmk_faces_idx": g.integers(0, F, size=(1, 68)), "full_lmk_bary_coords": g.dirichlet([1, 1, 1], size=(1, 68)),
           "static_lmk_faces_idx": g.integers(0, F, size=51)}
    np.save(tmp_path / "landmark_embedding.npy", emb, allow_pickle=True)
    rig = load_flame_pkl(path, masks_path=tmp_path / "FLAME_masks.pkl",
                         embedding_path=tmp_path / "landmark_embedding.npy")
    assert rig.region("ears").sum() == 2 and rig.region("eyeball_left").sum() == 5
    assert torch.equal(torch.nonzero(rig.region("lips"))[:, 0], torch.arange(3, 6))
    fi, bc = emb["full_lmk_faces_idx"][0], emb["full_lmk_bary_coords"][0]
    expected = src["f"].astype(np.int64)[fi, bc.argmax(1)]
    assert rig.landmarks_68.tolist() == expected.tolist()
    # MediaPipe subset embedding (.npz)
    idx = np.array([1, 4, 33, 263])
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=np.array([0, 1, 2, 3]),
             lmk_b_coords=np.full((4, 3), 1 / 3), landmark_indices=idx)
    rig = load_flame_pkl(path, embedding_path=tmp_path / "mediapipe_landmark_embedding.npz")
    assert rig.landmarks_mp.valid.sum() == 4 and rig.landmarks_mp.valid[idx].all()
    with pytest.raises(HeadModelError, match="FLAME_masks|mask"):
        (tmp_path / "bad_masks.pkl").write_bytes(pickle.dumps({"nothing": np.arange(3)}, protocol=2))
        load_flame_pkl(path, masks_path=tmp_path / "bad_masks.pkl")


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_data_pickles_of_every_protocol(seed, protocol):
    g = np.random.default_rng(seed)
    data = {"a": g.normal(size=(4, 3)).astype(np.float32), "csr": sp.csr_matrix(g.random((3, 4))),
            "coo": sp.coo_matrix(np.eye(3)), "scalar": np.float64(g.random()), "nested": [1, (2.5, "x"), {"k": None}]}
    out = safe_load_pickle(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["a"], data["a"])
    assert sp.issparse(out["csr"]) and np.array_equal(out["csr"].toarray(), data["csr"].toarray())
    assert np.array_equal(out["coo"].toarray(), np.eye(3)) and out["scalar"] == data["scalar"]
    assert out["nested"] == data["nested"]


def test_a_deeply_nested_pickle_is_refused_with_a_message(tmp_path):
    from avatar3d.head.unpickle import safe_load_pickle

    # 200,000 nested lists, written by hand (pickle.dumps itself would recurse): MARK '(' ... ']' closes each
    data = b"\x80\x02" + b"]" * 1 + b"(" * 200_000 + b"l" * 200_000 + b"."
    path = tmp_path / "deep.pkl"
    path.write_bytes(data)
    with pytest.raises(HeadModelError, match="nests its contents far deeper"):
        safe_load_pickle(path)
