"""GPT token prior of Calo-VQ stage 2 ([P] §5, Eq. 7, Table 6).

A causal transformer over one shared vocabulary (1024 tokens: R digits and shower codes
use the same ids, docs/calovq.md, "Shared vocabulary") and the sequence
``[R tokens][shower codes]`` with no separator. The condition (scaled incident energy,
optionally a class id such as the particle type) is embedded into a learned *start*
vector that takes position 0, so that

    position 0: start(cond)          -> predicts token 0
    position t: embed(token t-1)     -> predicts token t,  t = 1 … seq_len - 1

The layout (token and learned position embeddings, pre-LN blocks of 12 d^2 + 13 d
parameters, final LayerNorm, bias-free head) reproduces Table 6's stage-2 counts; the
ds2 configuration (2 layers, 2 heads, d = 64, seq_len = 70) has about 0.236 M parameters.

Incremental decoding: :meth:`GPT.next_token_logits` takes the tokens generated so far and
an optional :class:`~caloforge.nn.KVCache`; with a cache, only positions not yet seen are
computed. The samplers in :mod:`caloforge.sampling.tokens` use only this method.

Fixed-shape decoding: :meth:`GPT.static_step` computes the same logits with a
:class:`~caloforge.nn.transformer.StaticKVCache`, whose position is a device tensor, so one
call with the same tensor shapes serves every position; that is what a CUDA graph can
replay (:mod:`caloforge.sampling.cuda_graph_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import ConditionEmbedding, KVCache, TransformerBlock
from ...nn.transformer import StaticKVCache

__all__ = ["GPTConfig", "GPT"]


@dataclass
class GPTConfig:
    """Configuration of :class:`GPT`; defaults are the ds2 paper model (Table 6).

    Fields:
        vocab_size: shared vocabulary (1024).
        seq_len: R tokens + shower codes (ds2: 2 + 68 = 70).
        n_layers, n_heads, d_model: Table 6 "xformer layer / head / embed".
        dropout: embedding, attention and residual dropout (not stated; minGPT's 0.1).
        cond_in_dim: continuous condition features (1: scaled E_inc).
        cond_hidden_dim: hidden width of the condition MLP; 0 = a single Linear (ours).
        n_classes: class ids (particle type); 0 = none.
    """

    vocab_size: int = 1024
    seq_len: int = 70
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    dropout: float = 0.1
    cond_in_dim: int = 1
    cond_hidden_dim: int = 0
    n_classes: int = 0

    def __post_init__(self) -> None:
        for k in ("vocab_size", "seq_len", "n_layers", "n_heads", "d_model", "cond_in_dim"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be positive, got {getattr(self, k)!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class GPT(nn.Module):
    """Conditional causal transformer over token sequences of length ``seq_len``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.start = ConditionEmbedding(
            cfg.cond_in_dim, cfg.d_model, cfg.cond_hidden_dim, cfg.n_classes
        )
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # GPT-2 style: small normal weights, zero biases
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`next_token_logits` (buffers of seq_len)."""
        return KVCache(self.config.n_layers, max_len=self.config.seq_len)

    def _inputs(self, tokens: Tensor, cond: Tensor, class_id: Tensor | None, start: int) -> Tensor:
        """Embeddings of positions start … tokens.shape[1] (inclusive), (N, T, d)."""
        parts = []
        if start == 0:
            parts.append(self.start(cond, class_id)[:, None, :])
            first_tok = 0
        else:
            first_tok = start - 1
        if tokens.shape[1] > first_tok:
            parts.append(self.tok_emb(tokens[:, first_tok:]))
        h = torch.cat(parts, dim=1)
        end = start + h.shape[1]
        if end > self.config.seq_len:
            raise ValueError(f"sequence of {end} positions exceeds seq_len={self.config.seq_len}")
        return self.drop(h + self.pos_emb[start:end])

    def _run(self, h: Tensor, cache: KVCache | None) -> Tensor:
        for i, blk in enumerate(self.blocks):
            h = blk(h, cache, i)
        if cache is not None:
            cache.advance(h.shape[1])
        return self.head(self.ln_f(h))

    def forward(self, tokens: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """Teacher-forced logits.

        Args:
            tokens: (N, T) long, T <= seq_len, the target sequence.
            cond: (N, cond_in_dim) scaled condition.
            class_id: (N,) long, when the model has classes.

        Returns:
            logits (N, T, vocab_size); ``logits[:, t]`` predicts ``tokens[:, t]`` from the
            condition and ``tokens[:, :t]``.
        """
        h = self._inputs(tokens[:, :-1], cond, class_id, start=0)
        return self._run(h, None)

    def next_token_logits(
        self,
        tokens: Tensor,
        cond: Tensor,
        class_id: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Logits of the next token after ``tokens``.

        Args:
            tokens: (N, t) long, the t tokens so far (t may be 0).
            cond, class_id: as in :meth:`forward`.
            cache: None recomputes all positions; a :class:`KVCache` (from
                :meth:`new_cache`) is used and updated, and only positions it has not seen
                are computed.

        Returns:
            logits (N, vocab_size) for token t.
        """
        start = cache.length if cache is not None else 0
        if (
            cache is not None
            and 0 < start == tokens.shape[1]
            and start < self.config.seq_len
            and not self.training
            and not torch.is_grad_enabled()
        ):
            return self._step(tokens[:, -1], cache)
        h = self._inputs(tokens, cond, class_id, start=start)
        return self._run(h, cache)[:, -1]

    def _step(self, last: Tensor, cache: KVCache) -> Tensor:
        """Logits after one more token (N,) with the cache holding all earlier positions.

        The same function as the general path for this case (eval mode), with fewer
        operators per step: no concatenation, 2-D activations and functional calls.
        """
        t = cache.length
        h = F.embedding(last, self.tok_emb.weight) + self.pos_emb[t]
        return self._step_layers(h, cache)

    def _step_layers(self, h: Tensor, cache: KVCache | StaticKVCache) -> Tensor:
        """Input embeddings (N, d) of one position -> its logits (N, V); advances cache."""
        for i, blk in enumerate(self.blocks):
            h = blk.step(h, cache, i)
        cache.advance(1)
        h = F.layer_norm(h, h.shape[-1:], self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return F.linear(h, self.head.weight, self.head.bias)

    # ------------------------------------------------------ fixed-shape decoding
    def new_static_cache(self, n: int) -> StaticKVCache:
        """A :class:`StaticKVCache` for ``n`` rows on this model's device and dtype."""
        cfg, p = self.config, self.pos_emb
        return StaticKVCache(cfg.n_layers, n, cfg.n_heads, cfg.seq_len,
                             cfg.d_model // cfg.n_heads, device=p.device, dtype=p.dtype)

    def start_embedding(self, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """The input of position 0 (before its position embedding), (N, d)."""
        return self.start(cond, class_id)

    def static_step(self, start: Tensor, tokens: Tensor, cache: StaticKVCache) -> Tensor:
        """Logits (N, V) of token p = ``cache.pos`` with shapes independent of p; advances.

        Args:
            start: (N, d) :meth:`start_embedding` of the condition, the input at p = 0.
            tokens: (N, seq_len) long; column p - 1 is the input at p > 0, the other
                columns are not read. Every entry must be a valid id (the column is
                looked up at p = 0 too, then discarded).
            cache: from :meth:`new_static_cache`, holding positions 0 … p - 1.

        The same function as :meth:`next_token_logits` with a :class:`KVCache` in eval
        mode (up to rounding: attention runs over all slots under a mask), with no Python
        value depending on p: the previous token, the position embedding and the cache
        slot are selected by the device tensor ``cache.pos``.
        """
        if self.training:
            raise RuntimeError("static_step is for inference: call .eval() first (no dropout)")
        pos = cache.pos
        prev = tokens.index_select(1, (pos - 1).clamp_min(0).view(1))[:, 0]
        # a selection, not arithmetic: position 0 gets the start vector bit for bit
        h = torch.where(pos == 0, start, F.embedding(prev, self.tok_emb.weight))
        h = h + self.pos_emb.index_select(0, pos.view(1))
        return self._step_layers(h, cache)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
