"""BoundGaussians: surface initialisation, posing follows the mesh, selection keeps the binding, round trip."""
import math

import torch

from avatar3d.gaussians.binding import triangle_frames
from avatar3d.gaussians.model import BoundGaussians
from avatar3d.rotation import matrix_to_quaternion as _rotmat_to_quat
from avatar3d.rotation import quaternion_multiply as _quat_mul


def _quat_to_rotmat(q):  # [...,4] -> [...,3,3]
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def _mesh(g):
    # a bumpy open grid: many triangles of varying size and orientation
    n = 8
    u, v = torch.meshgrid(torch.linspace(-1, 1, n, dtype=torch.float64), torch.linspace(-1, 1, n, dtype=torch.float64),
                          indexing="ij")
    z = 0.2 * torch.sin(3 * u) * torch.cos(2 * v) + 0.01 * torch.randn(n, n, generator=g, dtype=torch.float64)
    verts = torch.stack([u, v, z], -1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten(), idx[:-1, 1:].flatten()
    faces = torch.cat([torch.stack([a, b, c], 1), torch.stack([a, c, d], 1)])
    return verts, faces


def test_quaternion_helpers_match_matrices(seed):
    g = torch.Generator().manual_seed(seed)
    q1, q2 = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    R1, R2 = _quat_to_rotmat(q1), _quat_to_rotmat(q2)
    torch.testing.assert_close(_quat_to_rotmat(_quat_mul(q1, q2)), R1 @ R2)
    torch.testing.assert_close(_quat_to_rotmat(_rotmat_to_quat(R1)), R1)


def test_on_surface_points_lie_on_their_parent_triangle(seed):
    g = torch.Generator().manual_seed(seed)
    verts, faces = _mesh(g)
    gs = BoundGaussians.on_surface(verts, faces, 500, sh_degree=2, generator=g)
    world = gs.world(verts, faces)
    tri = verts[faces[gs.parent]]  # [N,3,3]
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    dist = ((world.means - tri[:, 0]) * normal).sum(-1).abs()
    assert dist.max() < 1e-9  # on the plane of the parent triangle
    assert world.sh.shape == (500, 9, 3)
    # flat: the smallest world scale is along the triangle normal
    R = _quat_to_rotmat(world.quats)
    axis_min = R[torch.arange(500), :, world.scales.argmin(-1)]
    assert ((axis_min * normal).sum(-1).abs() > 0.999).all()


def test_posing_follows_a_rigid_motion_and_subset_keeps_parents(seed):
    g = torch.Generator().manual_seed(seed)
    verts, faces = _mesh(g)
    gs = BoundGaussians.on_surface(verts, faces, 300, generator=g)
    with torch.no_grad():
        gs.quats.copy_(torch.randn(300, 4, generator=g, dtype=torch.float64))
        gs.local_means.add_(0.1 * torch.randn(300, 3, generator=g, dtype=torch.float64))
    angle = torch.rand(1, generator=g, dtype=torch.float64).item() * math.pi
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    t = torch.randn(3, generator=g, dtype=torch.float64)
    a, b = gs.world(verts, faces), gs.world(verts @ R.T + t, faces)
    torch.testing.assert_close(b.means, a.means @ R.T + t)
    torch.testing.assert_close(_quat_to_rotmat(b.quats), R @ _quat_to_rotmat(a.quats))
    torch.testing.assert_close(b.scales, a.scales)

    keep = torch.rand(300, generator=g) > 0.5
    sub = gs.subset(keep)
    assert torch.equal(sub.parent, gs.parent[keep])
    torch.testing.assert_close(sub.world(verts, faces).means, a.means[keep])
    back = BoundGaussians.from_tensors(sub.tensors())
    torch.testing.assert_close(back.world(verts, faces).means, sub.world(verts, faces).means)
    origin, _, _ = triangle_frames(verts, faces)
    assert origin.shape == (faces.shape[0], 3)
