"""The z-buffer mesh rasterizer (ground-truth renderer of the synthetic subject)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar3d.camera import Camera
from avatar3d.errors import InputError
from avatar3d.render.mesh_raster import interpolate, rasterize_triangles, render_mesh, sample_texture

W, H = 48, 40
F_PIX = 50.0


def _K() -> torch.Tensor:
    return torch.tensor([[F_PIX, 0.0, W / 2], [0.0, F_PIX, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _unproject(pix: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """pix: [N,2] pixel coordinates, depth: [N] camera z -> camera-space points [N,3] (identity viewmat)."""
    K = _K()
    x = (pix[:, 0] - K[0, 2]) / K[0, 0] * depth
    y = (pix[:, 1] - K[1, 2]) / K[1, 1] * depth
    return torch.stack([x, y, depth], dim=1)


def _inside_analytic(pix: np.ndarray) -> np.ndarray:
    """Pixel centres strictly inside the 2D triangle pix [3,2] (either winding) -> [H,W] bool."""
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    def edge(a, b):
        return (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])
    e = np.stack([edge(pix[1], pix[2]), edge(pix[2], pix[0]), edge(pix[0], pix[1])])
    return (e > 0).all(0) | (e < 0).all(0)


def test_triangle_covers_exactly_the_pixel_centres_inside(seed):
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(4, dtype=torch.float64)
    for _ in range(20):
        pix = torch.rand(3, 2, generator=g, dtype=torch.float64) * torch.tensor([W + 10.0, H + 10.0]) - 5.0
        depth = 1.0 + 2.0 * torch.rand(3, generator=g, dtype=torch.float64)
        verts = _unproject(pix, depth)
        frags = rasterize_triangles(verts, torch.tensor([[0, 1, 2]]), _K(), eye, W, H, backfaces="draw")
        want = _inside_analytic(pix.numpy())
        got = frags.mask.numpy()
        assert np.array_equal(got, want), f"{(got != want).sum()} pixels differ from the analytic test"
        assert (frags.face_id[frags.mask] == 0).all()


def test_axis_aligned_quad_covers_the_expected_block_without_cracks():
    x0, x1, y0, y1 = 10.2, 30.6, 5.7, 20.1  # centres i + 0.5 inside: columns 10..30, rows 6..19
    pix = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64)
    verts = _unproject(pix, torch.full((4,), 2.0, dtype=torch.float64))
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])  # facing the camera
    frags = rasterize_triangles(verts, faces, _K(), torch.eye(4, dtype=torch.float64), W, H)
    want = np.zeros((H, W), dtype=bool)
    want[6:20, 10:31] = True
    assert np.array_equal(frags.mask.numpy(), want)
    assert set(frags.face_id[frags.mask].tolist()) == {0, 1}
    assert torch.allclose(frags.depth[frags.mask], torch.tensor(2.0, dtype=torch.float64))


def test_backface_culling_follows_the_winding():
    verts = _unproject(torch.tensor([[5.0, 5.0], [40.0, 8.0], [12.0, 35.0]], dtype=torch.float64),
                       torch.full((3,), 2.0, dtype=torch.float64))
    eye = torch.eye(4, dtype=torch.float64)
    # (b - a) x (c - a) points away from the camera (+z) for [0,1,2]: that is the back
    n = torch.linalg.cross(verts[1] - verts[0], verts[2] - verts[0])
    back, front = (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])) if n[2] > 0 else \
        (torch.tensor([[0, 2, 1]]), torch.tensor([[0, 1, 2]]))
    assert rasterize_triangles(verts, back, _K(), eye, W, H).mask.sum() == 0
    drawn = rasterize_triangles(verts, front, _K(), eye, W, H).mask.sum()
    assert drawn > 100
    frags = rasterize_triangles(verts, back, _K(), eye, W, H, backfaces="draw")
    assert frags.mask.sum() == drawn and not frags.front.any()
    assert torch.equal(rasterize_triangles(verts, front, _K(), eye, W, H).front, frags.mask)
    # a back face can be drawn in a flat colour instead of being culled
    out = render_mesh(verts, back, _K(), eye, W, H, backfaces="draw", backface_color=(0.2, 0.1, 0.0), background=1.0)
    assert torch.equal(out.face_id >= 0, frags.mask)
    assert torch.allclose(out.image[frags.mask], torch.tensor([0.2, 0.1, 0.0], dtype=torch.float64))
    assert torch.allclose(out.image[~frags.mask], torch.tensor(1.0, dtype=torch.float64))


def test_back_faces_can_fill_only_the_holes():
    eye = torch.eye(4, dtype=torch.float64)
    quad = _unproject(torch.tensor([[0.0, 0.0], [20.3, 0.0], [20.3, H], [0.0, H]], dtype=torch.float64),
                      torch.full((4,), 2.0, dtype=torch.float64))  # the left part of the image, facing the camera
    big = _unproject(torch.tensor([[-50.0, -50.0], [-50.0, 150.0], [150.0, -50.0]], dtype=torch.float64),
                     torch.full((3,), 1.0, dtype=torch.float64))  # everywhere, nearer, its back to the camera
    verts = torch.cat([quad, big])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 5, 6]])
    n = torch.linalg.cross(big[1] - big[0], big[2] - big[0])
    if n[2] < 0:  # make sure triangle 2 shows its back
        faces[2] = torch.tensor([4, 6, 5])
    quad_px = torch.zeros(H, W, dtype=torch.bool)
    quad_px[:, :20] = True
    cull = rasterize_triangles(verts, faces, _K(), eye, W, H, backfaces="cull")
    draw = rasterize_triangles(verts, faces, _K(), eye, W, H, backfaces="draw")
    holes = rasterize_triangles(verts, faces, _K(), eye, W, H, backfaces="holes")
    assert torch.equal(cull.mask, quad_px)
    assert (draw.face_id == 2).all()  # two-sided: the nearer back face hides the quad
    assert torch.equal(holes.face_id == 2, ~quad_px) and torch.equal(holes.front, quad_px)
    with pytest.raises(InputError, match="backfaces"):
        rasterize_triangles(verts, faces, _K(), eye, W, H, backfaces="none")


def test_culling_a_closed_outward_mesh_changes_nothing_visible(seed):
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)
    faces = torch.tensor(sphere.faces, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    cam = Camera.orbit(0.5, 40.0, 64, 64, yaw_deg=float(rng.uniform(-180, 180)), pitch_deg=float(rng.uniform(-60, 60)))
    culled = rasterize_triangles(verts, faces, cam.K, cam.viewmat, 64, 64, backfaces="cull")
    full = rasterize_triangles(verts, faces, cam.K, cam.viewmat, 64, 64, backfaces="draw")
    assert culled.mask.sum() > 500
    assert torch.equal(culled.mask, full.mask)
    same = (culled.face_id == full.face_id).float()[culled.mask].mean()
    assert same > 0.97  # only pixels on silhouette-grazing ties may differ
    assert torch.allclose(culled.depth[culled.mask], full.depth[culled.mask], atol=1e-3)


def test_the_nearer_of_two_overlapping_triangles_wins(seed):
    g = torch.Generator().manual_seed(seed)
    pix = torch.tensor([[2.0, 2.0], [46.0, 3.0], [20.0, 38.0]], dtype=torch.float64)
    near_z, far_z = 1.0 + torch.rand(1, generator=g).item(), 3.5
    near = _unproject(pix, torch.full((3,), near_z, dtype=torch.float64))
    far = _unproject(pix + torch.tensor([3.0, 1.0], dtype=torch.float64), torch.full((3,), far_z, dtype=torch.float64))
    order = [0, 1] if torch.rand(1, generator=g).item() < 0.5 else [1, 0]
    verts = torch.cat([near, far])
    tris = [torch.tensor([0, 2, 1]), torch.tensor([3, 5, 4])]
    faces = torch.stack([tris[i] for i in order])
    near_id = order.index(0)
    colours = torch.zeros(6, 3, dtype=torch.float64)
    colours[:3, 0] = 1.0  # the near triangle is red, the far one green
    colours[3:, 1] = 1.0
    out = render_mesh(verts, faces, _K(), torch.eye(4, dtype=torch.float64), W, H, vertex_colors=colours,
                      background=(0.0, 0.0, 1.0), shading=False)
    both = torch.from_numpy(_inside_analytic(pix.numpy()) & _inside_analytic((pix + torch.tensor([3.0, 1.0])).numpy()))
    assert both.sum() > 200
    assert (out.face_id[both] == near_id).all()
    assert torch.allclose(out.image[both], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(out.depth[both], torch.tensor(near_z, dtype=torch.float64))
    only_far = (out.face_id == 1 - near_id)
    assert only_far.sum() > 0
    assert torch.allclose(out.image[only_far], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    none = out.face_id < 0
    assert torch.allclose(out.image[none], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.equal(out.alpha[..., 0] > 0, out.face_id >= 0)


def test_texture_lookup_at_texel_centres_and_between(seed):
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(6, 8, 3, generator=g, dtype=torch.float64)
    for i, j in ((0, 0), (5, 7), (2, 3)):  # (row, column): centre u = (j + .5) / 8, v = 1 - (i + .5) / 6
        uv = torch.tensor([(j + 0.5) / 8, 1 - (i + 0.5) / 6], dtype=torch.float64)
        assert torch.allclose(sample_texture(tex, uv), tex[i, j])
    mid = torch.tensor([(3 + 1.0) / 8, 1 - (2 + 0.5) / 6], dtype=torch.float64)  # between columns 3 and 4
    assert torch.allclose(sample_texture(tex, mid), 0.5 * (tex[2, 3] + tex[2, 4]))


def test_textured_screen_quad_reproduces_the_texture(seed):
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(H, W, 3, generator=g, dtype=torch.float64)
    pix = torch.tensor([[0.0, 0.0], [W, 0.0], [W, H], [0.0, H]], dtype=torch.float64)
    verts = _unproject(pix, torch.full((4,), 1.5, dtype=torch.float64))
    uvs = torch.stack([pix[:, 0] / W, 1 - pix[:, 1] / H], 1)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    out = render_mesh(verts, faces, _K(), torch.eye(4, dtype=torch.float64), W, H, uvs=uvs, face_uvs=faces,
                      texture=tex, shading=False)
    assert (out.face_id >= 0).all()
    assert torch.allclose(out.image, tex, atol=1e-9)


def test_uvs_are_interpolated_perspective_correctly(seed):
    """A tilted plane whose uv is an affine function of the 3D point: every pixel's uv must match the ray hit."""
    g = torch.Generator().manual_seed(seed)
    pix = torch.tensor([[-4.0, -4.0], [W + 4.0, -4.0], [W + 4.0, H + 4.0], [-4.0, H + 4.0]], dtype=torch.float64)
    depth = torch.tensor([1.0, 4.0, 4.0, 1.0], dtype=torch.float64) + torch.rand(1, generator=g, dtype=torch.float64)
    verts = _unproject(pix, depth)
    verts[2] = verts[1] + verts[3] - verts[0]  # exactly planar
    A = torch.rand(2, 3, generator=g, dtype=torch.float64)
    uvs = verts @ A.T
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    frags = rasterize_triangles(verts, faces, _K(), torch.eye(4, dtype=torch.float64), W, H, backfaces="draw")
    uv = interpolate(uvs, faces, frags)
    # the same through the ray-plane intersection of each pixel centre
    n = torch.linalg.cross(verts[1] - verts[0], verts[3] - verts[0])
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    rays = torch.stack([(xs - W / 2) / F_PIX, (ys - H / 2) / F_PIX, torch.ones_like(xs)], -1)
    t = (verts[0] @ n) / (rays @ n)
    hit = rays * t[..., None]
    m = frags.mask
    assert m.sum() > 0.5 * H * W
    assert torch.allclose(uv[m], (hit @ A.T)[m], atol=1e-9)
    assert torch.allclose(frags.depth[m], hit[..., 2][m], atol=1e-9)


def test_projection_agrees_with_camera_project(seed):
    import trimesh

    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.09)
    verts = torch.tensor(sphere.vertices * rng.uniform(0.7, 1.3, 3), dtype=torch.float64)
    faces = torch.tensor(sphere.faces, dtype=torch.int64)
    cam = Camera.orbit(0.45, 30.0, 60, 52, yaw_deg=float(rng.uniform(-60, 60)), pitch_deg=float(rng.uniform(-30, 30)),
                       target=tuple(rng.uniform(-0.02, 0.02, 3)), dtype=torch.float64)
    frags = rasterize_triangles(verts, faces, cam.K, cam.viewmat, cam.width, cam.height)
    points = interpolate(verts, faces, frags)  # [H,W,3] world surface point seen at each pixel centre
    ys, xs = torch.nonzero(frags.mask, as_tuple=True)
    assert ys.numel() > 300
    proj = cam.project(points[ys, xs])
    assert torch.allclose(proj, torch.stack([xs, ys], 1).to(proj) + 0.5, atol=1e-6)
    # and the visible point is the nearest surface point along the ray: depth equals camera z
    cam_z = points[ys, xs] @ cam.viewmat[:3, :3].T[:, 2] + cam.viewmat[2, 3]
    assert torch.allclose(cam_z, frags.depth[ys, xs], atol=1e-9)


def test_lambert_shading_and_float32_inputs():
    pix = torch.tensor([[0.0, 0.0], [W, 0.0], [W, H], [0.0, H]], dtype=torch.float64)
    verts = _unproject(pix, torch.full((4,), 2.0, dtype=torch.float64)).float()
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    K, view = _K().float(), torch.eye(4)
    # the quad's outward normal points at the camera (-z); a light from there gives ambient + diffuse
    lit = render_mesh(verts, faces, K, view, W, H, light_dir=(0.0, 0.0, -1.0), ambient=0.3, diffuse=0.5)
    side = render_mesh(verts, faces, K, view, W, H, light_dir=(1.0, 0.0, 0.0), ambient=0.3, diffuse=0.5)
    assert lit.image.dtype == torch.float32
    assert torch.allclose(lit.image, torch.tensor(0.8), atol=1e-5)
    assert torch.allclose(side.image, torch.tensor(0.3), atol=1e-5)
    tilted = render_mesh(verts, faces, K, view, W, H, light_dir=(0.0, math.sin(0.5), -math.cos(0.5)), ambient=0.0,
                         diffuse=1.0)
    assert torch.allclose(tilted.image, torch.tensor(math.cos(0.5)), atol=1e-5)


def test_bad_inputs_raise_input_errors():
    verts = torch.zeros(3, 3)
    faces = torch.tensor([[0, 1, 2]])
    K, view = _K().float(), torch.eye(4)
    with pytest.raises(InputError, match="vertices"):
        rasterize_triangles(torch.zeros(3, 2), faces, K, view, W, H)
    with pytest.raises(InputError, match="faces index"):
        rasterize_triangles(verts, torch.tensor([[0, 1, 5]]), K, view, W, H)
    with pytest.raises(InputError, match="K must be"):
        rasterize_triangles(verts, faces, torch.eye(4), view, W, H)
    with pytest.raises(InputError, match="not positive"):
        rasterize_triangles(verts, faces, K, view, 0, H)
    with pytest.raises(InputError, match="texture"):
        render_mesh(verts, faces, K, view, W, H, texture=torch.zeros(4, 4, 3))
    with pytest.raises(InputError, match="background"):
        render_mesh(verts, faces, K, view, W, H, background=(0.1, 0.2))
