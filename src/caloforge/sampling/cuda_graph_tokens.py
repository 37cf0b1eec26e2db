"""Token sampling with the per-position step captured in a CUDA graph.

At small batches a GPT's sampling loop is bound by kernel launches, not arithmetic (Calo-VQ
ds2: 70 positions of a few dozen tiny kernels each). A CUDA graph records one step's
kernels once and replays them with a single launch. A graph replays fixed kernels on fixed
memory, so the step must not depend on any Python value that changes between positions:
the model's fixed-shape step (protocol below) reads the position from a device tensor, and
the sampling part of the step (temperature, top-k, softmax, inverse-CDF draw, writing the
token) indexes its buffers with that tensor too. The graph advances the position itself,
so sampling a sequence is: fill the inputs, replay ``seq_len`` times, read the tokens.

Model protocol (implemented by :class:`~caloforge.models.GPT`)::

    model.new_static_cache(n) -> cache with .pos (0-dim long device tensor) and .reset()
    model.start_embedding(cond, class_id) -> (N, d)
    model.static_step(start (N, d), tokens (N, seq_len), cache) -> logits (N, V); advances
    model.config.seq_len

Random numbers are drawn outside the graph, into a buffer the graph reads, exactly as the
plain sampler draws them (:func:`~caloforge.sampling.tokens.sample_tokens`): given
uniforms as they are; otherwise one ``torch.rand(N, 1, generator=...)`` per position, the
call :func:`~caloforge.sampling.tokens.draw_categorical` makes. Both samplers then invert
the same cumulative distribution with the same number, so a seed gives the same tokens,
up to the rounding by which the masked fixed-shape attention differs from the plain one
(a draw within that rounding of a boundary of the cumulative distribution could flip).
Keeping the draw out of the graph costs one small launch per position, but keeps the
stream identical to the plain sampler's without relying on how graphs replay a generator.

Used by ``sample_tokens`` on CUDA devices by default (``cuda_graphs=False`` turns it off;
``CaloVQ.cuda_graphs = False`` for a generator). On other devices, or with
``use_graphs=False``, the same fixed-shape step runs eagerly (tests compare it with the
plain path on the CPU).
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict

import torch
from torch import Tensor, nn

from .tokens import _invert_cdf, filter_logits

__all__ = ["CUDAGraphTokenSampler", "supports_static_decoding", "token_sampler_for"]

#: fixed-shape decoders kept per model (one per batch size; a run uses one or two)
MAX_DECODERS = 4

# one sampler per model; weak keys, and decoders hold no reference to the model, so a
# dropped model releases its graphs
_SAMPLERS: weakref.WeakKeyDictionary[nn.Module, CUDAGraphTokenSampler] = (
    weakref.WeakKeyDictionary()
)


def supports_static_decoding(model: nn.Module) -> bool:
    """Whether ``model`` implements the fixed-shape step protocol (and is in eval mode)."""
    return (not model.training and callable(getattr(model, "static_step", None))
            and callable(getattr(model, "new_static_cache", None))
            and callable(getattr(model, "start_embedding", None)))


def token_sampler_for(model: nn.Module) -> CUDAGraphTokenSampler:
    """The sampler (and its captured graphs) kept for ``model``."""
    sampler = _SAMPLERS.get(model)
    if sampler is None:
        sampler = _SAMPLERS[model] = CUDAGraphTokenSampler()
    return sampler


class _Decoder:
    """Static buffers, cache and (on CUDA) the captured graph of one step, for N rows."""

    def __init__(self, model: nn.Module, n: int, temperature: float,
                 top_k: int | None) -> None:
        self.cache = model.new_static_cache(n)
        device, length = self.cache.pos.device, int(model.config.seq_len)
        self.temperature, self.top_k = temperature, top_k
        self.start: Tensor | None = None  # allocated on the first fill: its width is the model's
        # zeros, not empty: column p - 1 is looked up at p = 0 and must be a valid id
        self.tokens = torch.zeros(n, length, dtype=torch.long, device=device)
        self.uniforms = torch.zeros(length, n, dtype=torch.float32, device=device)  # step-major
        self.graph: torch.cuda.CUDAGraph | None = None

    def fill(self, start: Tensor, uniforms: Tensor) -> None:
        """Copy this sequence's inputs into the static buffers; uniforms (steps, N)."""
        if self.start is None:
            self.start = start.clone()
        else:
            self.start.copy_(start)
        self.uniforms[: uniforms.shape[0]].copy_(uniforms)
        self.cache.reset()

    def step(self, model: nn.Module) -> None:
        """One position p = cache.pos: sample token p into ``tokens``; advances p.

        Only in-place writes to the buffers, and no Python value depending on p: this is
        the body the graph records.
        """
        logits = model.static_step(self.start, self.tokens, self.cache)
        col = (self.cache.pos - 1).view(1)  # static_step advanced: the position just done
        # the plain sampler's draw (sample_tokens/_sample_rows), operator for operator
        probs = torch.softmax(filter_logits(logits.float(), self.temperature, self.top_k), dim=-1)
        u = self.uniforms.index_select(0, col)[0]
        self.tokens.index_copy_(1, col, _invert_cdf(probs, u)[:, None])

    def capture(self, model: nn.Module) -> None:
        """Record :meth:`step` in a CUDA graph (standard recipe: warm up on a side stream
        so that lazy initialisation, e.g. cuBLAS handles, happens outside the capture)."""
        device = self.tokens.device
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.cache.reset()
                    self.step(model)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: a background writer thread's CUDA calls do not break the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.step(model)
        self.graph = graph

    def run(self, model: nn.Module, steps: int, use_graph: bool) -> None:
        """Positions 0 … steps - 1 (after :meth:`fill`), replaying the graph if captured
        and ``use_graph``."""
        if use_graph and self.graph is not None:
            for _ in range(steps):
                self.graph.replay()
        else:
            for _ in range(steps):
                self.step(model)


class CUDAGraphTokenSampler:
    """Fixed-shape token sampling for one model, captured in CUDA graphs on CUDA devices.

    One decoder (buffers, key/value cache, graph) per (batch size, device, temperature,
    top-k), at most :data:`MAX_DECODERS`, least recently used dropped first: a new batch
    size captures a new graph (tens of milliseconds, once). The graphs read the weights
    where they were when captured: in-place changes are seen, but when a parameter or
    buffer moves (``.to()``, replaced tensors) every decoder is dropped and recaptured.
    """

    def __init__(self, max_decoders: int = MAX_DECODERS) -> None:
        self.max_decoders = max(1, int(max_decoders))
        self._decoders: OrderedDict[tuple, _Decoder] = OrderedDict()
        self._weights: tuple | None = None
        self.graphs_failed = False  # set when a capture failed: eager from then on

    def __len__(self) -> int:
        return len(self._decoders)

    def sample_into(self, model: nn.Module, tokens: Tensor, cond: Tensor,
                    class_id: Tensor | None = None, uniforms: Tensor | None = None,
                    generator: torch.Generator | None = None, temperature: float = 1.0,
                    top_k: int | None = None, use_graphs: bool | None = None) -> None:
        """Fill ``tokens`` (N, total) in place with sampled tokens, total <= seq_len.

        Args:
            uniforms: (total, N) step-major numbers in [0, 1), or None to draw one
                ``torch.rand(N, 1, generator=generator)`` per position (the plain sampler's
                draws on a non-CPU device).
            use_graphs: None = capture on CUDA devices; False = run the same step eagerly.
        """
        if not supports_static_decoding(model):
            raise ValueError("the model has no fixed-shape step in its current mode "
                             "(static_step, new_static_cache, start_embedding; eval mode)")
        n, total = tokens.shape
        if total > model.config.seq_len:
            raise ValueError(f"{total} tokens exceed seq_len={model.config.seq_len}")
        device = cond.device
        if use_graphs is None:
            use_graphs = device.type == "cuda"
        use_graphs = use_graphs and not self.graphs_failed
        # inference mode always: buffers made in it (inference tensors) may only be
        # updated in it, and a first call may come from inside or outside of it
        with torch.inference_mode():
            if uniforms is None:
                uniforms = torch.cat([torch.rand(n, 1, generator=generator, device=device,
                                                 dtype=torch.float32) for _ in range(total)],
                                     dim=1).t()
            decoder = self._decoder(model, n, device, float(temperature), top_k)
            start = model.start_embedding(cond, class_id)
            decoder.fill(start, uniforms)
            check = False
            if use_graphs and decoder.graph is None:
                try:
                    decoder.capture(model)
                    check = True
                except RuntimeError as err:  # an operator that cannot be captured
                    self.graphs_failed = True
                    warnings.warn(f"CUDA graph capture of the token step failed ({err}); "
                                  "sampling without graphs", RuntimeWarning, stacklevel=2)
                decoder.cache.reset()  # warm-up and capture moved the position
            decoder.run(model, total, use_graphs)
            if check:
                self._check_replay(model, decoder, start, uniforms, total)
            tokens.copy_(decoder.tokens[:, :total])

    def _check_replay(self, model: nn.Module, decoder: _Decoder, start: Tensor,
                      uniforms: Tensor, total: int) -> None:
        """After a new capture: the replayed sequence must equal the same step run
        eagerly on the same inputs (the same kernels on the same numbers), else graphs are
        switched off with a warning and the eager tokens kept. A graph that silently read
        stale memory would otherwise write wrong showers; this costs one eager sequence
        per capture."""
        replayed = decoder.tokens[:, :total].clone()
        decoder.fill(start, uniforms)
        decoder.run(model, total, use_graph=False)
        if not torch.equal(replayed, decoder.tokens[:, :total]):
            self.graphs_failed = True
            warnings.warn("the CUDA graph of the token step gave other tokens than the same "
                          "step run eagerly; sampling without graphs", RuntimeWarning,
                          stacklevel=3)

    def _decoder(self, model: nn.Module, n: int, device: torch.device, temperature: float,
                 top_k: int | None) -> _Decoder:
        weights = tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))
        if weights != self._weights:
            self._decoders.clear()  # graphs would read the old addresses
            self._weights = weights
        key = (n, str(device), temperature, top_k)
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = _Decoder(model, n, temperature, top_k)
            if decoder.tokens.device != device:
                raise ValueError(f"condition on {device}, model on {decoder.tokens.device}")
            while len(self._decoders) >= self.max_decoders:
                self._decoders.popitem(last=False)
            self._decoders[key] = decoder
        self._decoders.move_to_end(key)
        return decoder
