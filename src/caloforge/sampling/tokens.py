"""Autoregressive token sampling with a key/value cache.

The sampler knows nothing of the network beyond this protocol::

    model.next_token_logits(tokens (N, t), cond, class_id=None, cache=None) -> (N, V)
    model.new_cache() -> cache object
    model.config.seq_len

Defaults are plain ancestral sampling: temperature 1 and no top-k (the paper states
neither). Draws invert the cumulative distribution with one uniform number per row from the given ``torch.Generator``, so a fixed
generator seed gives the same tokens with and without the cache.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["sample_tokens", "filter_logits", "draw_categorical"]


def draw_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row by inverting the cumulative distribution.

    probs (N, V), rows summing to 1 -> (N, 1) long. Uses one uniform number per row
    (``torch.multinomial`` draws one exponential per *entry*, which dominated the sampling
    time for a 1024-token vocabulary).
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    u = u * cdf[:, -1:]  # guards against rows summing to slightly less than 1
    idx = torch.searchsorted(cdf, u, right=True)
    # a zero-probability entry can only be returned at the top end through rounding: clamp
    return idx.clamp_max(probs.shape[-1] - 1)


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    """Scale by 1/temperature and keep the ``top_k`` largest logits (others -inf).

    logits (N, V) -> (N, V).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


@torch.no_grad()
def sample_tokens(
    model: nn.Module,
    cond: Tensor,
    *,
    n_tokens: int | None = None,
    class_id: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    prefix: Tensor | None = None,
) -> Tensor:
    """Sample token sequences from an autoregressive prior.

    Args:
        model: a prior with ``next_token_logits`` / ``new_cache`` (e.g. :class:`GPT`).
        cond: (N, cond_in_dim) condition.
        n_tokens: total length to reach; default ``model.config.seq_len``.
        class_id: (N,) long or None.
        temperature, top_k: logit filtering (defaults: 1 and none).
        generator: random source for reproducible draws.
        use_cache: reuse keys/values of earlier positions (same result, less work).
        prefix: (N, t0) tokens to continue from (e.g. given R tokens); default empty.

    Returns:
        tokens (N, n_tokens) long, including the prefix.
    """
    n = cond.shape[0]
    total = int(model.config.seq_len if n_tokens is None else n_tokens)
    tokens = (
        torch.zeros(n, 0, dtype=torch.long, device=cond.device)
        if prefix is None
        else prefix.to(torch.long)
    )
    cache = model.new_cache() if use_cache else None
    while tokens.shape[1] < total:
        logits = model.next_token_logits(tokens, cond, class_id=class_id, cache=cache)
        probs = torch.softmax(filter_logits(logits.float(), temperature, top_k), dim=-1)
        nxt = draw_categorical(probs, generator)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens
