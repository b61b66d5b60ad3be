"""3DGS PLY: exact round trip, the standard property order and f_rest layout, foreign files, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.io.ply import GaussianPly, read_ply, write_ply


def random_gaussians(rng, n: int, degree: int) -> GaussianPly:
    k1 = (degree + 1) ** 2 - 1
    return GaussianPly(
        means=rng.normal(size=(n, 3)), quats=rng.normal(size=(n, 4)), log_scales=rng.normal(-4, 1, size=(n, 3)),
        opacity_logit=rng.normal(size=n), sh_dc=rng.normal(size=(n, 3)), sh_rest=rng.normal(size=(n, k1, 3)))


def header_of(path) -> list[str]:
    raw = path.read_bytes()
    return raw[: raw.index(b"end_header\n")].decode("ascii").splitlines()


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_is_exact(tmp_path, seed, degree):
    rng = np.random.default_rng(seed)
    g = random_gaussians(rng, int(rng.integers(1, 500)), degree)
    back = read_ply(write_ply(tmp_path / "g.ply", g))
    assert back.num == g.num and back.sh_degree == degree
    for name in ("means", "quats", "log_scales", "opacity_logit", "sh_dc", "sh_rest"):
        np.testing.assert_array_equal(getattr(back, name), getattr(g, name).astype(np.float32), err_msg=name)
    assert back.extra == {}
    assert [p.name for p in tmp_path.iterdir()] == ["g.ply"]


def test_standard_property_order_and_channel_major_rest(tmp_path):
    n, k1 = 2, 15
    sh_rest = np.zeros((n, k1, 3), np.float32)
    for k in range(k1):
        for c in range(3):
            sh_rest[:, k, c] = 100 * c + k
    g = GaussianPly(means=np.ones((n, 3)), quats=np.tile([1, 0, 0, 0], (n, 1)), log_scales=np.zeros((n, 3)),
                    opacity_logit=np.zeros(n), sh_dc=np.zeros((n, 3)), sh_rest=sh_rest)
    path = write_ply(tmp_path / "g.ply", g)
    header = header_of(path)
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {n}" in header
    props = [line.split()[2] for line in header if line.startswith("property")]
    assert all(line.split()[1] == "float" for line in header if line.startswith("property"))
    assert props == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(45)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    raw = path.read_bytes()
    body = np.frombuffer(raw[raw.index(b"end_header\n") + 11:], dtype="<f4").reshape(n, len(props))
    rest = body[0, props.index("f_rest_0"): props.index("f_rest_0") + 45]
    # 3DGS stores features_rest [N,K-1,3] transposed to [N,3,K-1]: f_rest_{c*(K-1)+k}
    assert rest[1 * k1 + 4] == 104 and rest[2 * k1 + 0] == 200 and rest[14] == 14


def test_accepts_torch_tensors(tmp_path, seed):
    n = 7
    g = GaussianPly(means=torch.randn(n, 3), quats=torch.randn(n, 4), log_scales=torch.randn(n, 3),
                    opacity_logit=torch.randn(n), sh_dc=torch.randn(n, 3), sh_rest=torch.randn(n, 3, 3))
    back = read_ply(write_ply(tmp_path / "t.ply", g))
    np.testing.assert_array_equal(back.means, g.means)
    assert back.sh_degree == 1


def test_reads_foreign_files_with_other_types_and_extra_properties(tmp_path, seed):
    """Some tools write doubles, big endian, no normals, and extra per-vertex fields."""
    rng = np.random.default_rng(seed)
    n = 5
    names = ["x", "y", "z", "red", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    dtype = np.dtype([(k, ">u1" if k == "red" else ">f8") for k in names])
    rec = np.zeros(n, dtype)
    for k in names:
        rec[k] = rng.integers(0, 255, n) if k == "red" else rng.normal(size=n)
    header = ["ply", "format binary_big_endian 1.0", "comment from somewhere", f"element vertex {n}"]
    header += [f"property {'uchar' if k == 'red' else 'double'} {k}" for k in names] + ["end_header"]
    path = tmp_path / "foreign.ply"
    path.write_bytes(("\n".join(header) + "\n").encode() + rec.tobytes())
    g = read_ply(path)
    np.testing.assert_allclose(g.means[:, 1], rec["y"].astype(np.float32))
    np.testing.assert_allclose(g.quats[:, 3], rec["rot_3"].astype(np.float32))
    assert g.sh_degree == 0 and g.sh_rest.shape == (n, 0, 3)
    np.testing.assert_array_equal(g.extra["red"], rec["red"])


def test_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "a.ply").write_text("hello\n")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(tmp_path / "a.ply")
    (tmp_path / "mesh.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n" + np.zeros(3, "<f4").tobytes())
    with pytest.raises(InputError, match="not a 3D Gaussian PLY"):
        read_ply(tmp_path / "mesh.ply")
    (tmp_path / "ascii.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(InputError, match="binary_little_endian"):
        read_ply(tmp_path / "ascii.ply")
    rng = np.random.default_rng(0)
    path = write_ply(tmp_path / "g.ply", random_gaussians(rng, 10, 1))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InputError, match="truncated"):
        read_ply(path)
    with pytest.raises(InputError, match=r"shape \[10,3\]"):
        GaussianPly(means=np.zeros((10, 3)), quats=np.zeros((10, 4)), log_scales=np.zeros((9, 3)),
                    opacity_logit=np.zeros(10), sh_dc=np.zeros((10, 3)))
    with pytest.raises(InputError, match="degree"):
        GaussianPly(means=np.zeros((2, 3)), quats=np.zeros((2, 4)), log_scales=np.zeros((2, 3)),
                    opacity_logit=np.zeros(2), sh_dc=np.zeros((2, 3)), sh_rest=np.zeros((2, 5, 3)))
