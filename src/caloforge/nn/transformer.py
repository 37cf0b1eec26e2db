"""Causal transformer blocks with a key/value cache for incremental decoding.

The layout follows the GPT-2 family (pre-LayerNorm, fused qkv projection, 4x MLP with
GELU), which gives 12 d^2 + 13 d parameters per block — the count behind Table 6's
stage-2 sizes (docs/calovq.md, "Shared vocabulary").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KVCache", "StaticKVCache", "CausalSelfAttention", "TransformerBlock"]


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

    def attention_mask(self) -> None:
        """The mask of :meth:`TransformerBlock.step`: none, the held keys are exactly the
        positions seen so far."""
        return None


class StaticKVCache:
    """A key/value cache whose tensors never change shape, address or Python state.

    For decoding captured in a CUDA graph (:mod:`caloforge.sampling.cuda_graph_tokens`):
    a graph replays fixed kernels on fixed memory, so the current position cannot be a
    Python int (as :attr:`KVCache.length` is) and the attended keys cannot be a slice
    whose length grows. Here the position is a device tensor ``pos`` (0-dim long), the
    new keys/values are written at ``pos`` with ``index_copy_``, and a step attends over
    all ``max_len`` slots with an additive mask (0 for slots <= pos, -inf after), which
    gives the same attention weights as attending to the first pos + 1 slots: the masked
    scores become exact zeros after the softmax.

    Every update is in place (``pos``, ``mask``, the buffers): a graph records the
    addresses it read and wrote, so rebinding an attribute would leave it reading stale
    memory. Used by :meth:`TransformerBlock.step`, one position per call, in inference.

    Shapes: keys/values (n_layers, N, n_heads, max_len, head_dim); ``mask`` (1, max_len)
    in the buffers' dtype, broadcast over rows and heads.
    """

    def __init__(self, n_layers: int, n: int, n_heads: int, max_len: int, head_dim: int,
                 *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.n_layers, self.max_len = int(n_layers), int(max_len)
        shape = (self.n_layers, int(n), int(n_heads), self.max_len, int(head_dim))
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self._index = self.pos.view(1)  # a view: follows every in-place update of pos
        # row p: the mask while processing position p (row max_len, reached only after
        # the last position, keeps the look-up in range)
        slots = torch.arange(self.max_len, device=device)
        rows = torch.arange(self.max_len + 1, device=device)[:, None]
        self._masks = torch.zeros(self.max_len + 1, self.max_len, device=device, dtype=dtype)
        self._masks.masked_fill_(slots[None, :] > rows, float("-inf"))
        self.mask = self._masks[:1].clone()

    def reset(self) -> None:
        """Start a new sequence: position 0, buffers zeroed (stale entries are masked, but
        0 * NaN would still be NaN)."""
        self.keys.zero_()
        self.values.zero_()
        self.pos.zero_()
        torch.index_select(self._masks, 0, self._index, out=self.mask)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store one position's keys/values (N, H, 1, hd) at ``pos``; return all slots."""
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, self._index, k)
        values.index_copy_(2, self._index, v)
        return keys, values

    def advance(self, n: int = 1) -> None:
        """Move to the next position (after all layers were updated); ``n`` must be 1."""
        if n != 1:
            raise ValueError(f"a static cache advances one position at a time, not {n}")
        self.pos.add_(1)
        torch.index_select(self._masks, 0, self._index, out=self.mask)

    def attention_mask(self) -> Tensor:
        """Additive mask (1, max_len) for the query at ``pos``."""
        return self.mask


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

    def step(self, x: Tensor, cache: KVCache | StaticKVCache, layer: int = 0) -> Tensor:
        """One new position in inference: x (N, d) -> (N, d); updates ``cache``.

        The same function as ``forward(x[:, None], cache, layer)[:, 0]`` in eval mode,
        written with functional calls on 2-D tensors: sampling at small batches is bound by
        per-operator overhead (70 steps per shower), not by arithmetic. With a
        :class:`StaticKVCache` every shape is independent of the position (the query
        attends over all slots under the cache's mask), as a CUDA graph needs.
        """
        n, d = x.shape
        a = self.attn
        h = a.n_heads
        y = F.layer_norm(x, (d,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        q, k, v = F.linear(y, a.qkv.weight, a.qkv.bias).view(n, 3, h, 1, d // h).unbind(1)
        k, v = cache.update(layer, k, v)
        # one query: every held key (KVCache) or every unmasked slot (StaticKVCache)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.attention_mask())
        x = x + F.linear(y.view(n, d), a.proj.weight, a.proj.bias)
        fc1, act, fc2 = self.mlp[0], self.mlp[1], self.mlp[2]
        y = F.layer_norm(x, (d,), self.ln2.weight, self.ln2.bias, self.ln2.eps)
        return x + F.linear(act(F.linear(y, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
