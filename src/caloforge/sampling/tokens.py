"""Autoregressive token sampling with a key/value cache.

The sampler knows nothing of the network beyond this protocol::

    model.next_token_logits(tokens (N, t), cond, class_id=None, cache=None) -> (N, V)
    model.new_cache() -> cache object
    model.config.seq_len

Defaults are plain ancestral sampling: temperature 1 and no top-k (the paper states
neither). Draws invert the cumulative distribution with one uniform number per row from the given ``torch.Generator``, so a fixed
generator seed gives the same tokens with and without the cache.

The uniform numbers can also be given explicitly (``sample_tokens(..., uniforms=u)``, u of
shape (N, steps)): the sampler is then a deterministic function of (condition, u), which
is how exported graphs take their randomness as an input (docs/export.md). On CPU,
``draw_token_uniforms(N, steps, generator)`` returns exactly the numbers the sampler
draws itself from that generator, so both ways give the same tokens.

On CUDA devices a model with a fixed-shape step (:meth:`GPT.static_step`) is sampled
through a CUDA graph of that step (:mod:`caloforge.sampling.cuda_graph_tokens`), with the
same random numbers and draws; ``cuda_graphs=False`` keeps the plain loop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["sample_tokens", "filter_logits", "draw_categorical", "draw_token_uniforms",
           "invert_cdf"]


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


def _invert_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """The draw of :func:`draw_categorical` for given uniforms u (N,) -> (N,) long."""
    cdf = probs.cumsum(dim=-1)
    idx = torch.searchsorted(cdf, u[:, None].to(cdf.dtype) * cdf[:, -1:], right=True)
    return idx.clamp_max_(probs.shape[-1] - 1)[:, 0]


def invert_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """The same draw as the sampler's, written with operators every graph format has.

    probs (N, V), u (N,) in [0, 1) -> (N,) long: the number of cumulative-distribution
    entries <= u times the total, i.e. what a right-sided binary search returns on the
    non-decreasing cumulative sums, clamped to V - 1. Exporters use it in place of
    ``searchsorted`` (which ONNX lacks). The sums are accumulated in float64 and rounded
    to the probabilities' dtype: on CPU that is bit for bit what torch's float32 ``cumsum``
    computes (tested), while a float32 running sum of another runtime drifts by a few
    units in the last place and tips draws near a boundary.
    """
    cdf = probs.to(torch.float64).cumsum(dim=-1).to(probs.dtype)
    below = cdf <= u[:, None].to(cdf.dtype) * cdf[:, -1:]
    return below.sum(dim=-1).clamp_max(probs.shape[-1] - 1)


def draw_token_uniforms(n: int, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """The uniform numbers :func:`sample_tokens` draws on CPU for N rows and ``steps``
    positions, as (N, steps) float32: row i's numbers for positions t0, t0 + 1, ..."""
    return torch.rand(steps, n, generator=generator, dtype=torch.float32).t()




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
    chunk_size: int | None = None,
    uniforms: Tensor | None = None,
    cuda_graphs: bool | None = None,
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
        chunk_size: rows sampled together (default: the whole batch). Rows are
            independent and, on CPU, every row gets the same uniform numbers whatever the
            chunk size (they are drawn for all rows in the order step-by-step draws over
            the whole batch would take them), so chunks change the tokens only where the
            network's rounding differs between batch sizes and a draw falls within that
            rounding of a boundary of the cumulative distribution (observed: 1 row in 300
            for the ds2 GPT in float32). Smaller chunks keep the key/value cache in cache
            memory; on the 2-core development CPU this gained under 10 % at batch 1000, so
            the default keeps the exact step-by-step result. On other devices a chunk
            smaller than the batch changes which numbers each row gets (same distribution).
        uniforms: (N, n_tokens - t0) numbers in [0, 1) to draw with, in place of the
            generator's (any device): row i, column s draws position t0 + s. With
            ``draw_token_uniforms(N, steps, generator)`` the tokens equal those drawn from
            ``generator`` on CPU.
        cuda_graphs: None (default) samples through a CUDA graph of the model's
            fixed-shape step on CUDA devices, False never, True on every device (captured
            on CUDA, run eagerly elsewhere: the same tokens, for tests). It applies with
            ``use_cache``, no prefix and a model in eval mode that implements the step
            (:func:`~caloforge.sampling.cuda_graph_tokens.supports_static_decoding`); the
            random numbers and draws are the plain loop's (module docstring there).

    Returns:
        tokens (N, n_tokens) long, including the prefix.
    """
    n = cond.shape[0]
    total = int(model.config.seq_len if n_tokens is None else n_tokens)
    if prefix is None:
        prefix = torch.zeros(n, 0, dtype=torch.long, device=cond.device)
    prefix = prefix.to(torch.long)
    t0 = prefix.shape[1]
    if t0 >= total:
        return prefix
    steps = total - t0
    tokens = torch.empty(n, total, dtype=torch.long, device=cond.device)
    tokens[:, :t0] = prefix
    on_cpu = cond.device.type == "cpu"
    chunk_size = max(1, n if chunk_size is None else int(chunk_size))
    if uniforms is not None:
        if tuple(uniforms.shape) != (n, steps):
            raise ValueError(f"uniforms must have shape (N, steps) = ({n}, {steps}), got "
                             f"{tuple(uniforms.shape)}")
        # step-major, as drawn below
        uniforms = uniforms.to(device=cond.device, dtype=torch.float32).t()
    elif on_cpu:
        # One call gives the same numbers as `steps` successive (N, 1) draws from a CPU
        # generator (tested), so every row gets the uniforms it had in a step-by-step
        # loop over the whole batch, whatever the chunk size.
        uniforms = torch.rand(steps, n, generator=generator, dtype=torch.float32)
    else:
        # counter-based (CUDA) generators give numbers that depend on each call's size:
        # draw per step and chunk, as draw_categorical does (the whole batch by default)
        uniforms = None
    static = None
    if (cond.device.type == "cuda" if cuda_graphs is None else cuda_graphs) and use_cache \
            and t0 == 0:
        # imported here: that module imports this one's draw
        from .cuda_graph_tokens import supports_static_decoding, token_sampler_for

        static = token_sampler_for(model) if supports_static_decoding(model) else None
    for i in range(0, n, chunk_size):
        j = min(n, i + chunk_size)
        if static is not None:
            static.sample_into(
                model,
                tokens[i:j],
                cond[i:j],
                None if class_id is None else class_id[i:j],
                None if uniforms is None else uniforms[:, i:j],
                generator,
                temperature,
                top_k,
            )
            continue
        _sample_rows(
            model,
            cond[i:j],
            None if class_id is None else class_id[i:j],
            tokens[i:j],
            t0,
            None if uniforms is None else uniforms[:, i:j],
            temperature,
            top_k,
            generator,
            use_cache,
        )
    return tokens


def _sample_rows(
    model: nn.Module,
    cond: Tensor,
    class_id: Tensor | None,
    tokens: Tensor,
    t0: int,
    uniforms: Tensor | None,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
) -> None:
    """Fill tokens[:, t0:] in place, one position per step."""
    cache = model.new_cache() if use_cache else None
    for step, t in enumerate(range(t0, tokens.shape[1])):
        logits = model.next_token_logits(tokens[:, :t], cond, class_id=class_id, cache=cache)
        probs = torch.softmax(filter_logits(logits.float(), temperature, top_k), dim=-1)
        if uniforms is None:
            tokens[:, t] = draw_categorical(probs, generator)[:, 0]
        else:
            tokens[:, t] = _invert_cdf(probs, uniforms[step])
