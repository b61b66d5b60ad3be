"""Synthetic Gaussian scenes for rasterizer tests and the benchmark.

`random_scene` mixes the difficult cases on purpose (behind the camera, off screen, straddling tile borders,
huge / tiny / degenerate scales, opacities at both cut-offs); `head_scene` is a fixed, seeded head-like
scene (Gaussians over a ~0.2 m ellipsoidal surface, camera at 0.6 m, 20° vertical field of view).
Everything is drawn on the CPU from a seeded generator and then moved, so a seed gives the same scene on
every device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from avatar3d.camera import intrinsics, look_at, orbit_viewmat
from avatar3d.render.sh import num_sh_bases

TILE = 16


@dataclass
class Scene:
    """Inputs of one `rasterize` call."""

    means: Tensor  # [N,3] world
    quats: Tensor  # [N,4] (w,x,y,z), unnormalised
    scales: Tensor  # [N,3] linear
    opacities: Tensor  # [N] in (0,1)
    colors: Tensor  # [N,C] features, or [N,K,3] SH coefficients when sh_degree is set
    background: Tensor  # [C]
    viewmat: Tensor  # [4,4] world->camera
    K: Tensor  # [3,3]
    width: int
    height: int
    sh_degree: int | None = None

    PARAMS = ("means", "quats", "scales", "opacities", "colors", "background")

    @property
    def n(self) -> int:
        return self.means.shape[0]

    def params(self) -> dict[str, Tensor]:
        """The differentiable inputs by name."""
        return {name: getattr(self, name) for name in self.PARAMS}

    def requires_grad_(self, flag: bool = True) -> "Scene":
        for t in self.params().values():
            t.requires_grad_(flag)
        return self

    def to(self, *args, **kwargs) -> "Scene":
        """A copy with every tensor moved/cast like `Tensor.to` (detached leaves)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in out.items():
            if isinstance(value, Tensor):
                out[name] = value.detach().to(*args, **kwargs)
        return replace(self, **out)

    def clone(self) -> "Scene":
        """A copy with fresh leaf tensors (no shared autograd state)."""
        return self.to(self.means.device)

    def rasterize_kwargs(self) -> dict:
        """Keyword arguments for `avatar3d.render.rasterize(**scene.rasterize_kwargs(), backend=...)`."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return kw


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
    return g


def _rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _colors(g: torch.Generator, n: int, channels: int, sh_degree: int | None) -> tuple[Tensor, Tensor]:
    if sh_degree is None:
        return _rand(g, n, channels), _rand(g, channels)
    k = num_sh_bases(sh_degree)
    sh = torch.randn(n, k, 3, generator=g, dtype=torch.float64) * 0.3
    sh[:, 0] = (_rand(g, n, 3) - 0.5) / 0.28209479177387814  # DC gives a colour in [0,1]
    return sh, _rand(g, 3)


def random_scene(n: int, width: int, height: int, *, seed: int | None = None,
                 generator: torch.Generator | None = None, channels: int = 3, sh_degree: int | None = None,
                 hard: bool = True, dtype: torch.dtype = torch.float32, device="cpu") -> Scene:
    """A random scene of n Gaussians seen by a random camera (non-square pixels, off-centre principal point).

    With `hard`, about a third of the Gaussians are difficult cases: behind the camera or before the near
    plane, off screen, centred on tile borders, huge (tens of pixels to the whole image), tiny (sub-pixel),
    degenerate (a zero or 1e-9 scale axis), opacities near 1 (0.99 clamp, early stop) or below 1/255.
    """
    g = _generator(seed, generator)
    eye = (_rand(g, 3) - 0.5) * 4.0
    target = eye + torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
    viewmat = look_at(eye, target, up=(0.0, 1.0, 0.0), dtype=torch.float64)
    K = intrinsics(50.0 + 30.0 * float(_rand(g, 1)), width, height, dtype=torch.float64)
    K[0, 0] *= 0.8 + 0.4 * float(_rand(g, 1))  # non-square pixels
    K[0, 2] += (float(_rand(g, 1)) - 0.5) * 0.2 * width
    K[1, 2] += (float(_rand(g, 1)) - 0.5) * 0.2 * height

    # Place Gaussians in pixel coordinates and depth, then back-project: controls where they land on screen.
    u = (_rand(g, n) * 1.2 - 0.1) * width
    v = (_rand(g, n) * 1.2 - 0.1) * height
    depth = 0.5 + 5.5 * _rand(g, n)
    px_sigma = torch.exp(math.log(0.4) + (math.log(8.0) - math.log(0.4)) * _rand(g, n))  # pixels
    opac = 0.05 + 0.9 * _rand(g, n)
    scale_aniso = torch.exp((_rand(g, n, 3) - 0.5) * 1.5)
    if hard and n > 0:
        kind = torch.multinomial(torch.tensor([64.0, 8, 5, 5, 4, 4, 4, 6]), n, replacement=True, generator=g)
        straddle, offscreen, behind, huge, tiny, degenerate, opaque = (kind == i for i in range(1, 8))
        u = torch.where(straddle, TILE * torch.randint(0, width // TILE + 2, (n,), generator=g).double()
                        + (_rand(g, n) - 0.5) * 2.0, u)
        v = torch.where(straddle, TILE * torch.randint(0, height // TILE + 2, (n,), generator=g).double()
                        + (_rand(g, n) - 0.5) * 2.0, v)
        side = torch.where(_rand(g, n) < 0.5, -1.0, 1.0).double()
        u = torch.where(offscreen, width * (0.5 + side * (1.2 + 2.0 * _rand(g, n))), u)
        depth = torch.where(behind, -2.0 + 2.02 * _rand(g, n), depth)  # up to 0.02 m in front: near-plane cases
        px_sigma = torch.where(huge, width * (0.05 + 0.6 * _rand(g, n)), px_sigma)
        px_sigma = torch.where(tiny, 0.01 + 0.1 * _rand(g, n), px_sigma)
        flat = torch.zeros(n, 3, dtype=torch.float64)
        flat[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = 1.0
        squash = torch.where(_rand(g, n) < 0.5, 0.0, 1e-9).double()
        scale_aniso = torch.where(degenerate.unsqueeze(-1) & (flat > 0), squash.unsqueeze(-1), scale_aniso)
        opac = torch.where(opaque, 0.97 + 0.029 * _rand(g, n), opac)
        faint = _rand(g, n) < 0.03
        opac = torch.where(faint, 0.001 + 0.003 * _rand(g, n), opac)
    fx = float(K[0, 0])
    world_sigma = px_sigma * depth.abs().clamp_min(0.05) / fx
    cam = torch.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], dim=-1)
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    means = (cam - trans) @ rot  # R^T (p - t), row-vector form
    scales = world_sigma.unsqueeze(-1) * scale_aniso
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64) * (0.5 + 2.0 * _rand(g, n, 1))
    colors, background = _colors(g, n, channels if sh_degree is None else 3, sh_degree)
    scene = Scene(means, quats, scales, opac, colors, background, viewmat, K, int(width), int(height), sh_degree)
    return scene.to(dtype=dtype, device=device)


def head_scene(n: int, width: int, height: int, *, seed: int = 0, sh_degree: int | None = None,
               dtype: torch.dtype = torch.float32, device="cpu") -> Scene:
    """A head-like scene as a trained avatar has it: n small Gaussians (1-3 mm) over a ~0.2 m tall ellipsoid
    with a little noise, opacities mostly high with a spread, seen from 0.6 m with a 20° vertical FOV."""
    g = _generator(seed, None)
    semi_axes = torch.tensor([0.075, 0.1, 0.09], dtype=torch.float64)  # x (ear to ear), y (chin to crown), z
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    surface = dirs * semi_axes
    # A bump for the nose and some surface noise so the depth order is not trivially smooth.
    nose = torch.exp(-((dirs[:, 0] / 0.15) ** 2 + ((dirs[:, 1] + 0.05) / 0.2) ** 2)) * (dirs[:, 2] > 0)
    surface = surface + dirs * (0.02 * nose + 0.003 * torch.randn(n, generator=g, dtype=torch.float64)).unsqueeze(-1)
    scales = torch.exp(math.log(1e-3) + math.log(3.0) * _rand(g, n, 3))
    scales[:, 2] *= 0.3  # flattened along a local axis, as surface Gaussians end up
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opac = torch.sigmoid(2.5 + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)).clamp(0.005, 0.999)
    if sh_degree is None:
        skin = torch.tensor([0.78, 0.57, 0.47], dtype=torch.float64)
        colors = (skin + 0.08 * torch.randn(n, 3, generator=g, dtype=torch.float64)).clamp(0.0, 1.0)
    else:
        colors, _ = _colors(g, n, 3, sh_degree)
    background = torch.ones(3, dtype=torch.float64)
    viewmat = orbit_viewmat(0.6, 0.0, 0.0, dtype=torch.float64)
    K = intrinsics(20.0, width, height, dtype=torch.float64)
    scene = Scene(surface, quats, scales, opac, colors, background, viewmat, K, int(width), int(height), sh_degree)
    return scene.to(dtype=dtype, device=device)
