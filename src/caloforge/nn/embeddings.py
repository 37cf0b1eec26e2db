"""Embeddings of the flow time t in [0, 1] for velocity networks.

Two fixed feature maps and one learned embedder:

- :class:`SinusoidalTimeEmbedding`: log-spaced sin/cos frequencies (transformer style).
- :class:`GaussianFourierEmbedding`: random frequencies drawn once and stored as a buffer,
  so they travel with the weights (the energy network's time features, CaloDREAM §3.1).
- :class:`TimestepEmbedder`: sinusoidal features followed by Linear-SiLU-Linear, the time
  branch of the ViT condition vector (CaloDREAM §3.2).

All take t of shape (N,) or (N, 1) and return (N, dim).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalTimeEmbedding", "GaussianFourierEmbedding", "TimestepEmbedder"]


def _as_column(t: Tensor) -> Tensor:
    """(N,) or (N, 1) -> (N, 1); anything else is a caller's bug."""
    if t.dim() == 1:
        return t[:, None]
    if t.dim() == 2 and t.shape[1] == 1:
        return t
    raise ValueError(f"t must have shape (N,) or (N, 1), got {tuple(t.shape)}")


class SinusoidalTimeEmbedding(nn.Module):
    """Fixed sin/cos features of t at log-spaced frequencies.

    Feature k of each half uses the angular frequency ``max_period ** (-k / half)``,
    k = 0 … half - 1, applied to ``t_scale * t``. Flow time lives in [0, 1]; it is scaled by
    ``t_scale`` (1000 by default, the range of integer diffusion steps these frequencies
    were designed for) so that the fastest feature turns through 1000 rad over the path
    while the slowest barely moves. Without the scaling nearly all features would be
    constant in t.

    Args:
        dim: output width (even).
        max_period: ratio of the slowest to the fastest wavelength.
        t_scale: factor applied to t before the frequencies.

    Shapes: t (N,) or (N, 1) -> (N, dim) = [cos(…), sin(…)].
    """

    def __init__(self, dim: int, max_period: float = 10000.0, t_scale: float = 1000.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"dim must be positive and even, got {dim}")
        if max_period <= 1.0:
            raise ValueError(f"max_period must be > 1, got {max_period}")
        self.dim, self.max_period, self.t_scale = dim, float(max_period), float(t_scale)

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        # computed in t's dtype on each call (cheap), so float64 inputs get float64 features
        k = torch.arange(half, dtype=t.dtype, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) / half * k)
        angle = self.t_scale * _as_column(t) * freqs
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features [sin(2 pi t w), cos(2 pi t w)] with fixed w ~ N(0, scale^2).

    The frequencies are drawn once at construction (from the global generator) and kept as
    a *persistent* buffer: a model loaded from a checkpoint must see the same features it
    was trained with.

    Args:
        dim: output width (even); dim / 2 frequencies.
        scale: standard deviation of the frequencies (30: features resolve small steps in t).

    Shapes: t (N,) or (N, 1) -> (N, dim).
    """

    def __init__(self, dim: int, scale: float = 30.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"dim must be positive and even, got {dim}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.dim, self.scale = dim, float(scale)
        self.register_buffer("w", torch.randn(dim // 2) * scale)

    def forward(self, t: Tensor) -> Tensor:
        angle = 2 * math.pi * _as_column(t) * self.w.to(t.dtype)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t (``freq_dim`` wide) -> Linear -> SiLU -> Linear to ``dim``.

    The linear layers start as normal(0, 0.02) with zero biases, small enough that a fresh
    ViT's condition vector is dominated by neither branch.

    Shapes: t (N,) or (N, 1) -> (N, dim).
    """

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.features = SinusoidalTimeEmbedding(freq_dim, max_period)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t))
