"""Triangle-local binding: frames are orthonormal, Gaussians follow rigid motion of the mesh exactly."""
import pytest
import torch

from avatar3d.gaussians.avatar_render import pose_gaussians
from avatar3d.gaussians.binding import local_to_world, triangle_frames, world_to_local
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.render import native
from avatar3d.rotation import matrix_to_quaternion, quaternion_to_matrix

needs_native = pytest.mark.skipif(not native.is_available(),
                                  reason="the native extension avatar3d._C is not built (make build)")


def _random_rotation(g):
    q = torch.randn(4, generator=g, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ], dtype=torch.float64)


def test_frames_orthonormal_and_follow_rigid_motion(seed):
    g = torch.Generator().manual_seed(seed)
    V, F, N = 40, 30, 100
    verts = torch.randn(V, 3, generator=g, dtype=torch.float64)
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    origin, rot, scale = triangle_frames(verts, faces)
    eye = torch.eye(3, dtype=torch.float64).expand(F, 3, 3)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye, atol=1e-10, rtol=0)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(F, dtype=torch.float64))

    parent = torch.randint(0, F, (N,), generator=g)
    local = torch.randn(N, 3, generator=g, dtype=torch.float64)
    lrot = torch.stack([_random_rotation(g) for _ in range(N)])
    lscale = torch.rand(N, 3, generator=g, dtype=torch.float64)
    lquat = matrix_to_quaternion(lrot) * (1 + torch.rand(N, 1, generator=g, dtype=torch.float64))  # not unit
    means, quats, scales = local_to_world(local, lquat, lscale, parent, origin, rot, scale)
    rots = quaternion_to_matrix(quats)
    torch.testing.assert_close(rots, rot[parent] @ lrot)
    torch.testing.assert_close(world_to_local(means, parent, origin, rot, scale), local)

    # a rigid motion plus uniform scaling of the mesh moves the Gaussians the same way
    R, t, s = _random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64), 1.7
    moved = s * verts @ R.T + t
    means2, quats2, scales2 = local_to_world(local, lquat, lscale, parent, *triangle_frames(moved, faces))
    torch.testing.assert_close(means2, s * means @ R.T + t)
    torch.testing.assert_close(quaternion_to_matrix(quats2), R @ rots)
    torch.testing.assert_close(scales2, s * scales)


def _strip(n: int):
    """A flat strip of 2n triangles along x in the z=0 plane, facing +z: vertices [2(n+1),3], faces [2n,3]."""
    xs = torch.arange(n + 1, dtype=torch.float32) * 0.1
    verts = torch.cat([torch.stack([xs, torch.zeros_like(xs), torch.zeros_like(xs)], -1),
                       torch.stack([xs, torch.full_like(xs, 0.1), torch.zeros_like(xs)], -1)])
    faces = []
    for i in range(n):
        a, b, c, d = i, i + 1, n + 2 + i, n + 1 + i
        faces += [[a, b, c], [a, c, d]]
    return verts, torch.tensor(faces)


def test_unseen_triangles_take_their_nearest_seen_colour(seed):
    from avatar3d.gaussians.colour_init import fill_unseen

    g = torch.Generator().manual_seed(seed)
    verts, faces = _strip(6)
    left, right = torch.rand(2, 3, generator=g)
    colours = torch.rand(faces.shape[0], 3, generator=g)  # noise where unseen: must not leak into the result
    colours[:2], colours[-2:] = left, right
    seen = torch.zeros(faces.shape[0], dtype=torch.bool)
    seen[:2] = True  # the left end (x in 0..0.1)
    seen[-2:] = True  # the right end
    filled = fill_unseen(faces, colours, seen, verts.shape[0])
    assert torch.equal(filled[seen], colours[seen])
    # the first ring around each end takes that end's colour, not the other's or the frame's mean
    assert torch.allclose(filled[2], left) and torch.allclose(filled[-3], right)
    # further in, the colours are blends of the two ends (never the unseen noise)
    lo, hi = torch.minimum(left, right) - 1e-6, torch.maximum(left, right) + 1e-6
    assert bool(((filled >= lo) & (filled <= hi)).all())
    # a piece with no seen triangle at all gets the mean seen colour
    isolated = torch.cat([faces, torch.tensor([[100, 101, 102]])])
    out = fill_unseen(isolated, torch.cat([colours, torch.zeros(1, 3)]), torch.cat([seen, torch.tensor([False])]), 103)
    assert torch.allclose(out[-1], colours[seen].mean(0))


def test_triangle_colours_sample_the_visible_surface_only(seed):
    from avatar3d.camera import intrinsics, orbit_viewmat
    from avatar3d.gaussians.colour_init import pick_views, triangle_colours

    g = torch.Generator().manual_seed(seed)
    verts, faces = _strip(4)
    verts = verts - torch.tensor([0.2, 0.05, 0.0])
    hidden = verts + torch.tensor([0.0, 0.0, -0.05])  # a copy behind the first: never visible
    all_verts = torch.cat([verts, hidden])
    all_faces = torch.cat([faces, faces + verts.shape[0]])
    res = 48
    K = intrinsics(40.0, res, res)
    viewmat = orbit_viewmat(1.0)
    colour = torch.rand(3, generator=g)
    image = colour.expand(res, res, 3).clone()
    out, seen = triangle_colours([all_verts], all_faces, [image], K, viewmat)
    n = faces.shape[0]
    assert bool(seen[:n].all()) and not bool(seen[n:].any())
    assert torch.allclose(out[:n], colour.expand(n, 3), atol=1e-5)
    assert torch.allclose(out[n:], colour.expand(n, 3), atol=1e-5)  # an unseen piece: the mean seen colour
    yaw = torch.tensor([0.0, 0.3, -0.2, 0.1, 0.05])
    picks = pick_views(yaw, 3)
    assert picks[:2] == [2, 1] and len(picks) == len(set(picks)) == 3


def test_posing_sees_a_changed_binding(seed):
    # pose_gaussians keeps each set's used triangles between frames; an in-place change of the binding is seen
    g = torch.Generator().manual_seed(seed)
    V, F, N = 60, 200, 40  # few triangles used: the path that poses only those
    verts = torch.randn(V, 3, generator=g)
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    gaussians = BoundGaussians(torch.randint(0, F, (N,), generator=g), torch.randn(N, 3, generator=g),
                               torch.randn(N, 3, generator=g) * 0.1 - 3, torch.randn(N, 4, generator=g),
                               torch.randn(N, generator=g), torch.randn(N, 1, 3, generator=g))
    for _ in range(3):
        posed, full = pose_gaussians(gaussians, verts, faces), gaussians.world(verts, faces)
        for a, b in ((posed.means, full.means), (posed.quats, full.quats), (posed.scales, full.scales)):
            torch.testing.assert_close(a, b)
        with torch.no_grad():
            gaussians.parent[: N // 2] = torch.randint(0, F, (N // 2,), generator=g)


def _random_bound(g, V=80, F=120, N=500):
    """A random mesh with degenerate triangles (a zero first edge, a zero second edge: exactly, as a nearly
    degenerate one's normal is rounding noise in any implementation) and Gaussians bound to it with non-unit
    quaternions."""
    verts = torch.randn(V, 3, generator=g)
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    faces[0] = torch.tensor([2, 2, 3])  # zero-length first edge
    faces[1] = torch.tensor([4, 5, 4])  # zero-length second edge: no normal
    gaussians = BoundGaussians(torch.randint(0, F, (N,), generator=g), torch.randn(N, 3, generator=g),
                               torch.randn(N, 3, generator=g) * 0.3 - 3, torch.randn(N, 4, generator=g) * 2,
                               torch.randn(N, generator=g), torch.randn(N, 1, 3, generator=g))
    gaussians.parent[:2] = torch.tensor([0, 1])
    return verts, faces, gaussians


@needs_native
def test_native_posing_matches_the_pytorch_binding(seed):
    # The native pass (clips, viewer, export) is held to binding.py's maths, degenerate triangles included.
    g = torch.Generator().manual_seed(seed)
    verts, faces, gaussians = _random_bound(g)
    reference = gaussians.world(verts, faces)
    means, quats, scales = native.bind_world(verts, faces, gaussians.parent, gaussians.local_means, gaussians.quats,
                                             gaussians.log_scales)
    for name, a, b in (("means", means, reference.means), ("quats", quats, reference.quats),
                       ("scales", scales, reference.scales)):
        assert torch.isfinite(a).all(), name
        # float32 rounding of terms up to ~10 (the mesh's scale times the local offsets), which may cancel
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=2e-5, msg=f"{name} differ")


@needs_native
def test_posing_without_gradient_takes_the_native_pass(seed, monkeypatch):
    g = torch.Generator().manual_seed(seed)
    verts, faces, gaussians = _random_bound(g)
    calls = []
    real = native.bind_world
    monkeypatch.setattr(native, "bind_world", lambda *a: calls.append(1) or real(*a))
    trained = pose_gaussians(gaussians, verts, faces)  # the parameters want gradients: PyTorch
    assert not calls and trained.means.requires_grad
    with torch.no_grad():
        shown = pose_gaussians(gaussians, verts, faces)
    assert calls and not shown.means.requires_grad
    torch.testing.assert_close(shown.means, trained.means.detach(), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(shown.opacities, trained.opacities.detach())
    assert shown.sh is gaussians.sh or torch.equal(shown.sh, gaussians.sh.detach())


@needs_native
def test_native_posing_rejects_gaussians_of_another_rig(seed):
    g = torch.Generator().manual_seed(seed)
    verts, faces, gaussians = _random_bound(g)
    with torch.no_grad():
        gaussians.parent[5] = faces.shape[0]  # one past the last triangle
    with pytest.raises(RuntimeError, match="out of range.*do not belong to this rig"):
        native.bind_world(verts, faces, gaussians.parent, gaussians.local_means, gaussians.quats, gaussians.log_scales)
    with pytest.raises(RuntimeError, match="out of range"):
        native.bind_world(verts[:10], faces, gaussians.parent.clamp_max(faces.shape[0] - 1), gaussians.local_means,
                          gaussians.quats, gaussians.log_scales)
