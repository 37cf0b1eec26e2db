"""EDM samplers (Heun, Euler, stochastic churn) and consistency sampling on distributions
with known answers: Gaussian mixtures with their exact denoisers, and a Gaussian with its
exact probability-flow map."""

import math

import pytest
import torch
from scipy import stats

from caloforge.errors import ConfigError
from caloforge.sampling import (
    EDMSampler,
    consistency_levels,
    consistency_sample,
    edm_sample,
    karras_sigmas,
    parse_edm_sampler,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def mixture_denoiser(weights, means, stds):
    """The exact denoiser E[x0 | x] of a mixture of isotropic Gaussians in d dimensions.

    Under noise sigma, component k becomes N(mu_k, (std_k^2 + sigma^2) I); its posterior
    weight r_k(x) follows from Bayes, and within a component E[x0 | x, k] =
    mu_k + std_k^2 / (std_k^2 + sigma^2) (x - mu_k). weights (K,), means (K, d), stds (K,).
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    mu = torch.as_tensor(means, dtype=torch.float64)
    sd = torch.as_tensor(stds, dtype=torch.float64)

    def denoise(x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        xd, s2 = x.double(), sigma.double()[:, None] ** 2
        var = sd**2 + s2  # (N, K)
        diff = xd[:, None, :] - mu  # (N, K, d)
        logr = (torch.log(w) - 0.5 * diff.square().sum(-1) / var
                - 0.5 * mu.shape[1] * torch.log(var))
        r = torch.softmax(logr, dim=1)
        comp = mu + (sd**2 / var)[..., None] * diff
        return (r[..., None] * comp).sum(1).to(x.dtype)

    return denoise


# the 1-D mixture and a wrong one (weights swapped)
W1, MU1, SD1 = [0.3, 0.7], [[-1.2], [1.0]], [0.5, 0.5]
WRONG1 = [0.7, 0.3]
DEN1 = mixture_denoiser(W1, MU1, SD1)


def mixture_cdf(weights):
    return lambda v: sum(w * stats.norm.cdf(v, loc=m[0], scale=s)
                         for w, m, s in zip(weights, MU1, SD1))


def noise(n, d=1, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------- schedule
def test_karras_sigmas_endpoints_monotonicity_and_length():
    s = karras_sigmas(13)
    assert s.shape == (14,) and s.dtype == torch.float64
    assert s[0].item() == 80.0 and s[-2].item() == 0.002 and s[-1].item() == 0.0
    assert (s[1:] < s[:-1]).all()
    # the Karras et al. schedule at i = 6 of 13: (80^(1/7) + 6/12 (0.002^(1/7) - 80^(1/7)))^7
    hand = (80 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[6].item() == pytest.approx(hand, rel=1e-12)
    assert karras_sigmas(1).tolist() == [80.0, 0.0]
    t = karras_sigmas(5, 0.01, 10.0, rho=3.0, dtype=torch.float32)
    assert t.dtype == torch.float32 and t[0].item() == 10.0
    assert t[-2].item() == pytest.approx(0.01)
    for bad in (dict(n_levels=0), dict(n_levels=5, sigma_min=0.0),
                dict(n_levels=5, sigma_min=90.0), dict(n_levels=5, rho=0.0)):
        with pytest.raises(ConfigError):
            karras_sigmas(**bad)


# --------------------------------------------------------------------- counting calls
def counting(fn):
    calls = []

    def wrapped(x, sigma):
        calls.append(sigma[0].item())
        return fn(x, sigma)

    return wrapped, calls


@pytest.mark.parametrize("name,nfe", [("heun-13", 25), ("euler-25", 25), ("heun-1", 1),
                                      ("consistency-1", 1), ("consistency-2", 2)])
def test_network_calls_match_nfe(name, nfe):
    sampler = parse_edm_sampler(name)
    fn, calls = counting(lambda x, s: 0.5 * x)
    out = sampler.sample(fn, noise(3))
    assert sampler.nfe == nfe and len(calls) == nfe and sampler.name == name
    assert out.shape == (3, 1)
    if name == "heun-13":
        # a Heun pair (start, end of the step) for each of the 12 steps between the 13
        # levels, then a single Euler call at sigma_min for the step to 0
        lv = karras_sigmas(13).tolist()
        expected = [v for i in range(12) for v in (lv[i], lv[i + 1])] + [0.002]
        assert calls == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------- 1-D mixture
def test_heun_with_the_exact_denoiser_recovers_a_1d_mixture():
    """Deterministic Heun (32 levels) from the exact denoiser: KS test against the true
    mixture CDF passes, the same test against the mixture with swapped weights fails."""
    x = edm_sample(DEN1, noise(4000), karras_sigmas(32))[:, 0].numpy()
    assert stats.kstest(x, mixture_cdf(W1)).pvalue > 0.01
    assert stats.kstest(x, mixture_cdf(WRONG1)).pvalue < 1e-6


def test_heun_13_recovers_the_mixture_moments_and_is_second_order():
    """CaloClouds II's sampler (13 levels, 25 calls): mode weights and mean close to the
    truth; the spread is about 7% too large on this toy (narrow modes that split near
    sigma ~ 1, where the 13-level steps are long), the discretisation error that falls
    about 4x per doubling of levels (Heun, second order), 2x for Euler."""
    z = noise(4000, seed=1)
    x = parse_edm_sampler("heun-13").sample(DEN1, z)[:, 0]

    def summary(v):
        upper = v > -0.1
        return [upper.double().mean().item(), v.mean().item(), v.std().item()]

    truth = [0.7, 0.3 * -1.2 + 0.7 * 1.0]
    truth.append(math.sqrt(0.25 + 0.3 * 1.44 + 0.7 * 1.0 - truth[1] ** 2))
    wrong = [0.3, 0.7 * -1.2 + 0.3 * 1.0]
    got = summary(x)
    assert got[:2] == pytest.approx(truth[:2], abs=0.03)
    assert got[2] == pytest.approx(truth[2], rel=0.1)
    assert got[0] != pytest.approx(wrong[0], abs=0.03)
    assert got[1] != pytest.approx(wrong[1], abs=0.03)

    z = noise(500, seed=2)
    ref = edm_sample(DEN1, z, karras_sigmas(400))
    err = {(m, n): (edm_sample(DEN1, z, karras_sigmas(n), method=m) - ref).abs().mean().item()
           for m in ("heun", "euler") for n in (25, 50)}
    assert 3.0 < err["heun", 25] / err["heun", 50] < 6.0
    assert 1.6 < err["euler", 25] / err["euler", 50] < 2.5


def test_stochastic_churn_sampler_recovers_the_mixture_and_honours_the_generator():
    sampler = parse_edm_sampler("heun-50", s_churn=40.0)
    z = noise(4000, seed=3)
    x = sampler.sample(DEN1, z, generator=torch.Generator().manual_seed(4))
    assert stats.kstest(x[:, 0].numpy(), mixture_cdf(W1)).pvalue > 0.01
    assert stats.kstest(x[:, 0].numpy(), mixture_cdf(WRONG1)).pvalue < 1e-6
    # the churn noise comes from the generator: same seed, same samples; else different
    again = sampler.sample(DEN1, z, generator=torch.Generator().manual_seed(4))
    other = sampler.sample(DEN1, z, generator=torch.Generator().manual_seed(5))
    deterministic = parse_edm_sampler("heun-50").sample(DEN1, z)
    assert torch.equal(x, again)
    assert not torch.allclose(x, other) and not torch.allclose(x, deterministic)
    # churn only inside [s_tmin, s_tmax]: an empty window is the deterministic sampler
    none = edm_sample(DEN1, z, karras_sigmas(50), s_churn=40.0, s_tmin=100.0, s_tmax=200.0,
                      generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(none, deterministic)


# --------------------------------------------------------------------- 2-D mixture
W2 = [0.2, 0.5, 0.3]
MU2 = [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]]
SD2 = [0.4, 0.3, 0.5]


def mixture_matches(x, weights, n_se=4.0, mean_tol=0.06):
    """Do samples x (N, 2) match the 2-D mixture with these weights? Each sample goes to
    its nearest component mean (the components are far apart); the fractions must match
    the weights within n_se binomial standard errors and the component means and standard
    deviations the truth within mean_tol."""
    mu = torch.tensor(MU2, dtype=x.dtype)
    k = torch.cdist(x, mu).argmin(1)
    n = x.shape[0]
    for j, w in enumerate(weights):
        frac = (k == j).double().mean().item()
        if abs(frac - w) > n_se * math.sqrt(w * (1 - w) / n):
            return False
        pts = x[k == j]
        if (pts.mean(0) - mu[j]).abs().max() > mean_tol:
            return False
        if (pts.std(0) - SD2[j]).abs().max() > mean_tol:
            return False
    return True


def test_heun_with_the_exact_denoiser_recovers_a_2d_mixture():
    den = mixture_denoiser(W2, MU2, SD2)
    z = noise(3000, d=2, seed=6, dtype=torch.float32)
    x = parse_edm_sampler("heun-32").sample(den, z)
    assert x.dtype == torch.float32 and x.shape == (3000, 2)  # the noise's dtype
    assert mixture_matches(x.double(), W2)
    assert not mixture_matches(x.double(), [0.5, 0.2, 0.3])
    # the stochastic sampler too
    x = parse_edm_sampler("heun-50", s_churn=40.0).sample(
        den, z, generator=torch.Generator().manual_seed(7))
    assert mixture_matches(x.double(), W2)
    # a sampler fed the wrong mixture's denoiser produces samples that fail the check
    x = parse_edm_sampler("heun-32").sample(mixture_denoiser([0.5, 0.2, 0.3], MU2, SD2), z)
    assert not mixture_matches(x.double(), W2)


# --------------------------------------------------------------------- consistency
M, V = 0.5, 0.25


def gaussian_flow_map(mean, var):
    """The probability-flow map of N(mean, var) data from level sigma to 0: affine,
    x0 = mean + (x - mean) sqrt(var) / sqrt(var + sigma^2)."""

    def fn(x, sigma):
        s2 = sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2
        return mean + (x - mean) * math.sqrt(var) / torch.sqrt(var + s2)

    return fn


def test_one_step_consistency_sampling_with_the_exact_flow_map():
    z = noise(4000, seed=8)
    cdf = stats.norm(M, math.sqrt(V)).cdf
    one = parse_edm_sampler("consistency-1")
    fn, calls = counting(gaussian_flow_map(M, V))
    x = one.sample(fn, z)
    assert calls == [80.0]
    assert stats.kstest(x[:, 0].numpy(), cdf).pvalue > 0.01
    # a flow map for the wrong variance gives the wrong distribution
    wrong = one.sample(gaussian_flow_map(M, 0.4), z)
    assert stats.kstest(wrong[:, 0].numpy(), cdf).pvalue < 1e-6
    # multi-step: re-noised and mapped again, still the right distribution
    two = parse_edm_sampler("consistency-2")
    x2 = two.sample(gaussian_flow_map(M, V), z, generator=torch.Generator().manual_seed(9))
    assert stats.kstest(x2[:, 0].numpy(), cdf).pvalue > 0.01
    again = two.sample(gaussian_flow_map(M, V), z, generator=torch.Generator().manual_seed(9))
    assert torch.equal(x2, again) and not torch.equal(x2, x)


def test_consistency_sample_renoises_to_the_given_levels():
    # f = identity on x: the output is sigma_0 z0 + sqrt(s^2 - eps^2) z1 + ...
    z = noise(20_000, seed=10)
    x = consistency_sample(lambda x, s: torch.zeros_like(x), z, [80.0, 3.0],
                           generator=torch.Generator().manual_seed(11))
    assert x.abs().max().item() == 0.0  # f's last output, whatever the noise
    x = consistency_sample(lambda x, s: x, z, [2.0, 1.0], sigma_min=0.5,
                           generator=torch.Generator().manual_seed(11))
    assert x.var().item() == pytest.approx(4.0 + 1.0 - 0.25, rel=0.03)
    for bad in ([1.0, 2.0], [0.001], []):
        with pytest.raises(ValueError):
            consistency_sample(lambda x, s: x, z, bad)


def test_consistency_levels():
    assert consistency_levels(1).tolist() == [80.0]
    lv = consistency_levels(2)
    assert lv[0].item() == 80.0
    assert lv[1].item() == pytest.approx(karras_sigmas(3)[1].item())
    assert lv[1].item() == pytest.approx(2.5, abs=0.05)
    assert (consistency_levels(5) > 0.002).all()


# --------------------------------------------------------------------- names
def test_parse_edm_sampler_names_and_errors():
    s = parse_edm_sampler(" Heun-13 ")
    assert s == EDMSampler("heun", 13) and (s.name, s.nfe) == ("heun-13", 25)
    assert parse_edm_sampler("euler-40").nfe == 40
    assert parse_edm_sampler("consistency-2").sigmas().shape == (2,)
    assert parse_edm_sampler("heun-13", rho=5.0, s_churn=1.0).rho == 5.0
    assert parse_edm_sampler(s) is s
    for bad in ("rk4-10", "heun", "heun-0", "consistency-x", "em-200", ""):
        with pytest.raises(ConfigError, match="heun-N|n_steps"):
            parse_edm_sampler(bad)
    with pytest.raises(ConfigError, match="options"):
        parse_edm_sampler("heun-13", sigma=1.0)
    with pytest.raises(ConfigError):
        EDMSampler("consistency", 1, s_churn=1.0)
    with pytest.raises(ConfigError):
        EDMSampler("heun", 13, sigma_min=100.0)


def test_edm_sample_rejects_bad_schedules():
    z = noise(2)
    for bad in ([80.0], [1.0, 2.0, 0.0], [1.0, -1.0], [0.0, 0.0], [1.0, 0.0, 0.0]):
        with pytest.raises(ValueError):
            edm_sample(DEN1, z, torch.tensor(bad))
    with pytest.raises(ConfigError):
        edm_sample(DEN1, z, karras_sigmas(3), method="rk4")
