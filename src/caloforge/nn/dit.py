"""Transformer blocks conditioned by adaLN-Zero, for velocity fields over patch tokens.

Each block applies CaloDREAM Eq. 11, read with a LayerNorm (without affine parameters)
before the modulation, as in adaLN-Zero; Eq. 11's a, b, gamma are per-sample vectors:

    x = x + gate_a * attn(modulate(LN(x), shift_a, scale_a))
    x = x + gate_m * mlp(modulate(LN(x), shift_m, scale_m))

where the six vectors come from one Linear on SiLU(c). That Linear starts at zero, so
every gate is 0 and a fresh block is exactly the identity; the final layer's projection
also starts at zero, so a fresh network outputs exactly 0 and training begins from the
trivial velocity field. Attention is over all tokens (no mask).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["modulate", "DiTBlock", "DiTFinalLayer"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift, per sample.

    Shapes: x (N, T, D), shift and scale (N, D) -> (N, T, D).
    """
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _xavier(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _zero(linear: nn.Linear) -> None:
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class DiTBlock(nn.Module):
    """Self-attention and MLP, each gated and modulated by the condition vector.

    Args:
        dim: token width D.
        n_heads: attention heads (dividing D).
        mlp_hidden: hidden width of the MLP (GELU, tanh approximation).
        cond_dim: width of the condition vector; defaults to D.

    Shapes: x (N, T, D), c (N, cond_dim) -> (N, T, D).
    """

    def __init__(
        self, dim: int, n_heads: int, mlp_hidden: int, cond_dim: int | None = None
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} not divisible by n_heads {n_heads}")
        cond_dim = dim if cond_dim is None else cond_dim
        self.n_heads = n_heads
        # LayerNorms without affine parameters: the modulation supplies scale and shift
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, dim)
        self.adaln = nn.Linear(cond_dim, 6 * dim)
        for lin in (self.qkv, self.proj, self.fc1, self.fc2):
            _xavier(lin)
        _zero(self.adaln)

    def attention(self, h: Tensor) -> Tensor:
        """Multi-head self-attention over all tokens: (N, T, D) -> (N, T, D)."""
        n, t, d = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))

    def mlp(self, h: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(h), approximate="tanh"))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(F.silu(c)).chunk(6, dim=-1)
        x = x + gate_a[:, None, :] * self.attention(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m[:, None, :] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class DiTFinalLayer(nn.Module):
    """Modulated LayerNorm (shift and scale, no gate) and a zero-initialised projection.

    Args:
        dim: token width D.
        out_dim: output width per token (the patch size, one velocity per entry).
        cond_dim: width of the condition vector; defaults to D.

    Shapes: x (N, T, D), c (N, cond_dim) -> (N, T, out_dim).
    """

    def __init__(self, dim: int, out_dim: int, cond_dim: int | None = None) -> None:
        super().__init__()
        cond_dim = dim if cond_dim is None else cond_dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Linear(cond_dim, 2 * dim)
        self.linear = nn.Linear(dim, out_dim)
        _zero(self.adaln)
        _zero(self.linear)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaln(F.silu(c)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
