"""Transformer blocks with a KV cache, and the nn package's exports."""

import importlib

import pytest
import torch

import caloforge.nn as cnn
from caloforge.nn import MLP, ConditionEmbedding, FiLM, KVCache, TransformerBlock

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_exported_name_imports():
    for pkg in ("caloforge.nn", "caloforge.models", "caloforge.objectives", "caloforge.sampling"):
        mod = importlib.import_module(pkg)
        assert mod.__all__, pkg
        for name in mod.__all__:
            assert hasattr(mod, name), f"{pkg}.{name}"


@pytest.mark.parametrize("max_len", [None, 7, 9])
def test_block_with_cache_equals_full_causal_pass(max_len):
    torch.manual_seed(0)
    blk = TransformerBlock(16, 4).eval()
    x = torch.randn(3, 7, 16)
    full = blk(x)
    # feed the same sequence in chunks of 3, 1, 3 through the cache
    cache, outs = KVCache(1, max_len=max_len), []
    for a, b in ((0, 3), (3, 4), (4, 7)):
        outs.append(blk(x[:, a:b], cache, 0))
        cache.advance(b - a)
    assert cache.length == 7 and cache.layers[0][0].shape[:2] == (3, 4)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-6, rtol=1e-5)


def test_cache_capacity_is_checked():
    blk = TransformerBlock(8, 2).eval()
    cache = KVCache(1, max_len=2)
    blk(torch.randn(1, 2, 8), cache, 0)
    cache.advance(2)
    with pytest.raises(ValueError, match="at most 2"):
        blk(torch.randn(1, 1, 8), cache, 0)


def test_block_is_causal():
    torch.manual_seed(1)
    blk = TransformerBlock(8, 2).eval()
    x = torch.randn(1, 5, 8)
    x2 = x.clone()
    x2[:, 3:] += 1.0  # change the future
    torch.testing.assert_close(blk(x)[:, :3], blk(x2)[:, :3])
    assert not torch.allclose(blk(x)[:, 3:], blk(x2)[:, 3:])


def test_film_starts_as_identity_and_condition_embedding_classes():
    f = FiLM(3, 5)
    h = torch.randn(2, 5, 4)
    torch.testing.assert_close(f(h, torch.randn(2, 3)), h, atol=0.2, rtol=0.1)
    assert not torch.equal(f(h, torch.randn(2, 3)), h)
    emb = ConditionEmbedding(1, 6, hidden_dim=8, n_classes=2)
    c = torch.rand(4, 1)
    a = emb(c, torch.tensor([0, 0, 1, 1]))
    b = emb(c, torch.tensor([1, 1, 0, 0]))
    assert a.shape == (4, 6) and not torch.allclose(a, b)
    assert MLP(3, 2, 8, 2)(torch.randn(5, 3)).shape == (5, 2)
    assert "MLP" in cnn.__all__
