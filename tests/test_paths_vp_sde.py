"""The VP-SDE path: closed-form marginals, conversions, and the score-matching objective."""

import math

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.objectives import ScoreMatchingObjective, denoising_score_matching_loss
from caloforge.paths import LinearFlowPath, VPSDEPath
from caloforge.sampling import parse_solver

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


PATH = VPSDEPath()
T = torch.tensor([1e-5, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)


def test_schedule_values_by_hand():
    # B(t) = 0.1 t + 9.95 t^2; alpha(1) = exp(-(0.1 + 9.95) / 2)
    t = torch.tensor(1.0, dtype=torch.float64)
    assert PATH.alpha(t).item() == pytest.approx(math.exp(-5.025), rel=1e-12)
    assert PATH.beta(t).item() == pytest.approx(20.0)
    assert PATH.beta(torch.tensor(0.0)).item() == pytest.approx(0.1)
    # near the data end sigma ~ sqrt(beta_min t): expm1 keeps it accurate
    t = torch.tensor(1e-5, dtype=torch.float64)
    assert PATH.sigma(t).item() == pytest.approx(math.sqrt(0.1 * 1e-5 + 9.95e-10), rel=1e-5)
    assert (PATH.t_noise, PATH.t_data, PATH.prediction) == (1.0, 1e-5, "noise")
    torch.testing.assert_close(PATH.alpha(T) ** 2 + PATH.sigma(T) ** 2, torch.ones_like(T))


def test_marginals_match_the_moment_equations():
    """Closed-form mean and variance against the ODEs the SDE's moments obey:
    dm/dt = -beta m / 2 and dv/dt = -beta v + beta, from m = 1, v = 0 at t = 0."""

    def moments(y, t):
        b = PATH.beta(t)
        return torch.stack([-0.5 * b * y[0], -b * y[1] + b])

    solver = parse_solver("rk4-400")
    for t in T:
        m, v = solver.solve(moments, torch.tensor([1.0, 0.0], dtype=torch.float64), t0=0.0,
                            t1=t.item())
        assert m.item() == pytest.approx(PATH.alpha(t).item(), rel=1e-8, abs=1e-12)
        assert v.item() == pytest.approx(PATH.sigma(t).item() ** 2, rel=1e-7, abs=1e-12)


def test_marginals_match_a_simulation_of_the_forward_sde():
    """Fine Euler-Maruyama of dx = -beta x / 2 dt + sqrt(beta) dW from x0 = 2: the sample
    mean and variance at t agree with alpha(t) x0 and sigma(t)^2 within 5 standard errors."""
    g = torch.Generator().manual_seed(0)
    n, steps, x0 = 20000, 1000, 2.0
    x = torch.full((n,), x0, dtype=torch.float64)
    dt = 1.0 / steps
    checks = {250: 0.25, 500: 0.5, 1000: 1.0}
    for i in range(1, steps + 1):
        t = torch.tensor((i - 0.5) * dt, dtype=torch.float64)  # midpoint beta: smaller bias
        x = x + PATH.drift(x, t) * dt + PATH.diffusion(t, x) * math.sqrt(dt) * torch.randn(
            n, generator=g, dtype=torch.float64)
        if i in checks:
            mean, std = PATH.marginal(torch.tensor([x0], dtype=torch.float64), checks[i])
            var = std.item() ** 2
            assert abs(x.mean().item() - mean.item()) < 5 * math.sqrt(var / n)
            # the variance of a sample variance of a Gaussian is 2 var^2 / (n - 1)
            assert abs(x.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))


def test_sample_is_the_marginal_and_targets_the_noise():
    x0 = torch.randn(5, 3, dtype=torch.float64)
    eps = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    x_t, target = PATH.sample(x0, t, eps)
    mean, std = PATH.marginal(x0, t)
    torch.testing.assert_close(x_t, mean + std * eps)
    assert torch.equal(target, eps)
    s = PATH.sample_time((1000,), generator=torch.Generator().manual_seed(1))
    assert s.min() >= 1e-5 and s.max() <= 1.0 and abs(s.mean().item() - 0.5) < 0.03


def test_conversions_between_noise_score_and_data():
    x0 = torch.randn(6, 4, dtype=torch.float64)
    eps = torch.randn(6, 4, dtype=torch.float64)
    t = T[1:].repeat(1)[:6]
    x_t, _ = PATH.sample(x0, t, eps)
    score = PATH.noise_to_score(x_t, eps, t)
    # the true conditional score of N(alpha x0, sigma^2) at x_t
    torch.testing.assert_close(score, PATH.data_to_score(x_t, x0, t))
    torch.testing.assert_close(PATH.score_to_noise(x_t, score, t), eps)
    torch.testing.assert_close(PATH.score_to_data(x_t, score, t), x0)
    torch.testing.assert_close(PATH.to_data(x_t, eps, t), x0)
    torch.testing.assert_close(PATH.to_noise(x_t, eps, t), eps)
    # probability-flow drift: -beta (x + s) / 2, equal to the affine path's alpha' x0 + sigma' eps
    tb = t[:, None]
    v = PATH.to_velocity(x_t, eps, t)
    torch.testing.assert_close(v, -0.5 * PATH.beta(tb) * (x_t + score))
    torch.testing.assert_close(v, PATH.d_alpha(tb) * x0 + PATH.d_sigma(tb) * eps)


def test_derivatives_match_finite_differences():
    t = torch.tensor([0.05, 0.3, 0.7, 0.95], dtype=torch.float64)
    h = 1e-6
    for f, df in ((PATH.alpha, PATH.d_alpha), (PATH.sigma, PATH.d_sigma)):
        torch.testing.assert_close(df(t), (f(t + h) - f(t - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_bad_schedules_raise():
    with pytest.raises(ConfigError):
        VPSDEPath(beta_min=2.0, beta_max=1.0)
    with pytest.raises(ConfigError):
        VPSDEPath(t_min=0.0)
    with pytest.raises(ConfigError, match="noise-prediction"):
        ScoreMatchingObjective(path=LinearFlowPath())
    with pytest.raises(ConfigError):
        ScoreMatchingObjective(reduction="median")


def test_score_matching_loss_has_its_known_minimum():
    """Data N(0, s^2) in d dims: the exact noise predictor sigma x_t / (alpha^2 s^2 + sigma^2)
    leaves an expected loss of d alpha^2 s^2 / (alpha^2 s^2 + sigma^2) at time t (summed over
    dims); predicting 0 leaves d."""
    g = torch.Generator().manual_seed(2)
    n, d, s = 40000, 3, 0.5
    x0 = s * torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.full((n,), 0.3, dtype=torch.float64)
    a, sig = PATH.alpha(t[0]), PATH.sigma(t[0])
    var = a**2 * s**2 + sig**2

    def exact(x, tt):
        return sig * x / var

    loss = denoising_score_matching_loss(exact, x0, t=t, generator=g)
    expected = d * (a**2 * s**2 / var).item()
    assert loss.item() == pytest.approx(expected, rel=0.03)
    zero = denoising_score_matching_loss(lambda x, tt: torch.zeros_like(x), x0, t=t, generator=g)
    assert zero.item() == pytest.approx(d, rel=0.03)
    mean = denoising_score_matching_loss(exact, x0, t=t, reduction="mean", generator=g)
    assert mean.item() == pytest.approx(expected / d, rel=0.03)
    # the objective passes conditions through and draws t in [t_min, 1]
    seen = {}

    def model(x, tt, cond):
        seen["t"], seen["cond"] = tt, cond
        return torch.zeros_like(x)

    out = ScoreMatchingObjective()(model, {"x": x0[:8], "cond": torch.ones(8, 2)})
    assert out["loss"].dim() == 0 and seen["cond"].shape == (8, 2)
    assert seen["t"].shape == (8,) and (seen["t"] >= 1e-5).all()
