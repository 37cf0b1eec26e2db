"""A small encoder-decoder transformer with incremental (cached) decoding.

The encoder runs self-attention blocks over the condition tokens (the *memory*). Each
decoder block has causal self-attention, cross-attention to the memory and an MLP. The
module adds no position information: callers put it into their token embeddings.

Incremental decoding: :meth:`EncoderDecoderTransformer.start` encodes the memory and
projects its cross-attention keys and values once per decoder layer;
:meth:`EncoderDecoderTransformer.step` then processes one new target position against
the cached self-attention keys/values of the earlier positions (a
:class:`~caloforge.nn.KVCache`), so decoding position i costs one position's work. The
steps reproduce the teacher-forced :meth:`EncoderDecoderTransformer.forward` up to float
rounding.

Layout: post-LayerNorm residual blocks with ReLU MLPs by default (x = LN(x + f(x))), or
pre-LayerNorm (x = x + f(LN(x))) with ``norm_first=True``; both stacks end in a
LayerNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import CausalSelfAttention, KVCache

__all__ = ["Attention", "EncoderBlock", "DecoderBlock", "DecoderState", "EncoderDecoderTransformer"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Attention(nn.Module):
    """Multi-head attention of queries from x to keys/values from a memory (no mask).

    Self-attention is ``attn(x, attn.project_memory(x))``. Splitting the key/value
    projection out lets a decoder compute it once for a fixed memory.

    Shapes: x (N, T, D), memory keys/values (N, H, S, D / H) each -> (N, T, D).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of a memory (N, S, D): two tensors (N, H, S, D / H)."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor]) -> Tensor:
        n, t, d = x.shape
        q = self._heads(self.q(x))
        y = F.scaled_dot_product_attention(
            q, *memory_kv, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(n, t, d)))


def _mlp(d_model: int, ff_dim: int, dropout: float, activation: str) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}")
    return nn.Sequential(
        nn.Linear(d_model, ff_dim),
        _ACTIVATIONS[activation](),
        nn.Dropout(dropout),
        nn.Linear(ff_dim, d_model),
        nn.Dropout(dropout),
    )


class _Residual(nn.Module):
    """Shared pre-/post-LayerNorm residual wiring."""

    norm_first: bool

    def _add(self, x: Tensor, norm: nn.LayerNorm, f: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + f(norm(x))
        return norm(x + f(x))


class EncoderBlock(_Residual):
    """Self-attention over all memory tokens, then an MLP.

    Shapes: x (N, S, D) -> (N, S, D).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = Attention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = _mlp(d_model, ff_dim, dropout, activation)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self._add(x, self.norm1, lambda h: self.attn(h, self.attn.project_memory(h)))
        return self._add(x, self.norm2, self.mlp)


class DecoderBlock(_Residual):
    """Causal self-attention, cross-attention to the memory, MLP.

    Shapes: x (N, T, D), memory keys/values from ``cross_attn.project_memory`` -> (N, T, D).
    With a :class:`KVCache` holding P earlier positions, the T new positions attend to
    those and to new positions up to themselves; the caller advances the cache.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = _mlp(d_model, ff_dim, dropout, activation)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        memory_kv: tuple[Tensor, Tensor],
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        x = self._add(x, self.norm1, lambda h: self.self_attn(h, cache, layer))
        x = self._add(x, self.norm2, lambda h: self.cross_attn(h, memory_kv))
        return self._add(x, self.norm3, self.mlp)


@dataclass
class DecoderState:
    """What incremental decoding carries between steps.

    Fields:
        memory_kv: per decoder layer, the cross-attention keys and values of the memory,
            each (N, H, S, D / H), computed once by ``start``.
        cache: self-attention keys/values of the positions decoded so far.
    """

    memory_kv: list[tuple[Tensor, Tensor]]
    cache: KVCache

    @property
    def length(self) -> int:
        """Number of target positions decoded so far."""
        return self.cache.length


class EncoderDecoderTransformer(nn.Module):
    """Encoder over source tokens, causal decoder over target tokens with cross-attention.

    Args:
        d_model: token width D.
        n_heads: attention heads (dividing D).
        n_encoder_layers, n_decoder_layers: block counts (>= 1).
        ff_dim: hidden width of the MLPs.
        dropout: attention, residual and MLP dropout.
        activation: "relu" or "gelu".
        norm_first: pre-LayerNorm blocks instead of post-LayerNorm.

    Shapes: src (N, S, D), tgt (N, T, D) -> (N, T, D); output t depends on src and
    tgt[:, :t + 1] only.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_encoder_layers: int,
        n_decoder_layers: int,
        ff_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        if n_encoder_layers < 1 or n_decoder_layers < 1:
            raise ValueError("an encoder-decoder needs at least one layer of each")
        args = (d_model, n_heads, ff_dim, dropout, activation, norm_first)
        self.encoder = nn.ModuleList(EncoderBlock(*args) for _ in range(n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(DecoderBlock(*args) for _ in range(n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)

    def encode(self, src: Tensor) -> Tensor:
        """The memory: (N, S, D) -> (N, S, D)."""
        h = src
        for blk in self.encoder:
            h = blk(h)
        return self.encoder_norm(h)

    def _memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [blk.cross_attn.project_memory(memory) for blk in self.decoder]

    def _decode(
        self, tgt: Tensor, memory_kv: list[tuple[Tensor, Tensor]], cache: KVCache | None
    ) -> Tensor:
        h = tgt
        for i, blk in enumerate(self.decoder):
            h = blk(h, memory_kv[i], cache, i)
        if cache is not None:
            cache.advance(tgt.shape[1])
        return self.decoder_norm(h)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced pass with a causal mask: (N, S, D), (N, T, D) -> (N, T, D)."""
        return self._decode(tgt, self._memory_kv(self.encode(src)), None)

    def start(self, src: Tensor, max_len: int | None = None) -> DecoderState:
        """Encode ``src`` (N, S, D) and return an empty decoding state.

        ``max_len`` preallocates the self-attention cache for that many positions.
        """
        return DecoderState(self._memory_kv(self.encode(src)), KVCache(len(self.decoder), max_len))

    def step(self, state: DecoderState, tgt_token: Tensor) -> Tensor:
        """Decode the next position: tgt_token (N, D) -> (N, D); ``state`` is updated.

        Equal to ``forward(src, tgt)[:, i]`` where i = the number of earlier steps and
        tgt holds the tokens given so far.
        """
        return self._decode(tgt_token[:, None, :], state.memory_kv, state.cache)[:, 0]
