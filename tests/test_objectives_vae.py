"""The VAE objective (CaloDREAM Eq. 12/22): known values, reductions, and training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from caloforge.errors import ConfigError
from caloforge.models import ConvVAE3d, VAEConfig
from caloforge.objectives import VAEObjective, gaussian_kl

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


class _FixedVAE(nn.Module):
    """Posterior and decoder given by hand: logits = r @ W (latent (2,), data (3,))."""

    def __init__(self, mu, logvar, w):
        super().__init__()
        self.mu, self.logvar, self.w = mu, logvar, w

    def encode_distribution(self, x, cond):
        return self.mu, self.logvar

    def decode_logits(self, r, cond):
        return r @ self.w


def _hand(x, mu, logvar, w, eps, beta, reduction):
    """The loss with Python floats and explicit loops."""
    n, d_x, d_r = len(x), len(x[0]), len(mu[0])
    rec = kl = 0.0
    for i in range(n):
        r = [mu[i][j] + math.exp(0.5 * logvar[i][j]) * eps[i][j] for j in range(d_r)]
        for k in range(d_x):
            p = 1.0 / (1.0 + math.exp(-sum(r[j] * w[j][k] for j in range(d_r))))
            rec -= x[i][k] * math.log(p) + (1 - x[i][k]) * math.log(1 - p)
        for j in range(d_r):
            kl += 0.5 * (mu[i][j] ** 2 + math.exp(logvar[i][j]) - 1 - logvar[i][j])
    if reduction == "mean":
        rec, kl = rec / (n * d_x), kl / (n * d_r)
    else:
        rec, kl = rec / n, kl / n
    return rec + beta * kl, rec, kl


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_objective_equals_hand_computation(reduction):
    x = torch.tensor([[0.0, 0.25, 1.0], [0.5, 0.1, 0.4]], dtype=torch.float64)
    mu = torch.tensor([[0.3, -1.2], [2.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.7], [0.0, -2.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.5]], dtype=torch.float64)
    model = _FixedVAE(mu, logvar, w)
    obj = VAEObjective(beta=0.3, reduction=reduction)
    torch.manual_seed(11)
    terms = obj(model, {"x": x, "cond": torch.zeros(2, 1)})
    torch.manual_seed(11)
    eps = torch.randn_like(mu)  # the objective's single posterior draw
    want = _hand(x.tolist(), mu.tolist(), logvar.tolist(), w.tolist(), eps.tolist(), 0.3, reduction)
    got = (terms["loss"].item(), terms["rec"].item(), terms["kl"].item())
    assert got == pytest.approx(want, rel=1e-12)


def test_gaussian_kl_known_values_and_gaussian_likelihood():
    mu = torch.tensor([0.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, 0.0, math.log(2.0), -1.0], dtype=torch.float64)
    want = [0.0, 0.5, 0.5 * (1.0 - math.log(2.0)), 0.5 * (4.0 + math.exp(-1.0))]
    assert gaussian_kl(mu, logvar).tolist() == pytest.approx(want, rel=1e-14)
    # Gaussian likelihood: (x - sigmoid(logit))^2 / (2 sigma^2)
    obj = VAEObjective(likelihood="gaussian", sigma=0.5)
    x = torch.tensor([[0.2, 0.9]], dtype=torch.float64)
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # p = 0.5, 0.75
    want_rec = ((0.2 - 0.5) ** 2 + (0.9 - 0.75) ** 2) / (2 * 0.25) / 2
    assert obj.reconstruction(x, logits).item() == pytest.approx(want_rec, rel=1e-14)


def test_bce_from_logits_stays_finite_where_the_sigmoid_saturates():
    obj = VAEObjective()
    x = torch.tensor([[1.0, 0.0, 0.3]])
    logits = torch.tensor([[-200.0, 200.0, 60.0]])  # sigmoid is exactly 0, 1, 1 in float32
    rec = obj.reconstruction(x, logits)
    assert torch.isfinite(rec)
    assert rec.item() == pytest.approx((200.0 + 200.0 + 0.7 * 60.0) / 3, rel=1e-5)


def test_sum_and_mean_reductions_differ_by_the_dimensions():
    torch.manual_seed(0)
    cfg = VAEConfig(
        data_shape=(6, 4, 5),
        channels=(4,),
        kernels=((3, 2, 1),),
        strides=((3, 2, 1),),
        paddings=((0, 1, 0),),
        cond_in_dim=2,
        cond_dim=4,
    )
    m = ConvVAE3d(cfg)
    batch = {"x": torch.rand(3, 1, 6, 4, 5), "cond": torch.rand(3, 2)}
    torch.manual_seed(1)
    a = VAEObjective(reduction="mean")(m, batch)
    torch.manual_seed(1)
    b = VAEObjective(reduction="sum")(m, batch)
    torch.testing.assert_close(b["rec"], a["rec"] * 6 * 4 * 5)
    torch.testing.assert_close(b["kl"], a["kl"] * math.prod(cfg.latent_shape))


def test_config_errors():
    with pytest.raises(ConfigError):
        VAEObjective(likelihood="poisson")
    with pytest.raises(ConfigError):
        VAEObjective(reduction="none")
    with pytest.raises(ConfigError):
        VAEObjective(beta=-1.0)
    with pytest.raises(ConfigError):
        VAEObjective(likelihood="gaussian", sigma=0.0)


def _toy(n: int = 32):
    """Layer-normalised showers with an exponential radial profile of random width."""
    g = torch.Generator().manual_seed(0)
    width = 0.5 + 2.0 * torch.rand(n, 1, 1, 1, generator=g)
    prof = torch.exp(-torch.arange(5.0) / width).expand(n, 6, 4, 5)
    x = prof * (1 + 0.1 * torch.rand(n, 6, 4, 5, generator=g))
    x = x / x.sum((2, 3), keepdim=True)  # each layer sums to 1
    return x[:, None], width.reshape(n, 1).repeat(1, 3)


def _train(beta: float, steps: int = 60):
    torch.manual_seed(0)  # same initial network for every beta
    cfg = VAEConfig(
        data_shape=(6, 4, 5),
        channels=(8,),
        kernels=((3, 2, 1),),
        strides=((3, 2, 1),),
        paddings=((0, 1, 0),),
        cond_in_dim=3,
        cond_dim=8,
        cond_hidden_dim=8,
    )
    m = ConvVAE3d(cfg)
    x, cond = _toy()
    obj = VAEObjective(beta=beta)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    history = []
    for _ in range(steps):
        terms = obj(m, {"x": x, "cond": cond})
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    with torch.no_grad():
        mu, logvar = m.encode_distribution(x, cond)
    return history, mu, logvar, x


def test_loss_falls_and_kl_weight_pulls_the_posterior_towards_the_prior():
    hist_big, mu_big, lv_big, x = _train(beta=1.0)
    hist_small, mu_small, lv_small, _ = _train(beta=1e-6)
    # the BCE of soft targets cannot go below their entropy: compare the excess over it
    floor = (-(x * x.log() + (1 - x) * (1 - x).log())).mean().item()
    first, last = hist_small[0]["rec"] - floor, hist_small[-1]["rec"] - floor
    assert last < 0.1 * first, (first, last)
    assert hist_small[-1]["loss"] < 0.5 * hist_small[0]["loss"]
    # large beta: posterior close to N(0, 1) (tiny KL, sigma ~ 1, mu ~ 0); tiny beta: the
    # encoder spreads the means and shrinks sigma to carry information
    assert hist_big[-1]["kl"] < 0.01 * hist_small[-1]["kl"]
    assert mu_big.abs().mean() < 0.2 * mu_small.abs().mean()
    assert (lv_big.exp().mean() - 1).abs() < (lv_small.exp().mean() - 1).abs()
