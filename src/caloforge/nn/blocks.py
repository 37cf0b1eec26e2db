"""Reusable network blocks: condition embedding, FiLM, residual blocks, attention, MLP.

Residual blocks act on (N, C, Z, A) calo-images with cylindrical convolutions (``dims=2``)
or on (N, C, L) sequences with 1-D convolutions (``dims=1``). Every block that takes a
condition receives an embedding vector (N, cond_dim) and applies it as FiLM (feature-wise
scale and shift after normalisation), so the incident energy reaches every resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cylindrical import CylindricalConv2d

__all__ = [
    "group_norm",
    "MLP",
    "ConditionEmbedding",
    "FiLM",
    "ResidualBlock",
    "AttentionBlock",
]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides ``channels``."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class MLP(nn.Module):
    """Fully connected network: Linear -> SiLU -> … -> Linear.

    Args:
        in_dim, out_dim: input and output widths.
        hidden_dim: width of the hidden layers.
        n_hidden: number of hidden layers (0 gives one Linear).

    Shapes: (…, in_dim) -> (…, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 64, n_hidden: int = 1) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * n_hidden + [out_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConditionEmbedding(nn.Module):
    """Embed conditions (already scaled, e.g. log E_inc mapped to about [0, 1]).

    The embedding of the continuous features is an MLP; an optional class id (particle
    type, or one of ds1's discrete energies) adds a learned vector.

    Args:
        in_dim: number of continuous condition features (1 for E_inc).
        embed_dim: output width (Table 6's "cond. dim" for the paper's sizes).
        hidden_dim: width of the hidden layer; 0 gives a single Linear.
        n_classes: size of the class table; 0 disables class ids.

    Shapes: cond (N, in_dim), class_id (N,) long or None -> (N, embed_dim).
    """

    def __init__(
        self, in_dim: int, embed_dim: int, hidden_dim: int = 0, n_classes: int = 0
    ) -> None:
        super().__init__()
        self.in_dim, self.embed_dim, self.n_classes = in_dim, embed_dim, n_classes
        if hidden_dim > 0:
            self.net: nn.Module = MLP(in_dim, embed_dim, hidden_dim, n_hidden=1)
        else:
            self.net = nn.Linear(in_dim, embed_dim)
        self.classes = nn.Embedding(n_classes, embed_dim) if n_classes > 0 else None

    def forward(self, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        if cond.dim() == 1:
            cond = cond[:, None]
        h = self.net(cond)
        if self.classes is not None:
            if class_id is None:
                raise ValueError("this embedding was built with classes: pass class_id")
            h = h + self.classes(class_id)
        return h


class FiLM(nn.Module):
    """Feature-wise linear modulation: h * (1 + scale(c)) + shift(c).

    The projection starts small (normal, std 0.02; zero bias), so that a fresh block is
    close to the identity in c while gradients already reach the condition embedding.

    Shapes: h (N, C, *spatial), c (N, cond_dim) -> (N, C, *spatial).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.proj(F.silu(c)).chunk(2, dim=-1)
        shape = scale.shape + (1,) * (h.dim() - 2)
        return h * (1 + scale.view(shape)) + shift.view(shape)

    def coefficients(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """(1 + scale, shift), each (N, channels): forward(h, c) = h * (1 + scale) + shift."""
        scale, shift = self.proj(F.silu(c)).chunk(2, dim=-1)
        return 1 + scale, shift


def _inference_path(module: nn.Module, x: Tensor) -> bool:
    """True when a block may take its fused inference path.

    That path computes the same function with fewer passes over memory and in-place
    activations, so it is only taken where no gradient is recorded, no dropout is active
    and no autocast changes dtypes.
    """
    return (
        not torch.is_grad_enabled()
        and not module.training
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
    )


def norm_film_silu(
    x: Tensor, norm: nn.GroupNorm, film: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """silu(FiLM(GroupNorm(x))) for inference, in two passes over x's size.

    GroupNorm's affine and FiLM's scale and shift are both per (sample, channel) affine
    maps, so they are merged into one ``addcmul`` on the unscaled normalised x, followed by
    an in-place SiLU. The result equals the module chain up to float rounding.

    x (N, C, *spatial); film = (1 + scale, shift), each (N, C) -> (N, C, *spatial).
    """
    if film is None:
        return F.silu(norm(x), inplace=True)
    mul, shift = film
    h = F.group_norm(x, norm.num_groups, None, None, norm.eps)
    shape = mul.shape + (1,) * (x.dim() - 2)
    if norm.weight is not None:
        a = (norm.weight * mul).view(shape)
        b = (norm.bias * mul + shift).view(shape)
    else:
        a, b = mul.view(shape), shift.view(shape)
    return F.silu(torch.addcmul(b, h, a), inplace=True)


class ResidualBlock(nn.Module):
    """Pre-activation residual block with optional FiLM conditioning.

    norm -> SiLU -> conv -> norm -> FiLM(c) -> SiLU -> conv, plus a skip connection
    (a kernel-1 convolution when the channel count changes).

    Args:
        in_channels, out_channels: channel counts.
        cond_dim: width of the condition embedding; 0 means unconditioned.
        dims: 2 for cylindrical convolutions on (N, C, Z, A), 1 for Conv1d on (N, C, L).
        kernel_size: odd kernel size (same along Z and A for dims=2).
        dropout: dropout before the second convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        cond_dim: int = 0,
        dims: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")

        def conv(cin: int, cout: int, k: int) -> nn.Module:
            if dims == 2:
                return CylindricalConv2d(cin, cout, k)
            return nn.Conv1d(cin, cout, k, padding=(k - 1) // 2)

        self.norm1 = group_norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, kernel_size)
        self.norm2 = group_norm(out_channels)
        self.film = FiLM(cond_dim, out_channels) if cond_dim > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, kernel_size)
        self.skip = (
            conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """x (N, C_in, *spatial), c (N, cond_dim) or None -> (N, C_out, *spatial)."""
        if self.film is not None and c is None:
            raise ValueError("this block is conditioned: pass c")
        if _inference_path(self, x):
            return self._forward_inference(x, c)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            if c is None:
                raise ValueError("this block is conditioned: pass c")
            h = self.film(h, c)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h

    def _forward_inference(self, x: Tensor, c: Tensor | None) -> Tensor:
        # same function as forward (eval mode, so dropout is the identity), with the
        # normalisation, FiLM and SiLU of each half fused and the skip added in place
        h = self.conv1(norm_film_silu(x, self.norm1))
        film = self.film.coefficients(c) if self.film is not None else None
        h = self.conv2(norm_film_silu(h, self.norm2, film))
        return h.add_(self.skip(x))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map, with a residual.

    No positional encoding is added, so the block is equivariant under any permutation of
    positions, in particular rotations along the angle: it keeps the cylindrical symmetry
    while giving every position a view of the whole shower (long-range information).

    Shapes: (N, C, *spatial) -> (N, C, *spatial).
    """

    def __init__(self, channels: int, n_heads: int = 1) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels {channels} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        spatial = x.shape[2:]
        h = self.norm(x).reshape(n, c, -1).transpose(1, 2)  # (N, P, C)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        hd = c // self.n_heads
        q, k, v = (t.reshape(n, -1, self.n_heads, hd).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)  # (N, H, P, hd)
        a = a.transpose(1, 2).reshape(n, -1, c)
        return x + self.out(a).transpose(1, 2).reshape(n, c, *spatial)
