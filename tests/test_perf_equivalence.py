"""The fast inference paths compute what the reference computations compute.

Each optimisation (matrix resampling, fused norm/FiLM/SiLU, chunked decoding, pre-drawn
uniforms in token sampling) is compared with a plain implementation of the same function.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from caloforge.models import GPT, CylindricalVQVAE, GPTConfig, VQVAEConfig
from caloforge.models.autoencoders import Resample2d
from caloforge.models.autoencoders.vqvae_cylindrical import linear_interp_matrix
from caloforge.nn import ResidualBlock, fft_resample
from caloforge.nn.blocks import norm_film_silu
from caloforge.sampling import sample_tokens
from caloforge.sampling.tokens import draw_categorical, filter_logits


def _reference_resample(x: torch.Tensor, z_out: int, a_out: int) -> torch.Tensor:
    n, c, z, a = x.shape
    if z != z_out:
        h = x.permute(0, 3, 1, 2).reshape(n * a, c, z)
        h = F.interpolate(h, size=z_out, mode="linear", align_corners=True)
        x = h.reshape(n, a, c, z_out).permute(0, 2, 3, 1)
    return fft_resample(x, a_out, -1)


@pytest.mark.parametrize(
    "z_in,a_in,z_out,a_out",
    [(17, 4, 23, 8), (23, 8, 45, 16), (45, 16, 23, 8), (23, 26, 45, 50), (45, 16, 45, 8), (9, 5, 9, 5)],
)
def test_resample_matrices_equal_interpolation_and_fft(z_in, a_in, z_out, a_out):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, z_in, a_in, generator=g, dtype=torch.float64)
    r = Resample2d(z_out, a_out, a_in)
    torch.testing.assert_close(r(x), _reference_resample(x, z_out, a_out), rtol=1e-12, atol=1e-12)
    x32 = x.float()
    torch.testing.assert_close(r(x32), _reference_resample(x32, z_out, a_out), rtol=1e-5, atol=1e-5)


def test_resample_uses_both_matrix_forms_for_ds2():
    x = torch.randn(1, 2, 17, 4)
    up1, up0 = Resample2d(23, 8, 4), Resample2d(45, 16, 8)
    assert up1._matrices(17, x)[0] == "kron"
    assert up0._matrices(23, x)[0] == "sep"


def test_linear_interp_matrix_rows_are_interpolation_weights():
    m = linear_interp_matrix(17, 23)
    assert m.shape == (23, 17)
    torch.testing.assert_close(m.sum(1), torch.ones(23, dtype=torch.float64))
    assert ((m != 0).sum(1) <= 2).all()


def test_resample_gradient_matches_reference():
    x = torch.randn(2, 3, 17, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 23, 8, dtype=torch.float64)
    (Resample2d(23, 8, 4)(x) * w).sum().backward()
    g_fast = x.grad.clone()
    x.grad = None
    (_reference_resample(x, 23, 8) * w).sum().backward()
    torch.testing.assert_close(g_fast, x.grad)


@pytest.mark.parametrize("cond_dim", [0, 4])
def test_norm_film_silu_equals_module_chain(cond_dim):
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(8, 32, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(4, 32, 5, 6)
    if cond_dim:
        mul, shift = 1 + 0.3 * torch.randn(4, 32), torch.randn(4, 32)
        ref = F.silu(norm(x) * mul[..., None, None] + shift[..., None, None])
        got = norm_film_silu(x, norm, (mul, shift))
    else:
        ref = F.silu(norm(x))
        got = norm_film_silu(x, norm)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,cout,cond_dim", [(16, 16, 3), (16, 32, 3), (16, 16, 0)])
def test_residual_block_inference_path_equals_training_path(cin, cout, cond_dim):
    torch.manual_seed(0)
    blk = ResidualBlock(cin, cout, cond_dim, 2, 3).eval()
    for p in blk.parameters():  # move away from the near-identity initialisation
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, cin, 7, 8)
    c = torch.randn(3, cond_dim) if cond_dim else None
    ref = blk(x, c)  # grad enabled: the reference path
    with torch.no_grad():
        fast = blk(x, c)
    with torch.inference_mode():
        fast2 = blk(x, c)
    torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast2, ref.detach(), rtol=1e-5, atol=1e-5)


def _small_vqvae() -> CylindricalVQVAE:
    cfg = VQVAEConfig(
        channels=(16, 32), resolutions=((23, 8), (17, 4)), vq_dim=8, n_codes=32, cond_hidden_dim=8
    )
    torch.manual_seed(0)
    model = CylindricalVQVAE(cfg).eval()
    for m in model.modules():  # FiLM starts tiny; make the condition matter
        if m.__class__.__name__ == "FiLM":
            torch.nn.init.normal_(m.proj.weight, std=0.5)
    return model


@pytest.mark.parametrize("normalisation", ["global", "layer"])
def test_chunked_fused_decoding_equals_reference(normalisation):
    model = _small_vqvae()
    model.config.normalisation = normalisation
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 32, (11, 68), generator=g)
    cond = torch.rand(11, 1, generator=g)
    ref = model.decode_indices(codes, cond).detach()  # grad enabled: no fusion, no chunks
    model.inference_chunk_size = 4
    with torch.inference_mode():
        chunked = model.decode_indices(codes, cond)
    model.inference_chunk_size = None
    with torch.inference_mode():
        whole = model.decode_indices(codes, cond)
    torch.testing.assert_close(chunked, ref, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-9)


def test_inference_encoder_equals_reference():
    model = _small_vqvae()
    x = torch.randn(5, 9, 45, 16)
    cond = torch.rand(5, 1)
    ref = model.encode(x, cond).detach()
    with torch.no_grad():
        fast = model.encode(x, cond)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_train_mode_takes_reference_path_under_no_grad():
    model = _small_vqvae().train()
    codes = torch.randint(0, 32, (3, 68))
    cond = torch.rand(3, 1)
    with torch.no_grad():
        a = model.decode_indices(codes, cond)
    b = model.decode_indices(codes, cond).detach()
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------- token sampling
def _reference_sample(model, cond, generator, total, prefix=None, temperature=1.0, top_k=None):
    """The step-by-step sampler: whole batch, one (N, 1) draw per step, cat per step."""
    n = cond.shape[0]
    tokens = torch.zeros(n, 0, dtype=torch.long) if prefix is None else prefix.clone()
    cache = model.new_cache()
    while tokens.shape[1] < total:
        logits = model.next_token_logits(tokens, cond, cache=cache)
        probs = torch.softmax(filter_logits(logits.float(), temperature, top_k), dim=-1)
        tokens = torch.cat([tokens, draw_categorical(probs, generator)], dim=1)
    return tokens


def _small_gpt(dtype=torch.float32) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=12, n_layers=2, n_heads=2, d_model=16)).eval()
    for p in model.parameters():  # peaked distributions, so that rows differ
        torch.nn.init.normal_(p, std=0.5)
    return model.to(dtype)


def test_uniform_draw_order_matches_step_by_step_draws():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    step_by_step = torch.cat([torch.rand(7, 1, generator=g1) for _ in range(12)], dim=1)
    at_once = torch.rand(12, 7, generator=g2).t()
    assert torch.equal(step_by_step, at_once)
    assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize("prefix_len,top_k,temperature", [(0, None, 1.0), (3, 5, 0.7)])
def test_sample_tokens_equals_step_by_step_reference(prefix_len, top_k, temperature):
    model = _small_gpt()
    cond = torch.rand(9, 1, generator=torch.Generator().manual_seed(2))
    prefix = torch.randint(0, 64, (9, prefix_len), generator=torch.Generator().manual_seed(4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.inference_mode():
        got = sample_tokens(
            model, cond, generator=g1, prefix=prefix if prefix_len else None,
            top_k=top_k, temperature=temperature,
        )
        ref = _reference_sample(
            model, cond, g2, 12, prefix if prefix_len else None, temperature, top_k
        )
    assert torch.equal(got, ref)
    assert torch.equal(g1.get_state(), g2.get_state())  # same numbers consumed


@pytest.mark.parametrize("chunk_size", [1, 4, 9, 100])
def test_sample_tokens_chunks_give_same_tokens(chunk_size):
    # float64 logits: rounding differences between batch sizes cannot move a draw
    model = _small_gpt(torch.float64)
    cond = torch.rand(9, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.inference_mode():
        ref = sample_tokens(model, cond, generator=torch.Generator().manual_seed(5))
        got = sample_tokens(
            model, cond, generator=torch.Generator().manual_seed(5), chunk_size=chunk_size
        )
    assert torch.equal(got, ref)


def test_gpt_single_step_path_equals_general_path():
    model = _small_gpt()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 64, (5, 11), generator=g)
    cond = torch.rand(5, 1, generator=g)
    full = model(torch.cat([tokens, tokens[:, :1]], 1), cond).detach()  # teacher forcing
    cache = model.new_cache()
    with torch.inference_mode():
        for t in range(12):
            got = model.next_token_logits(tokens[:, :t], cond, cache=cache)
            torch.testing.assert_close(got, full[:, t], rtol=1e-5, atol=1e-5)
