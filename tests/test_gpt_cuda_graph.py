"""Fixed-shape GPT decoding (static key/value cache) and its CUDA-graph capture.

The fixed-shape step runs eagerly on the CPU, so its equality with the plain cached step
(logits and sampled tokens for the same random stream) is tested everywhere; the graph
capture itself only where CUDA is available.
"""

import pytest
import torch

from caloforge.models import GPT, GPTConfig
from caloforge.nn.transformer import StaticKVCache
from caloforge.sampling import sample_tokens
from caloforge.sampling.cuda_graph_tokens import token_sampler_for

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(device="cpu", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=32, seq_len=12, n_layers=2, n_heads=2, d_model=16, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval().to(device)


@pytest.mark.parametrize("n", [1, 5])
@torch.no_grad()
def test_static_step_logits_equal_plain_cached_logits(n):
    model = tiny_gpt(n_classes=3)
    cond, cls = torch.rand(n, 1), torch.randint(0, 3, (n,))
    tokens = torch.randint(0, 32, (n, 12))
    cache, static = model.new_cache(), model.new_static_cache(n)
    static.reset()
    start = model.start_embedding(cond, cls)
    for t in range(12):
        plain = model.next_token_logits(tokens[:, :t], cond, class_id=cls, cache=cache)
        fixed = model.static_step(start, tokens, static)
        torch.testing.assert_close(fixed, plain, atol=1e-5, rtol=1e-5)
        assert int(static.pos) == t + 1
    # the cache holds the same keys as the plain one, in the first 12 slots
    for layer in range(2):
        torch.testing.assert_close(static.keys[layer], cache.layers[layer][0])


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 5)])
def test_static_sampling_equals_plain_sampling_for_the_same_stream(n, temperature, top_k):
    model = tiny_gpt()
    cond = torch.rand(n, 1)
    kw = dict(temperature=temperature, top_k=top_k)
    for seed in range(4):
        plain = sample_tokens(model, cond, generator=torch.Generator().manual_seed(seed),
                              cuda_graphs=False, **kw)
        fixed = sample_tokens(model, cond, generator=torch.Generator().manual_seed(seed),
                              cuda_graphs=True, **kw)
        assert fixed.shape == (n, 12) and fixed.dtype == torch.long
        assert torch.equal(fixed, plain)
    # explicit uniforms, fewer tokens than seq_len, chunks
    u = torch.rand(n, 9)
    a = sample_tokens(model, cond, n_tokens=9, uniforms=u, cuda_graphs=False, **kw)
    b = sample_tokens(model, cond, n_tokens=9, uniforms=u, cuda_graphs=True, chunk_size=2, **kw)
    assert torch.equal(a, b)


def test_static_sampler_keeps_few_decoders_and_drops_them_when_weights_move():
    model = tiny_gpt()
    sampler = token_sampler_for(model)
    assert token_sampler_for(model) is sampler
    for n in (1, 2, 3, 4, 5, 6):
        sample_tokens(model, torch.rand(n, 1), cuda_graphs=True)
    assert len(sampler) == 4  # least recently used dropped
    sample_tokens(model, torch.rand(6, 1), cuda_graphs=True)
    assert len(sampler) == 4
    model.to(torch.float64)  # parameters replaced: every decoder is stale
    out = sample_tokens(model, torch.rand(2, 1, dtype=torch.float64), cuda_graphs=True)
    assert len(sampler) == 1 and out.shape == (2, 12)


def test_prefix_and_training_mode_use_the_plain_loop():
    model = tiny_gpt()
    cond, prefix = torch.rand(3, 1), torch.randint(0, 32, (3, 4))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = sample_tokens(model, cond, prefix=prefix, generator=g(), cuda_graphs=True)
    b = sample_tokens(model, cond, prefix=prefix, generator=g(), cuda_graphs=False)
    assert torch.equal(a, b) and torch.equal(a[:, :4], prefix)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().static_step(torch.zeros(1, 16), torch.zeros(1, 12, dtype=torch.long),
                                  model.new_static_cache(1))


def test_static_cache_masks_later_slots_and_refuses_multi_position_steps():
    c = StaticKVCache(1, 2, 1, 4, 3)
    c.reset()
    assert torch.equal(c.attention_mask().isinf(), torch.tensor([[False, True, True, True]]))
    c.advance()
    c.advance()
    assert torch.equal(c.attention_mask().isinf(), torch.tensor([[False, False, False, True]]))
    with pytest.raises(ValueError, match="one position"):
        c.advance(2)


@cuda
@pytest.mark.parametrize("n", [1, 7])
def test_cuda_graph_sampling_equals_plain_sampling(n):
    model = tiny_gpt("cuda", vocab_size=64, seq_len=20, d_model=32)
    cond = torch.rand(n, 1, device="cuda")
    sampler = token_sampler_for(model)
    for seed in range(3):
        plain = sample_tokens(model, cond, generator=torch.Generator("cuda").manual_seed(seed),
                              cuda_graphs=False)
        graph = sample_tokens(model, cond, generator=torch.Generator("cuda").manual_seed(seed))
        assert torch.equal(graph, plain)
    assert not sampler.graphs_failed
    assert any(d.graph is not None for d in sampler._decoders.values())
    # replaying the graph gives the eager fixed-shape step's tokens bit for bit
    u = torch.rand(n, 20, device="cuda")
    eager = token_sampler_for(model)
    ref = torch.empty(n, 20, dtype=torch.long, device="cuda")
    eager.sample_into(model, ref, cond, uniforms=u.t(), use_graphs=False)
    assert torch.equal(sample_tokens(model, cond, uniforms=u), ref)


class _FakeGraph:
    """Stands in for a captured graph on the CPU: replays the step, optionally wrongly."""

    def __init__(self, decoder, model, corrupt):
        self.decoder, self.model, self.corrupt = decoder, model, corrupt

    def replay(self):
        self.decoder.step(self.model)
        if self.corrupt:  # a graph reading stale memory: a wrong token at every position
            col = (self.decoder.cache.pos - 1).view(1)
            wrong = (self.decoder.tokens.index_select(1, col) + 1) % 32
            self.decoder.tokens.index_copy_(1, col, wrong)


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_new_graph_is_checked_against_the_eager_step(monkeypatch, corrupt):
    from caloforge.sampling import cuda_graph_tokens as cgt

    def fake_capture(self, model):
        self.graph = _FakeGraph(self, model, corrupt)

    monkeypatch.setattr(cgt._Decoder, "capture", fake_capture)
    model = tiny_gpt()
    cond, u = torch.rand(3, 1), torch.rand(12, 3)
    plain = sample_tokens(model, cond, uniforms=u.t(), cuda_graphs=False)
    sampler = cgt.CUDAGraphTokenSampler()
    out = torch.empty(3, 12, dtype=torch.long)
    if corrupt:
        with pytest.warns(RuntimeWarning, match="other tokens"):
            sampler.sample_into(model, out, cond, uniforms=u, use_graphs=True)
    else:
        sampler.sample_into(model, out, cond, uniforms=u, use_graphs=True)
    # either way the caller gets the plain sampler's tokens, and a bad graph is dropped
    assert torch.equal(out, plain)
    assert sampler.graphs_failed is corrupt
