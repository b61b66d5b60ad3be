"""The audio-to-expression transformer and its soft expression prior.

Per video frame it outputs, normalised and RELATIVE to the person's tracked mean, the channels
`[expr (E) | jaw (3) | neck (3)]` (blinks/eyelids are the rig's blink expression channels, e.g. ICT's
`eyeBlink_L/R`; gaze is procedural, see infer.py). Absolute parameters are `mean + std * output`.

Architecture (non-autoregressive, over windows):
    features [B, T*k, D] ─conv(3)─GELU─conv(k, stride k)─▶ [B,T,d]
    ─▶ L pre-norm transformer layers with LOCAL attention (|i-j| <= radius) and a learned relative
       position bias (T5-style, per head) ─▶ per-frame linear heads.
The attention is banded and positions are relative, so a frame's output depends only on frames within
L * radius (+ the conv's reach): chunked inference reproduces whole-clip inference exactly away from
the chunk borders, and nothing depends on where a window starts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ModelConfig:
    in_dim: int = 80
    """Feature size per sub-frame."""
    per_frame: int = 4
    """Feature sub-frames per video frame."""
    num_expr: int = 53
    """Expression coefficients of the rig."""
    width: int = 64
    """Transformer width. Small on purpose: with ~15 s of training speech, out-of-fold lip error on German_20s
    (5 folds, 2 seeds) was 0.76 of the mean face's for width 64 / 2 layers / radius 4 against 0.84 for
    96 / 3 / 8; narrower (32, 48) or shallower (1 layer) was worse again."""
    layers: int = 2
    """Transformer layers."""
    heads: int = 4
    """Attention heads per layer."""
    ff: int = 256
    """Feed-forward hidden size."""
    radius: int = 4
    """Attention reach in frames (per layer)."""
    dropout: float = 0.1
    """Dropout in training."""

    @property
    def out_dim(self) -> int:
        return self.num_expr + 6

    @property
    def reach(self) -> int:
        """Frames on each side that can influence a frame's output."""
        return self.layers * self.radius + 2

    def to_json(self) -> dict:
        return asdict(self)


class LocalAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.radius = cfg.heads, cfg.radius
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.heads, 2 * cfg.radius + 1))
        self.dropout = cfg.dropout

    def bias(self, t: int, device) -> Tensor:
        """[H,T,T] additive attention bias: learned by offset inside the band, -inf outside."""
        if not torch.is_grad_enabled():  # inference: reuse per length (parameters are frozen there)
            key = (t, str(device), self.rel_bias._version)
            cached = getattr(self, "_bias_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
            value = self._make_bias(t, device)
            self._bias_cache = (key, value)
            return value
        return self._make_bias(t, device)

    def _make_bias(self, t: int, device) -> Tensor:
        idx = torch.arange(t, device=device)
        off = idx[None, :] - idx[:, None]  # j - i
        inside = off.abs() <= self.radius
        b = self.rel_bias[:, off.clamp(-self.radius, self.radius) + self.radius]  # [H,T,T]
        return b.masked_fill(~inside, float("-inf"))

    def forward(self, x: Tensor) -> Tensor:  # x: [B,T,d]
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias(t, x.device)[None],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.attn = LocalAttention(cfg)
        self.ff = nn.Sequential(nn.Linear(cfg.width, cfg.ff), nn.GELU(), nn.Linear(cfg.ff, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:  # x: [B,T,d]
        x = x + self.drop(self.attn(self.n1(x)))
        return x + self.drop(self.ff(self.n2(x)))


class Audio2Expr(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # per-feature-channel normalisation, set from the training audio (a buffer: saved with the model)
        self.register_buffer("feat_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("feat_std", torch.ones(cfg.in_dim))
        self.conv1 = nn.Conv1d(cfg.in_dim, cfg.width, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, cfg.per_frame, stride=cfg.per_frame)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.out_dim)
        nn.init.zeros_(self.head.weight)  # start at the tracked mean
        nn.init.zeros_(self.head.bias)

    def forward(self, feats: Tensor) -> Tensor:  # feats: [B,T,k,D] -> [B,T,out_dim] normalised deltas
        b, t, k, d = feats.shape
        x = (feats - self.feat_mean) / self.feat_std
        x = x.reshape(b, t * k, d).transpose(1, 2)  # [B,D,T*k]
        x = self.conv2(F.gelu(self.conv1(x))).transpose(1, 2)  # [B,T,w]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ExpressionPrior(nn.Module):
    """PCA of the person's tracked (normalised) parameters; penalises Mahalanobis distance beyond the
    tracked spread (`threshold`: a high percentile of the training frames' distances). Soft: zero inside
    the spread, quadratic outside, never a clamp."""

    def __init__(self, components: Tensor, variances: Tensor, threshold: float):
        # components: [D,K] orthonormal; variances: [K]
        super().__init__()
        self.register_buffer("components", components.float())
        self.register_buffer("variances", variances.float())
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @classmethod
    def fit(cls, z: Tensor, percentile: float = 99.0, min_rel_var: float = 1e-3) -> "ExpressionPrior":
        """z: [N,D] normalised deltas of the tracked training frames."""
        z = z.double()
        cov = (z.T @ z) / max(1, z.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)
        keep = evals > evals.max().clamp_min(1e-12) * min_rel_var
        comps, var = evecs[:, keep], evals[keep]
        prior = cls(comps, var, 0.0)
        dist = prior.distance(z.float())
        prior.threshold.fill_(float(torch.quantile(dist, percentile / 100.0)) if dist.numel() else 1.0)
        return prior

    def distance(self, z: Tensor) -> Tensor:  # z: [...,D] -> [...]
        proj = z @ self.components
        inside = (proj ** 2 / self.variances).sum(-1)
        # what the tracked spread never spans counts at the smallest kept variance
        resid = ((z - proj @ self.components.T) ** 2).sum(-1) / self.variances.min()
        return torch.sqrt(inside + resid + 1e-12)

    def penalty(self, z: Tensor) -> Tensor:  # z: [...,D] -> scalar
        return F.relu(self.distance(z) - self.threshold).pow(2).mean()
