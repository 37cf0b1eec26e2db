"""EDM preconditioning (CaloClouds II Eq. 3.4 with docs/caloclouds.md, A1), the consistency-model boundary
condition, and the EDM denoising loss."""

import math
import time

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.objectives import EDMObjective, edm_denoising_loss
from caloforge.paths import ConsistencyPreconditioning, EDMPreconditioning, ProbabilityPath

PRE = EDMPreconditioning()
SIGMAS = [0.002, 0.1, 0.5, 1.0, 10.0, 80.0]


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def random_net(dim: int, seed: int = 0):
    """An arbitrary (random, untrained) network net(x_in, c_noise) of the EDM signature."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim + 1, 32, generator=g, dtype=torch.float64)
    w2 = torch.randn(32, dim, generator=g, dtype=torch.float64)

    def net(x, c_noise):
        assert c_noise.shape == (x.shape[0],)
        c = c_noise.reshape(-1, *([1] * (x.dim() - 1))).expand(*x.shape[:-1], 1)
        h = torch.tanh(torch.cat([x, c.to(x.dtype)], -1) @ w1.to(x.dtype))
        return 3.0 * h @ w2.to(x.dtype)

    return net


def test_coefficients_by_hand():
    sd = 0.5
    for s in SIGMAS:
        t = torch.tensor(s, dtype=torch.float64)
        assert PRE.c_skip(t).item() == pytest.approx(sd**2 / (sd**2 + s**2), rel=1e-14)
        assert PRE.c_out(t).item() == pytest.approx(s * sd / math.sqrt(sd**2 + s**2), rel=1e-14)
        assert PRE.c_in(t).item() == pytest.approx(1 / math.sqrt(sd**2 + s**2), rel=1e-14)
        assert PRE.c_noise(t).item() == pytest.approx(math.log(s) / 4, rel=1e-14)
        assert PRE.loss_weight(t).item() == pytest.approx((s**2 + sd**2) / (s * sd) ** 2,
                                                          rel=1e-14)
        assert PRE.loss_weight(t).item() == pytest.approx(1 / PRE.c_out(t).item() ** 2, rel=1e-12)
    # a few values written out: sigma = 0.5 gives c_skip 1/2, c_out = c_in^-1 / 4 = sqrt(2)/4
    assert PRE.c_skip(0.5).item() == pytest.approx(0.5)
    assert PRE.c_out(0.5).item() == pytest.approx(math.sqrt(2) / 4)
    assert PRE.c_in(0.5).item() == pytest.approx(math.sqrt(2))
    assert PRE.loss_weight(0.5).item() == pytest.approx(8.0)
    # elementwise on tensors of any shape, floats accepted
    s = torch.tensor([[0.1, 1.0], [10.0, 80.0]])
    assert PRE.c_in(s).shape == (2, 2)
    assert PRE.c_noise(1.0).item() == 0.0


def test_correct_scalings_give_unit_variance_and_the_printed_ones_do_not():
    """EDM's design rule: the network's input c_in (x0 + s n) and its effective target
    (x0 - c_skip x) / c_out have unit variance when std(x0) = sigma_data. The paper's
    printed (swapped) c_in = s sd / sqrt(sd^2 + s^2) fails the same check (docs/caloclouds.md, A1)."""
    g = torch.Generator().manual_seed(0)
    x0 = 0.5 * torch.randn(100_000, generator=g, dtype=torch.float64)
    n = torch.randn(100_000, generator=g, dtype=torch.float64)
    sd = 0.5
    swapped_bad = 0
    # (the swapped input variance is s^2 sd^2, which is 1 only by accident at s = 1/sd = 2)
    for s in (0.05, 0.5, 1.0, 10.0, 80.0):
        t = torch.tensor(s, dtype=torch.float64)
        x = x0 + s * n
        assert (PRE.c_in(t) * x).var().item() == pytest.approx(1.0, abs=0.02)
        target = (x0 - PRE.c_skip(t) * x) / PRE.c_out(t)
        assert target.var().item() == pytest.approx(1.0, abs=0.02)
        swapped_c_in = s * sd / math.sqrt(sd**2 + s**2)
        swapped_bad += abs((swapped_c_in * x).var().item() - 1.0) > 0.1
    assert swapped_bad == 5


def test_denoiser_tends_to_the_identity_as_sigma_goes_to_zero():
    net = random_net(3)
    x = torch.randn(64, 10, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errs = []
    for s in (1e-2, 1e-4, 1e-6):
        errs.append((PRE.denoise(net, x, s) - x).abs().max().item())
    # |D - x| <= (1 - c_skip)|x| + c_out |F| = O(sigma)
    assert errs[0] > 1e-4
    assert errs[1] < errs[0] / 50 and errs[2] < errs[1] / 50 and errs[2] < 1e-4
    # and it is not the identity at a large noise level
    assert (PRE.denoise(net, x, 10.0) - x).abs().max() > 1.0


def test_denoise_takes_scalar_0d_and_per_sample_sigma_and_passes_conditions():
    seen = {}

    def net(x_in, c_noise, *, energy):
        seen["x_in"], seen["c_noise"], seen["energy"] = x_in, c_noise, energy
        return torch.ones_like(x_in)

    x = torch.randn(4, 5, 2)
    e = torch.arange(4.0)
    a = PRE.denoise(net, x, 2.0, energy=e)
    b = PRE.denoise(net, x, torch.tensor(2.0), energy=e)
    c = PRE.denoise(net, x, torch.full((4,), 2.0), energy=e)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert seen["c_noise"].shape == (4,) and seen["c_noise"].dtype == x.dtype
    torch.testing.assert_close(seen["c_noise"], torch.full((4,), math.log(2.0) / 4))
    torch.testing.assert_close(seen["x_in"], x / math.sqrt(4.25))
    assert seen["energy"] is e
    # per-sample levels really are per sample
    s = torch.tensor([0.1, 1.0, 10.0, 80.0])
    d = PRE.denoise(net, x, s, energy=e)
    for i in range(4):
        torch.testing.assert_close(d[i], PRE.denoise(net, x[i : i + 1], s[i], energy=e)[0])
    with pytest.raises(ValueError, match="one noise level per sample"):
        PRE.denoise(net, x, torch.ones(3), energy=e)
    with pytest.raises(ValueError, match="returned shape"):
        PRE.denoise(lambda x, c: x[:, :1], x, 1.0)


def test_path_interface_and_conversions():
    assert isinstance(PRE, ProbabilityPath)
    assert (PRE.t_noise, PRE.t_data, PRE.prediction) == (80.0, 0.002, "data")
    g = torch.Generator().manual_seed(2)
    x0, n = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    s = torch.linspace(0.1, 5, 8)
    x, target = PRE.sample(x0, s, n)
    torch.testing.assert_close(x, x0 + s[:, None] * n)
    assert target is x0
    # the exact denoiser output x0 gives back the noise, the ODE velocity and the score
    torch.testing.assert_close(PRE.to_noise(x, x0, s), n)
    torch.testing.assert_close(PRE.to_velocity(x, x0, s), n)
    torch.testing.assert_close(PRE.to_score(x, x0, s), -n / s[:, None])
    assert PRE.to_data(x, x0, s) is x0


def test_training_noise_levels_are_lognormal_and_reproducible():
    a = PRE.sample_sigma(50_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = PRE.sample_sigma(50_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(a, b) and a.shape == (50_000,) and a.dtype == torch.float64
    assert a.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert a.log().std().item() == pytest.approx(1.2, abs=0.02)
    other = EDMPreconditioning(p_mean=0.0, p_std=0.5).sample_sigma(
        50_000, generator=torch.Generator().manual_seed(3))
    assert other.log().mean().item() == pytest.approx(0.0, abs=0.02)


def test_bad_settings_raise():
    for kw in ({"sigma_data": 0.0}, {"p_std": -1.0}, {"sigma_min": 0.0},
               {"sigma_min": 90.0}, {"sigma_max": 0.001}):
        with pytest.raises(ConfigError):
            EDMPreconditioning(**kw)
        with pytest.raises(ConfigError):
            ConsistencyPreconditioning(**kw)


# ----------------------------------------------------------------------- consistency
def test_consistency_boundary_condition_is_exact():
    cm = ConsistencyPreconditioning()
    net = random_net(4, seed=5)
    for dtype in (torch.float32, torch.float64):
        x = 7.0 * torch.randn(16, 9, 4, generator=torch.Generator().manual_seed(6), dtype=dtype)
        for s in (0.002, torch.tensor(0.002), torch.full((16,), 0.002, dtype=torch.float64),
                  torch.full((16,), 0.002, dtype=torch.float32)):
            assert torch.equal(cm.denoise(net, x, s), x)
        # just above sigma_min it already differs, and EDM's D differs at sigma_min
        assert not torch.equal(cm.denoise(net, x, 0.0021), x)
        assert not torch.equal(PRE.denoise(net, x, 0.002), x)


def test_consistency_coefficients_by_hand():
    cm = ConsistencyPreconditioning()
    sd, eps = 0.5, 0.002
    for s in SIGMAS:
        t = torch.tensor(s, dtype=torch.float64)
        assert cm.c_skip(t).item() == pytest.approx(sd**2 / ((s - eps) ** 2 + sd**2), rel=1e-13)
        assert cm.c_out(t).item() == pytest.approx((s - eps) * sd / math.sqrt(s**2 + sd**2),
                                                   abs=1e-15, rel=1e-13)
        assert cm.c_in(t).item() == pytest.approx(1 / math.sqrt(sd**2 + s**2), rel=1e-14)
        assert cm.c_noise(t).item() == pytest.approx(math.log(s) / 4, rel=1e-14)
    assert cm.c_skip(0.002).item() == 1.0 and cm.c_out(0.002).item() == 0.0
    # far above eps the shift no longer matters
    assert cm.c_skip(80.0).item() == pytest.approx(PRE.c_skip(80.0).item(), rel=1e-4)
    assert cm.c_out(80.0).item() == pytest.approx(PRE.c_out(80.0).item(), rel=1e-4)


# ----------------------------------------------------------------------- the loss
def gaussian_denoiser(mean: float, std: float):
    """The exact denoiser of N(mean, std^2) data: E[x0 | x] under noise sigma."""

    def d(x, sigma):
        s2 = sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2
        return mean + std**2 / (std**2 + s2) * (x - mean)

    return d


def test_loss_of_the_exact_denoiser_is_one_per_element_under_edm_weighting():
    """For data N(0, sd^2), lambda(sigma) times the posterior variance sd^2 s^2/(sd^2+s^2)
    is 1 at every sigma: the EDM-weighted loss of the optimum is exactly 1 on average.
    A denoiser that is wrong by a little (std 0.6 assumed) has a larger loss."""
    x0 = 0.5 * torch.randn(20_000, 4, generator=torch.Generator().manual_seed(7),
                           dtype=torch.float64)
    loss = edm_denoising_loss(gaussian_denoiser(0.0, 0.5), x0, PRE,
                              generator=torch.Generator().manual_seed(8))
    assert loss.item() == pytest.approx(1.0, abs=0.025)  # ~5 standard errors
    wrong = edm_denoising_loss(gaussian_denoiser(0.0, 0.8), x0, PRE,
                               generator=torch.Generator().manual_seed(8))
    assert wrong.item() > 1.07


def mixture_denoiser(x, sigma):
    """The exact denoiser of the 1-D mixture 1/2 N(-0.4, 0.1^2) + 1/2 N(0.4, 0.1^2)."""
    mu, sd = torch.tensor([-0.4, 0.4], dtype=x.dtype), 0.1
    var = sd**2 + sigma[:, None] ** 2
    r = torch.softmax(-0.5 * (x - mu) ** 2 / var, dim=1)
    return (r * (mu + sd**2 / var * (x - mu))).sum(1, keepdim=True)


def test_tiny_mlp_training_lowers_the_loss():
    """300 Adam steps of a small MLP on a 1-D two-peak toy close most of the gap between the
    untrained network's loss and the loss of the exact denoiser (the optimum)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(9)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                              torch.nn.SiLU(), torch.nn.Linear(64, 1))

    def model(x_in, c_noise):
        return net(torch.cat([x_in, c_noise[:, None]], 1))

    def denoise(x, s):
        return PRE.denoise(model, x, s)

    def data(n):
        k = torch.randint(0, 2, (n, 1), generator=g)
        return (k * 1.0 - 0.5) * 0.8 + 0.1 * torch.randn(n, 1, generator=g)

    eval_x = data(4096)

    def eval_loss(d):
        with torch.no_grad():
            return edm_denoising_loss(d, eval_x, PRE,
                                      generator=torch.Generator().manual_seed(10)).item()

    start = time.perf_counter()
    before, optimum = eval_loss(denoise), eval_loss(mixture_denoiser)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    objective = EDMObjective(PRE, generator=g)
    for _ in range(300):
        out = objective(denoise, data(256))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = eval_loss(denoise)
    assert time.perf_counter() - start < 3.0
    assert set(out) == {"loss"}
    assert before - after > 0.6 * (before - optimum), (before, after, optimum)
    assert after > optimum - 0.02  # nothing beats the exact denoiser (up to noise)


def test_mask_excludes_padded_elements():
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(6, 10, 3, generator=g, dtype=torch.float64)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 3, 7, 1, 5, 9])[:, None]
    d = gaussian_denoiser(0.0, 1.0)  # acts per element: padding cannot reach valid points

    def loss(x, m):
        return edm_denoising_loss(d, x, PRE, mask=m, generator=torch.Generator().manual_seed(12))

    padded = x0.clone()
    padded[~mask] = 1e6
    assert loss(x0, mask).item() == pytest.approx(loss(padded, mask).item(), rel=1e-12)
    # without a mask the padded values count (reference behaviour)
    assert loss(padded, None).item() > 10 * loss(x0, None).item()
    # the masked loss is the mean over the valid elements only, counted with features
    sigma = PRE.sample_sigma(6, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(13), dtype=x0.dtype)
    ref_err = PRE.loss_weight(sigma)[:, None, None] * (d(x0 + sigma[:, None, None] * noise, sigma)
                                                       - x0) ** 2
    got = edm_denoising_loss(d, x0, PRE, mask=mask, sigma=sigma, noise=noise)
    assert got.item() == pytest.approx(ref_err[mask].mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="mask"):
        edm_denoising_loss(d, x0, PRE, mask=mask[:, :5])
