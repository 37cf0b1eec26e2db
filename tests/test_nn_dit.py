"""Time embeddings and adaLN-Zero DiT blocks."""

import math

import pytest
import torch

from caloforge.nn import (
    DiTBlock,
    DiTFinalLayer,
    GaussianFourierEmbedding,
    SinusoidalTimeEmbedding,
    TimestepEmbedder,
    modulate,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(module, std=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


# ------------------------------------------------------------------ embeddings


def test_sinusoidal_embedding_known_values_and_shapes():
    emb = SinusoidalTimeEmbedding(8, max_period=10000.0, t_scale=1000.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    out = emb.double()(t)
    assert out.shape == (3, 8)
    torch.testing.assert_close(emb(t[:, None]), out)  # (N, 1) is the same as (N,)
    # t = 0: cos half 1, sin half 0
    torch.testing.assert_close(out[0], torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64))
    # feature k of each half: frequency 10000^(-k/4) on 1000 t
    for k in range(4):
        angle = 1000.0 * 0.25 * 10000.0 ** (-k / 4)
        assert out[1, k].item() == pytest.approx(math.cos(angle), abs=1e-9)
        assert out[1, 4 + k].item() == pytest.approx(math.sin(angle), abs=1e-9)
    with pytest.raises(ValueError):
        SinusoidalTimeEmbedding(7)
    with pytest.raises(ValueError):
        emb(torch.zeros(2, 3))


def test_gaussian_fourier_embedding_uses_its_stored_frequencies():
    torch.manual_seed(0)
    emb = GaussianFourierEmbedding(6, scale=30.0)
    assert emb.w.shape == (3,) and "w" in emb.state_dict()  # saved with the weights
    t = torch.tensor([0.0, 0.1])
    out = emb(t)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    angle = 2 * math.pi * 0.1 * emb.w
    expected = torch.cat([torch.sin(angle), torch.cos(angle)])
    torch.testing.assert_close(out[1], expected)
    # frequencies are N(0, scale^2): with 2000 draws the std is 30 within a few per cent
    big = GaussianFourierEmbedding(4000, scale=30.0)
    assert abs(big.w.std().item() - 30.0) < 2.0


def test_timestep_embedder_shape_and_time_dependence():
    torch.manual_seed(1)
    emb = TimestepEmbedder(16, freq_dim=32)
    out = emb(torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 16)
    assert not torch.allclose(out[0], out[1])


# ------------------------------------------------------------------ DiT blocks


def test_modulate_known_answer():
    x = torch.ones(2, 3, 4)
    shift = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 2.0]])
    scale = torch.tensor([[0.0, 1.0, 0, 0], [-1.0, 0, 0, 0]])
    out = modulate(x, shift, scale)
    torch.testing.assert_close(out[0, :, 0], torch.full((3,), 2.0))
    torch.testing.assert_close(out[0, :, 1], torch.full((3,), 2.0))
    torch.testing.assert_close(out[1, :, 0], torch.zeros(3))
    torch.testing.assert_close(out[1, :, 3], torch.full((3,), 3.0))


def test_dit_block_is_exactly_the_identity_at_initialisation():
    torch.manual_seed(2)
    blk = DiTBlock(16, 4, 32)
    x, c = torch.randn(3, 7, 16), torch.randn(3, 16)
    assert torch.equal(blk(x, c), x)
    final = DiTFinalLayer(16, 5)
    assert torch.equal(final(x, c), torch.zeros(3, 7, 5))


def test_dit_block_matches_equation_11_once_gates_are_open():
    torch.manual_seed(3)
    blk = DiTBlock(8, 2, 16).double()
    _perturb(blk)
    x, c = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    # reference written with separate torch ops, heads by hand
    ada = torch.nn.functional.silu(c) @ blk.adaln.weight.T + blk.adaln.bias
    sa, ca, ga, sm, cm, gm = ada.chunk(6, -1)

    def ln(h):
        var = h.var(-1, unbiased=False, keepdim=True)
        return (h - h.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-6)

    h = ln(x) * (1 + ca[:, None]) + sa[:, None]
    q, k, v = (h @ blk.qkv.weight.T + blk.qkv.bias).chunk(3, -1)
    heads = []
    for i in range(2):
        sl = slice(4 * i, 4 * i + 4)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)
        heads.append(w @ v[..., sl])
    attn = torch.cat(heads, -1) @ blk.proj.weight.T + blk.proj.bias
    x1 = x + ga[:, None] * attn
    h = ln(x1) * (1 + cm[:, None]) + sm[:, None]
    mlp = torch.nn.functional.gelu(h @ blk.fc1.weight.T + blk.fc1.bias, approximate="tanh")
    x2 = x1 + gm[:, None] * (mlp @ blk.fc2.weight.T + blk.fc2.bias)
    torch.testing.assert_close(blk(x, c), x2)


def test_dit_block_attends_to_all_tokens_and_is_permutation_equivariant():
    torch.manual_seed(4)
    blk = DiTBlock(8, 2, 16).double()
    _perturb(blk)
    x, c = torch.randn(2, 6, 8, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    y = blk(x, c)
    # no mask: changing the last token changes the first token's output (not by a constant
    # over features, which the LayerNorm would remove)
    x2 = x.clone()
    x2[:, -1] += torch.randn(8, dtype=torch.float64)
    assert not torch.allclose(blk(x2, c)[:, 0], y[:, 0])
    # no positions inside the block: permuting tokens permutes outputs
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(blk(x[:, perm], c), y[:, perm])
    # the condition reaches the output
    assert not torch.allclose(blk(x, c + 1.0), y)


def test_dit_final_layer_has_no_gate():
    torch.manual_seed(5)
    final = DiTFinalLayer(8, 3)
    _perturb(final)
    x, c = torch.randn(2, 4, 8), torch.randn(2, 8)
    ada = torch.nn.functional.silu(c) @ final.adaln.weight.T + final.adaln.bias
    shift, scale = ada.chunk(2, -1)
    h = torch.nn.functional.layer_norm(x, (8,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(final(x, c), h @ final.linear.weight.T + final.linear.bias)
