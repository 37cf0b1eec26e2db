"""Next-token objective: a tiny GPT learns a token distribution of known entropy."""

import math

import pytest
import torch

from caloforge.models import GPT, GPTConfig
from caloforge.objectives import NextTokenObjective, next_token_cross_entropy

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_cross_entropy_of_uniform_logits():
    logits = torch.zeros(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    torch.testing.assert_close(next_token_cross_entropy(logits, tokens), torch.tensor(math.log(7)))


def make_sequences(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token 0 uniform over 4 values when cond < 0.5, over {4..7} otherwise; token t is
    token 0 + t (deterministic). Entropy per token: ln 4 / L."""
    cond = torch.rand(n, 1, generator=gen)
    first = torch.randint(0, 4, (n, 1), generator=gen) + 4 * (cond >= 0.5).long()
    return (first + torch.arange(6)[None, :]) % 16, cond


def test_tiny_gpt_loss_falls_to_the_known_entropy():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, seq_len=6, n_layers=1, n_heads=2, d_model=32, dropout=0.0))
    obj = NextTokenObjective(n_r_tokens=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    entropy = math.log(4) / 6
    tokens, cond = make_sequences(256, gen)
    with torch.no_grad():
        first = float(obj(model, {"tokens": tokens, "cond": cond})["loss"])
    assert first > 2.0  # about ln 16 at the start
    for _ in range(150):
        tokens, cond = make_sequences(128, gen)
        out = obj(model, {"tokens": tokens, "cond": cond})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    tokens, cond = make_sequences(1024, gen)
    with torch.no_grad():
        out = obj(model, {"tokens": tokens, "cond": cond})
    assert float(out["loss"]) < entropy + 0.08
    assert float(out["loss"]) > entropy - 0.05  # cannot beat the entropy (up to noise)
    # the first token carries the entropy (ln 4); the rest are deterministic
    assert abs(float(out["loss_r"]) - math.log(4)) < 0.15
    assert float(out["loss_codes"]) < 0.05
