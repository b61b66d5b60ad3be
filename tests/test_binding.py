"""Triangle-local binding: frames are orthonormal, Gaussians follow rigid motion of the mesh exactly."""
import torch

from avatar3d.gaussians.binding import local_to_world, triangle_frames, world_to_local


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
    means, rots, scales = local_to_world(local, lrot, lscale, parent, origin, rot, scale)
    torch.testing.assert_close(world_to_local(means, parent, origin, rot, scale), local)

    # a rigid motion plus uniform scaling of the mesh moves the Gaussians the same way
    R, t, s = _random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64), 1.7
    moved = s * verts @ R.T + t
    means2, rots2, scales2 = local_to_world(local, lrot, lscale, parent, *triangle_frames(moved, faces))
    torch.testing.assert_close(means2, s * means @ R.T + t)
    torch.testing.assert_close(rots2, R @ rots)
    torch.testing.assert_close(scales2, s * scales)
