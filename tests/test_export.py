"""`avatar3d export` (3DGS PLY, rig bundle) and the alpha writers, on a tiny synthetic avatar.

The avatar is built directly (random Gaussians with SH degree 2 bound to the synthetic rig, random per-frame
parameters, refined values that differ from the tracked ones), so every check compares exact numbers.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avatar3d import cli
from avatar3d.camera import intrinsics
from avatar3d.commands.export import ExportConfig, main_export
from avatar3d.errors import InputError, MediaError
from avatar3d.export import rig_bundle
from avatar3d.export.alpha import AlphaWriter, read_alpha
from avatar3d.export.splat import UP_AXES
from avatar3d.gaussians.avatar_render import binding_faces, pose_gaussians, render_avatar
from avatar3d.gaussians.expression import ExpressionBasis
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.gaussians.store import load_gaussians
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.refined import FREE_KEYS, load_refined, save_refined
from avatar3d.head.registry import load_rig
from avatar3d.head.rig import RigParams
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, write_manifest
from avatar3d.io.ply import read_ply
from avatar3d.render.rasterize import rasterize
from avatar3d.tracking.sequence import TrackedSequence
from avatar3d.training.frame_params import FrameParams

FRAMES, TRAIN, RES, SH_DEGREE = 6, [0, 1, 2, 3], 64, 2
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def rig():
    return load_rig("synthetic")


@pytest.fixture
def avatar(tmp_path, seed, rig) -> Path:
    """An avatar directory: manifest, tracking.npz, refined.npz (frames 0-3 trained), gaussians.safetensors."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: scale * torch.randn(*s, generator=g)  # noqa: E731
    root = tmp_path / "avatar"
    root.mkdir()
    paths = AvatarPaths(root)
    write_manifest(root, AvatarManifest(rig_name=rig.name, rig_checksum=rig.checksum()))
    T = FRAMES
    transl = torch.stack([rnd(T, scale=0.01), rnd(T, scale=0.01), -0.9 + rnd(T, scale=0.02)], -1)
    jaw = torch.stack([0.2 * torch.rand(T, generator=g), rnd(T, scale=0.01), rnd(T, scale=0.01)], -1)
    f32 = lambda x: x.numpy().astype(np.float32)  # noqa: E731
    seq = TrackedSequence(
        rig_name=rig.name, rig_checksum=rig.checksum(), fps=25.0, timestamps=np.arange(T) / 25.0, resolution=RES,
        source_size=np.array([RES, RES]), crop_box=np.array([0, 0, RES]),
        K=intrinsics(18.0, RES, RES).numpy(), viewmat=np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32),
        shape=f32(rnd(rig.num_shape, scale=0.5)), expr=f32(rnd(T, rig.num_expr, scale=0.3)),
        global_rot=f32(rnd(T, 3, scale=0.15)), neck=f32(rnd(T, 3, scale=0.15)), jaw=f32(jaw),
        eyes=f32(rnd(T, 2, 3, scale=0.1)), transl=f32(transl), landmarks=np.zeros((T, 478, 2), np.float32),
        landmarks_fit=np.zeros((T, 478, 2), np.float32), confidence=np.ones(T, np.float32),
        detected=np.ones(T, bool))
    seq.save(paths.tracking)
    refined = FrameParams(seq.params())
    with torch.no_grad():  # refined differs from tracked on every frame: the export must pick by the split
        for key in FREE_KEYS:
            getattr(refined, key).add_(rnd(*getattr(refined, key).shape, scale=0.05))
    save_refined(paths.refined, refined, TRAIN)
    neutral = RigParams.zeros(rig, 1)
    neutral.shape = torch.as_tensor(seq.shape)
    faces = binding_faces(rig)
    with torch.no_grad():
        rest = pose_vertices(rig, neutral)[0]
    gs = BoundGaussians.on_surface(rest, faces, 600, sh_degree=SH_DEGREE, generator=g)
    n = gs.num_gaussians
    tensors = {"parent": gs.parent, "local_means": gs.local_means.detach() + rnd(n, 3, scale=0.1),
               "log_scales": gs.log_scales.detach() + rnd(n, 3, scale=0.3), "quats": rnd(n, 4),
               "opacity_logits": rnd(n) + 2.0, "sh": rnd(n, (SH_DEGREE + 1) ** 2, 3, scale=0.4),
               "binding_faces": faces}
    # expression-dependent Gaussians: every export bakes the face of the frame it poses
    basis = ExpressionBasis.fit(seq.params(), 3)
    tensors.update({f"expression.{k}": v for k, v in basis.state_dict().items()})
    tensors.update(expr_means=rnd(n, 3, 3, scale=0.05), expr_colours=rnd(n, 3, 3, scale=0.2),
                   expr_opacity=rnd(n, 3, scale=0.5))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(paths.gaussians))
    return root


def _frame_params(root: Path, t: int) -> RigParams:
    """The parameters the export must use: refined for trained frames, tracked otherwise."""
    paths = AvatarPaths(root)
    refined, train = load_refined(paths.refined)
    source = refined if t in train else TrackedSequence.load(paths.tracking).params()
    return source.slice(slice(t, t + 1))


def _expected(root: Path, rig, params: RigParams):
    gaussians, faces = load_gaussians(AvatarPaths(root), "cpu")
    gaussians.requires_grad_(False)
    with torch.no_grad():
        world = pose_gaussians(gaussians, pose_vertices(rig, params)[0], faces, params)
    return world, gaussians, faces


def _render_ply(ply, viewmat, K, degree=SH_DEGREE):
    sh = torch.cat([torch.as_tensor(ply.sh_dc)[:, None], torch.as_tensor(ply.sh_rest)], 1)
    image, alpha, _ = rasterize(torch.as_tensor(ply.means), torch.as_tensor(ply.quats),
                                torch.exp(torch.as_tensor(ply.log_scales)),
                                torch.sigmoid(torch.as_tensor(ply.opacity_logit)), sh, viewmat, K, RES, RES,
                                torch.ones(3), sh_degree=degree)
    return image, alpha


def _header(path: Path) -> list[str]:
    lines = []
    with open(path, "rb") as fh:
        while (line := fh.readline().decode("ascii").strip()) != "end_header":
            lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------- PLY
@pytest.mark.parametrize("t", [1, 5])  # a trained (refined) frame and a held-out (tracked) one
def test_the_ply_reads_back_to_the_posed_gaussians(avatar, rig, tmp_path, t):
    out = tmp_path / "frame.ply"
    assert cli.run(["export", str(avatar), "--ply", str(out), "--frame", str(t)]) == 0
    ply = read_ply(out)
    world, gaussians, _ = _expected(avatar, rig, _frame_params(avatar, t))
    assert ply.num == gaussians.num_gaussians and ply.sh_degree == SH_DEGREE
    assert np.allclose(ply.means, world.means.numpy(), atol=1e-6)
    assert np.allclose(ply.log_scales, torch.log(world.scales).numpy(), atol=1e-5)
    assert np.allclose(ply.quats, world.quats.numpy(), atol=1e-6)
    assert np.allclose(1 / (1 + np.exp(-ply.opacity_logit)), world.opacities.numpy(), atol=1e-6)
    sh = world.sh.numpy()
    assert np.array_equal(ply.sh_dc, sh[:, 0]) and np.array_equal(ply.sh_rest, sh[:, 1:])
    # the other frame's parameters give other Gaussians: the frame (and the refined/tracked choice) matters
    tracked = TrackedSequence.load(AvatarPaths(avatar).tracking).params()
    other, _, _ = _expected(avatar, rig, tracked.slice(slice(t, t + 1)))
    assert (t in TRAIN) == (not np.allclose(ply.means, other.means.numpy(), atol=1e-4))


def test_the_ply_header_follows_the_3dgs_layout(avatar, tmp_path):
    out = tmp_path / "a.ply"
    main_export(ExportConfig(avatar, ply=out))
    header = _header(out)
    k1 = (SH_DEGREE + 1) ** 2 - 1
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * k1)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    props = [line.split() for line in header if line.startswith("property")]
    assert [p[2] for p in props] == names and all(p[1] == "float" for p in props)
    # f_rest is channel-major: f_rest_{c*k1 + j} is coefficient j+1 of colour c
    n = int(next(line for line in header if line.startswith("element vertex")).split()[2])
    body = np.frombuffer(out.read_bytes()[-n * 4 * len(names):], dtype="<f4").reshape(n, len(names))
    sh = load_gaussians(AvatarPaths(avatar), "cpu")[0].sh.detach().numpy()
    c, j = 2, 1
    assert np.array_equal(body[:, names.index(f"f_rest_{c * k1 + j}")], sh[:, j + 1, c])


def test_the_ply_renders_the_same_image_as_the_avatar(avatar, rig, tmp_path):
    t = 2
    out = tmp_path / "b.ply"
    main_export(ExportConfig(avatar, ply=out, frame=t))
    seq = TrackedSequence.load(AvatarPaths(avatar).tracking)
    K, viewmat = torch.as_tensor(seq.K), torch.as_tensor(seq.viewmat)
    gaussians, faces = load_gaussians(AvatarPaths(avatar), "cpu")
    gaussians.requires_grad_(False)
    with torch.no_grad():
        want = render_avatar(gaussians, rig, faces, _frame_params(avatar, t), K, viewmat, RES, RES, torch.ones(3))
    image, alpha = _render_ply(read_ply(out), viewmat, K)
    assert float(want.alpha.mean()) > 0.05  # the head is in view: the comparison means something
    assert torch.allclose(image, want.image, atol=1e-4) and torch.allclose(alpha, want.alpha, atol=1e-4)


@pytest.mark.parametrize("up", ["-y", "z"])
def test_a_turned_world_renders_the_same_from_the_turned_camera(avatar, tmp_path, up):
    seq = TrackedSequence.load(AvatarPaths(avatar).tracking)
    K, viewmat = torch.as_tensor(seq.K), torch.as_tensor(seq.viewmat)
    main_export(ExportConfig(avatar, ply=tmp_path / "y.ply", frame=3))
    main_export(ExportConfig(avatar, ply=tmp_path / "t.ply", frame=3, up=up))
    turn = torch.eye(4)
    turn[:3, :3] = torch.tensor(UP_AXES[up])
    turned_view = viewmat @ turn.T  # world' = turn @ world, so world->camera is viewmat @ turn^-1
    ref, _ = _render_ply(read_ply(tmp_path / "y.ply"), viewmat, K)
    ply = read_ply(tmp_path / "t.ply")
    image, _ = _render_ply(ply, turned_view, K)
    assert np.allclose(ply.means, read_ply(tmp_path / "y.ply").means @ np.asarray(UP_AXES[up]).T, atol=1e-6)
    assert torch.allclose(image, ref, atol=1e-4)
    # the view-dependent colour had to turn too: without rotating the SH the image differs
    ply.sh_rest = read_ply(tmp_path / "y.ply").sh_rest
    unturned, _ = _render_ply(ply, turned_view, K)
    assert (unturned - ref).abs().max() > 1e-2


def test_sh_degree_3_pads_with_zeros_and_renders_the_same(avatar, tmp_path):
    main_export(ExportConfig(avatar, ply=tmp_path / "a.ply", frame=0))
    main_export(ExportConfig(avatar, ply=tmp_path / "b.ply", frame=0, sh_degree=3))
    a, b = read_ply(tmp_path / "a.ply"), read_ply(tmp_path / "b.ply")
    assert b.sh_degree == 3 and np.array_equal(b.sh_rest[:, :8], a.sh_rest) and not b.sh_rest[:, 8:].any()
    seq = TrackedSequence.load(AvatarPaths(avatar).tracking)
    K, viewmat = torch.as_tensor(seq.K), torch.as_tensor(seq.viewmat)
    assert torch.allclose(_render_ply(a, viewmat, K)[0], _render_ply(b, viewmat, K, degree=3)[0], atol=1e-5)


def test_the_neutral_pose_is_the_mean_expression_without_head_motion(avatar, rig, tmp_path):
    main_export(ExportConfig(avatar, ply=tmp_path / "n.ply", neutral=True))
    refined, train = load_refined(AvatarPaths(avatar).refined)
    tracked = TrackedSequence.load(AvatarPaths(avatar).tracking).params()
    best = {k: torch.cat([getattr(refined if i in train else tracked, k)[i:i + 1] for i in range(FRAMES)])
            for k in ("expr", "jaw")}
    params = RigParams.zeros(rig, 1)
    params.shape = tracked.shape
    params.expr, params.jaw = best["expr"].mean(0, keepdim=True), best["jaw"].mean(0, keepdim=True)
    world, _, _ = _expected(avatar, rig, params)
    assert np.allclose(read_ply(tmp_path / "n.ply").means, world.means.numpy(), atol=1e-6)
    with pytest.raises(InputError, match="--neutral and --frame"):
        main_export(ExportConfig(avatar, ply=tmp_path / "x.ply", neutral=True, frame=1))


def test_a_frame_out_of_range_is_refused_and_writes_nothing(avatar, tmp_path):
    out = tmp_path / "bad.ply"
    for frame in (FRAMES, -FRAMES - 1):
        with pytest.raises(InputError, match=rf"out of range.*{FRAMES} tracked frames.*0\.\.{FRAMES - 1}"):
            main_export(ExportConfig(avatar, ply=out, frame=frame))
    assert cli.run(["export", str(avatar), "--ply", str(out), "--frame", "99"]) != 0
    assert not out.exists()
    assert main_export(ExportConfig(avatar, ply=out, frame=-1)) == 0 and out.is_file()  # -1: the last frame


def test_bad_requests_name_the_fix(avatar, tmp_path):
    with pytest.raises(InputError, match="nothing to export"):
        main_export(ExportConfig(avatar))
    with pytest.raises(InputError, match="must end in .ply"):
        main_export(ExportConfig(avatar, ply=tmp_path / "x.splat"))
    with pytest.raises(InputError, match="not an avatar"):
        main_export(ExportConfig(tmp_path, ply=tmp_path / "x.ply"))


# ---------------------------------------------------------------------------------------------- rig bundle
def _import_bundle_module(folder: Path):
    spec = importlib.util.spec_from_file_location("pose_numpy_under_test", folder / "pose_numpy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rig_bundle_reposes_every_frame_with_plain_numpy(avatar, rig, tmp_path):
    import trimesh

    folder = tmp_path / "bundle"
    assert cli.run(["export", str(avatar), "--rig", str(folder)]) == 0
    pose_numpy = _import_bundle_module(folder)  # the README's maths in numpy, shipped in the bundle
    bundle = pose_numpy.load(folder)
    tracked = TrackedSequence.load(AvatarPaths(avatar).tracking).params()
    for t in (1, 5):
        got = pose_numpy.pose_frame(bundle, t)
        world, gaussians, faces = _expected(avatar, rig, _frame_params(avatar, t))
        assert np.allclose(got["means"], world.means.numpy(), atol=1e-5)
        assert np.allclose(got["scales"], world.scales.numpy(), rtol=1e-4, atol=1e-7)
        dot = np.abs((got["quats"] * world.quats.numpy()).sum(-1))  # q and -q are the same rotation
        assert np.allclose(dot, 1.0, atol=1e-5)
        assert np.allclose(got["opacities"], world.opacities.numpy(), atol=1e-6)
        assert np.allclose(got["sh"], world.sh.numpy(), atol=1e-6)
        with torch.no_grad():
            mesh = pose_vertices(rig, _frame_params(avatar, t))[0].numpy()
        assert np.allclose(got["vertices"], mesh, atol=1e-5)
    # tracked parameters are there too, and differ from the refined ones on trained frames
    as_tracked = pose_numpy.pose_frame(bundle, 1, which="tracked")
    world, _, _ = _expected(avatar, rig, tracked.slice(slice(1, 2)))
    assert np.allclose(as_tracked["means"], world.means.numpy(), atol=1e-5)
    assert list(bundle["frames_train"]) == TRAIN
    info = json.loads((folder / "bundle.json").read_text())
    assert info["num_gaussians"] == gaussians.num_gaussians and info["num_frames"] == FRAMES
    assert info["sh_degree"] == SH_DEGREE and info["expression_names"] == list(rig.expr_names)
    obj = trimesh.load(folder / "mesh.obj", process=False)
    assert np.array_equal(np.asarray(obj.faces)[:len(faces)], faces.numpy())  # binding triangles come first
    assert np.allclose(np.asarray(obj.vertices), bundle["identity_vertices"], atol=1e-6)
    assert (folder / "README.md").read_text() == (DOCS / "rig_bundle.md").read_text()


def test_a_failed_bundle_export_keeps_the_previous_bundle(avatar, tmp_path, monkeypatch):
    folder = tmp_path / "bundle"
    main_export(ExportConfig(avatar, rig=folder, compress=False))
    before = {f.name: f.read_bytes() for f in folder.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rig_bundle, "_npz_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        main_export(ExportConfig(avatar, rig=folder))
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar", "bundle"]  # no temp folder left behind


def test_the_bundle_documentation_is_in_the_repository():
    text = (DOCS / "rig_bundle.md").read_text()
    assert text == rig_bundle.README
    for name in ("identity_vertices", "local_means", "frames_train", "pose_correctives", "rodrigues"):
        assert name in text


# ---------------------------------------------------------------------------------------------- alpha output
def _frames(rng, h, w, count):
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):  # smooth images (lossy codecs keep them well) with a varying alpha ramp
        rgb = np.stack([(xx * 255 // (w - 1) + 40 * i) % 256, yy * 255 // (h - 1),
                        np.full_like(xx, int(rng.integers(0, 256)))], -1).astype(np.uint8)
        alpha = ((xx + yy + 17 * i) * 255 // (h + w + 17 * count)).astype(np.uint8)
        yield rgb, alpha


@pytest.mark.parametrize("name, codec, alpha_tol, rgb_tol", [
    ("seq", None, 0, 0), ("clip.mov", None, 2, 3.0), ("clip.mov", "qtrle", 0, 0), ("clip.webm", None, 6, 6.0)])
def test_alpha_survives_a_round_trip(tmp_path, seed, name, codec, alpha_tol, rgb_tol):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    frames = list(_frames(rng, h, w, 4))
    path = tmp_path / name
    with AlphaWriter(path, 25, w, h, codec=codec) as writer:
        for rgb, alpha in frames:
            writer.write(rgb, alpha)
    back = list(read_alpha(path))
    assert len(back) == len(frames)
    for (rgb, alpha), got in zip(frames, back):
        assert got.shape == (h, w, 4)
        assert np.abs(got[..., 3].astype(int) - alpha).max() <= alpha_tol
        assert np.abs(got[..., :3].astype(float) - rgb).mean() <= rgb_tol
        assert got[..., 3].std() > 20  # the ramp is there, not a constant plane


def test_alpha_writer_refuses_bad_input_and_leaves_nothing_behind(tmp_path):
    with pytest.raises(MediaError, match="suffix"):
        AlphaWriter(tmp_path / "clip.mp4", 25, 8, 8)
    with pytest.raises(MediaError, match="even"):
        AlphaWriter(tmp_path / "odd.webm", 25, 9, 8)
    path = tmp_path / "clip.mov"
    with pytest.raises(MediaError, match="shape"):
        with AlphaWriter(path, 25, 16, 16) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8))
            writer.write(np.zeros((8, 16, 3), np.uint8), np.zeros((8, 16), np.uint8))
    assert list(tmp_path.iterdir()) == []  # the partial clip was dropped
    folder = tmp_path / "seq"
    with AlphaWriter(folder, 25, 4, 4) as writer:
        writer.write(np.zeros((4, 4, 3), np.float32), np.ones((4, 4, 1), np.float32))  # float input, [H,W,1] alpha
    assert sorted(f.name for f in folder.iterdir()) == [".avatar3d-output", "000000.png"]  # the frames + our marker
    assert next(read_alpha(folder))[..., 3].min() == 255


def test_centre_moves_the_head_to_the_origin(avatar, tmp_path):
    main_export(ExportConfig(avatar, ply=tmp_path / "a.ply", frame=4))
    main_export(ExportConfig(avatar, ply=tmp_path / "c.ply", frame=4, centre=True))
    a, c = read_ply(tmp_path / "a.ply").means, read_ply(tmp_path / "c.ply").means
    assert np.allclose(c.min(0) + c.max(0), 0.0, atol=1e-6)
    shift = a - c  # a pure translation: the shape is kept
    assert np.allclose(shift, shift[0], atol=1e-6) and np.linalg.norm(shift[0]) > 0.5  # the head sat ~0.9 m away
