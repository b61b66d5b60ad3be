"""Image quality metrics: PSNR (full frame and inside a mask), SSIM, and LPIPS when its weights are local.

Convention (the field's, e.g. GaussianAvatars / INSTA): render and ground truth have their background
set to the SAME constant colour and the metric is taken over the full frame; `psnr_masked` adds the
figure inside the head mask only. Images are float `[H,W,3]` (or `[B,H,W,3]`) in [0,1], torch tensors;
`psnr` and `ssim` are differentiable (the trainer uses `1 - ssim` as D-SSIM).

SSIM is the standard implementation (Wang et al. 2004 and its reference code): an 11-tap Gaussian
window with sigma 1.5, separable, no padding ("valid"), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with data
range L = 1, averaged over channels and pixels.

LPIPS (AlexNet variant, v0.1) runs only from weights on disk, never downloaded: the folder named by
`weights_dir`, else `$AVATAR3D_LPIPS_DIR`, else `<data home>/weights/lpips` (see `avatar3d.paths`),
holding torchvision's AlexNet state dict (`alexnet.pth` or `alexnet-owt-7be5be79.pth`) and the LPIPS
linear layers (`alex.pth` of the lpips package). Without them `lpips_or_none` returns None.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar3d.errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
LPIPS_ENV = "AVATAR3D_LPIPS_DIR"
ALEXNET_FILES = ("alexnet.pth", "alexnet-owt-7be5be79.pth")
LPIPS_LIN_FILE = "alex.pth"


def _as_batch(img: Tensor, ref: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """[H,W,C] or [B,H,W,C] pairs -> [B,H,W,C] float tensors of the same shape."""
    if not isinstance(img, Tensor) or not isinstance(ref, Tensor):
        raise InputError(f"{name} needs torch tensors, got {type(img).__name__} and {type(ref).__name__}; "
                         f"wrap numpy images with torch.from_numpy")
    if img.shape != ref.shape:
        raise InputError(f"{name}: the images differ in shape, {tuple(img.shape)} vs {tuple(ref.shape)}; "
                         f"render at the ground truth's resolution")
    if img.dim() not in (3, 4) or img.shape[-1] not in (1, 3):
        raise InputError(f"{name} needs [H,W,3] or [B,H,W,3] images, got {tuple(img.shape)}; "
                         f"channels go last")
    if img.dim() == 3:
        img, ref = img[None], ref[None]
    dtype = img.dtype if img.is_floating_point() else torch.float32
    return img.to(dtype), ref.to(device=img.device, dtype=dtype)


def _mask_weights(mask: Tensor, like: Tensor) -> Tensor:
    """mask [H,W], [H,W,1] or [B,H,W(,1)], bool or float in [0,1] -> weights [B,H,W,1] on like's device."""
    m = mask.to(device=like.device, dtype=like.dtype)
    if m.dim() == like.dim() and m.shape[-1] == 1:
        pass
    elif m.dim() == like.dim() - 1:
        m = m[..., None]
    elif m.dim() == 2 and like.dim() == 4:
        m = m[None, ..., None]
    else:
        raise InputError(f"the mask has shape {tuple(mask.shape)} but the images are {tuple(like.shape)}; "
                         f"pass a [H,W] mask (or [H,W,1]) of the images' size")
    if m.dim() == 3:
        m = m[None]
    if m.shape[1:3] != like.shape[1:3]:
        raise InputError(f"the mask is {tuple(m.shape[1:3])} pixels but the images are {tuple(like.shape[1:3])}; "
                         f"resize the mask to the images' resolution")
    return m.expand(like.shape[0], -1, -1, -1)


def mse(img: Tensor, ref: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean squared error over all pixels and channels (weighted by `mask` when given); a scalar tensor.

    img, ref: [H,W,3] or [B,H,W,3]; mask: [H,W] (or [H,W,1]) bool/float.
    """
    a, b = _as_batch(img, ref, "mse")
    err = (a - b) ** 2
    if mask is None:
        return err.mean()
    w = _mask_weights(mask, a)
    total = w.sum() * a.shape[-1]
    if float(total) <= 0:
        raise InputError("the mask is empty: no pixel to measure; pass the head mask of this frame")
    return (err * w).sum() / total


def psnr(img: Tensor, ref: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0,1] (inf when identical); a scalar tensor.

    img, ref: [H,W,3] or [B,H,W,3] (a batch gives the PSNR of the pooled MSE); mask: [H,W] optional.
    """
    err = mse(img, ref, mask)
    return -10.0 * torch.log10(err)


def psnr_masked(img: Tensor, ref: Tensor, mask: Tensor) -> Tensor:
    """PSNR over the pixels inside `mask` [H,W] (soft masks weight the pixels); a scalar tensor."""
    if mask is None:
        raise InputError("psnr_masked needs a mask; pass the head mask ([H,W], 1 = head) or use psnr()")
    return psnr(img, ref, mask)


@lru_cache(maxsize=8)
def _gauss_1d(size: int, sigma: float, device: str, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _filter(x: Tensor, g: Tensor) -> Tensor:
    """x: [N,C,H,W], g: [k] -> separable valid Gaussian filtering [N,C,H-k+1,W-k+1]."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map(img: Tensor, ref: Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-pixel SSIM [B,H-10,W-10,C] (valid window positions only); img, ref: [H,W,3] or [B,H,W,3]."""
    a, b = _as_batch(img, ref, "ssim")
    if min(a.shape[1], a.shape[2]) < window:
        raise InputError(f"SSIM needs images of at least {window}x{window} pixels, got "
                         f"{a.shape[2]}x{a.shape[1]}; evaluate at a larger resolution")
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # [B,C,H,W]
    g = _gauss_1d(window, sigma, str(x.device), x.dtype)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x ** 2
    syy = _filter(y * y, g) - mu_y ** 2
    sxy = _filter(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return (num / den).permute(0, 2, 3, 1)


def ssim(img: Tensor, ref: Tensor) -> Tensor:
    """Structural similarity (1 = identical), mean over pixels, channels and batch; a scalar tensor.

    img, ref: [H,W,3] or [B,H,W,3] in [0,1]. Differentiable.
    """
    return ssim_map(img, ref).mean()


# ------------------------------------------------------------------------------------------ LPIPS
def lpips_dir(weights_dir: Optional[os.PathLike] = None) -> Path:
    """Where LPIPS weights are looked for (the folder need not exist)."""
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    env = os.environ.get(LPIPS_ENV)
    if env:
        return Path(env).expanduser()
    from avatar3d.paths import data_home

    return data_home() / "weights" / "lpips"


class _AlexLPIPS(torch.nn.Module):
    """LPIPS v0.1 with AlexNet features (Zhang et al. 2018), built without torchvision."""

    # (in, out, kernel, stride, padding) of AlexNet's convolutions; torchvision's `features.N` indices
    CONVS = ((3, 64, 11, 4, 2, 0), (64, 192, 5, 1, 2, 3), (192, 384, 3, 1, 1, 6), (384, 256, 3, 1, 1, 8),
             (256, 256, 3, 1, 1, 10))

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(i, o, k, s, p) for i, o, k, s, p, _ in self.CONVS)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(o, 1, 1, bias=False) for _, o, *_ in self.CONVS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def load(self, alexnet: dict, lins: dict) -> None:
        for conv, (*_, index) in zip(self.convs, self.CONVS):
            conv.weight.data.copy_(alexnet[f"features.{index}.weight"])
            conv.bias.data.copy_(alexnet[f"features.{index}.bias"])
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(lins[f"lin{k}.model.1.weight"])

    def features(self, x: Tensor) -> list[Tensor]:  # x: [B,3,H,W] in [-1,1]
        x = (x - self.shift) / self.scale
        taps = []
        for k, conv in enumerate(self.convs):
            if k in (1, 2):  # max-pool before conv2 and conv3, as in AlexNet
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # a, b: [B,3,H,W] in [-1,1] -> [B]
        total = 0.0
        for lin, fa, fb in zip(self.lins, self.features(a), self.features(b)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


@lru_cache(maxsize=2)
def _load_lpips(folder: str) -> Optional[_AlexLPIPS]:
    root = Path(folder)
    alex = next((root / n for n in ALEXNET_FILES if (root / n).is_file()), None)
    lin = root / LPIPS_LIN_FILE
    if alex is None or not lin.is_file():
        return None
    try:
        model = _AlexLPIPS()
        model.load(torch.load(alex, map_location="cpu", weights_only=True),
                   torch.load(lin, map_location="cpu", weights_only=True))
    except (KeyError, RuntimeError, OSError, ValueError) as err:
        raise InputError(f"the LPIPS weights in {root} do not load ({err}); put torchvision's AlexNet state "
                         f"dict ({ALEXNET_FILES[0]}) and the lpips package's {LPIPS_LIN_FILE} there, or remove "
                         f"the folder to run without LPIPS") from err
    return model.eval().requires_grad_(False)


def lpips_available(weights_dir: Optional[os.PathLike] = None) -> bool:
    """True when the LPIPS weights are on disk (nothing is downloaded)."""
    return _load_lpips(str(lpips_dir(weights_dir))) is not None


def lpips_or_none(img: Tensor, ref: Tensor, weights_dir: Optional[os.PathLike] = None) -> Optional[Tensor]:
    """LPIPS distance (0 = identical, lower is better) averaged over the batch, or None without local weights.

    img, ref: [H,W,3] or [B,H,W,3] in [0,1]. Differentiable in `img` when weights are present.
    """
    model = _load_lpips(str(lpips_dir(weights_dir)))
    if model is None:
        return None
    a, b = _as_batch(img, ref, "lpips")
    if a.shape[-1] != 3:
        raise InputError(f"LPIPS needs RGB images, got {a.shape[-1]} channel(s)")
    model = model.to(device=a.device, dtype=a.dtype)
    to_net = lambda t: t.permute(0, 3, 1, 2) * 2.0 - 1.0  # noqa: E731  [B,H,W,3] in [0,1] -> [B,3,H,W] in [-1,1]
    return model(to_net(a), to_net(b)).mean()


def to_float(value: Optional[Tensor]) -> Optional[float]:
    """A metric tensor as a float for eval.json (None stays None, NaN becomes None, inf stays inf)."""
    if value is None:
        return None
    v = float(value.detach())
    return None if math.isnan(v) else v
