"""Causal transformer blocks with a key/value cache for incremental decoding.

The layout follows the GPT-2 family (pre-LayerNorm, fused qkv projection, 4x MLP with
GELU), which gives 12 d^2 + 13 d parameters per block — the count behind Table 6's
stage-2 sizes (docs/calovq.md, "Shared vocabulary").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KVCache", "CausalSelfAttention", "TransformerBlock"]


class KVCache:
    """Keys and values of the positions processed so far, for every layer.

    With ``max_len`` given, buffers (N, n_heads, max_len, head_dim) are allocated on the
    first update and filled in place, so a step costs O(1) copies instead of re-copying the
    whole history (which made sampling quadratic in the sequence length). Without it, the
    history grows by concatenation.

    Protocol: every layer calls :meth:`update` once per forward pass with the new
    positions' keys and values; the model calls :meth:`advance` after the last layer.
    """

    def __init__(self, n_layers: int, max_len: int | None = None) -> None:
        self.n_layers = int(n_layers)
        self.max_len = None if max_len is None else int(max_len)
        self.length = 0
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * self.n_layers

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new keys/values (N, H, T, hd); return those of all length + T positions."""
        t0, t1 = self.length, self.length + k.shape[2]
        held = self.layers[layer]
        if self.max_len is None:
            if held is not None:
                k, v = torch.cat([held[0], k], dim=2), torch.cat([held[1], v], dim=2)
            self.layers[layer] = (k, v)
            return k, v
        if t1 > self.max_len:
            raise ValueError(f"cache holds at most {self.max_len} positions, asked for {t1}")
        if held is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            held = (k.new_zeros(shape), v.new_zeros(shape))
            self.layers[layer] = held
        held[0][:, :, t0:t1] = k
        held[1][:, :, t0:t1] = v
        return held[0][:, :, :t1], held[1][:, :, :t1]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as processed (after all layers were updated)."""
        self.length += int(n)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention.

    Shapes: x (N, T, d) -> (N, T, d). With a :class:`KVCache` holding P earlier positions,
    new position t attends to those P and to new positions <= t; the cache is updated
    (call ``cache.advance(T)`` after the last layer).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        n, t, d = x.shape
        hd = d // self.n_heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(n, t, self.n_heads, hd).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        p = k.shape[2] - t
        if t == 1:
            mask = None  # a single new query may see every earlier key
        else:
            qi = torch.arange(t, device=x.device)[:, None] + p
            kj = torch.arange(p + t, device=x.device)[None, :]
            mask = kj <= qi  # (T, P + T), True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(n, t, d)
        return self.resid_dropout(self.proj(y))


class TransformerBlock(nn.Module):
    """Pre-LN causal transformer block: x + attn(LN(x)), then x + MLP(LN(x)).

    Shapes: x (N, T, d) -> (N, T, d); ``cache``/``layer`` as in :class:`CausalSelfAttention`.
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, mlp_ratio: int = 4
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))

    def step(self, x: Tensor, cache: KVCache, layer: int = 0) -> Tensor:
        """One new position in inference: x (N, d) -> (N, d); updates ``cache``.

        The same function as ``forward(x[:, None], cache, layer)[:, 0]`` in eval mode,
        written with functional calls on 2-D tensors: sampling at small batches is bound by
        per-operator overhead (70 steps per shower), not by arithmetic.
        """
        n, d = x.shape
        a = self.attn
        h = a.n_heads
        y = F.layer_norm(x, (d,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        q, k, v = F.linear(y, a.qkv.weight, a.qkv.bias).view(n, 3, h, 1, d // h).unbind(1)
        k, v = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v)  # one query sees every cached key
        x = x + F.linear(y.view(n, d), a.proj.weight, a.proj.bias)
        fc1, act, fc2 = self.mlp[0], self.mlp[1], self.mlp[2]
        y = F.layer_norm(x, (d,), self.ln2.weight, self.ln2.bias, self.ln2.eps)
        return x + F.linear(act(F.linear(y, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
