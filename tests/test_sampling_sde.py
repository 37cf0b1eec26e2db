"""VP-SDE samplers: Euler-Maruyama and the probability-flow ODE on known distributions."""

import math

import pytest
import torch
from scipy.stats import ks_2samp

from caloforge.errors import ConfigError
from caloforge.objectives import ScoreMatchingObjective
from caloforge.paths import VPSDEPath
from caloforge.sampling import (
    EulerMaruyama,
    ProbabilityFlowSampler,
    euler_maruyama,
    parse_sde_sampler,
    probability_flow,
)

PATH = VPSDEPath()


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_noise_fn(mu: float, s: float):
    """The exact eps prediction for data N(mu, s^2): x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2)."""

    def fn(x, t):
        tb = t.reshape(-1, *([1] * (x.dim() - 1)))
        a, sg = PATH.alpha(tb), PATH.sigma(tb)
        return sg * (x - a * mu) / (a**2 * s**2 + sg**2)

    return fn


def gaussian_flow_map(x1, mu: float, s: float):
    """The exact probability-flow map of N(mu, s^2) data from t = 1 to t_min (affine)."""
    t1, t0 = torch.tensor(1.0, dtype=x1.dtype), torch.tensor(PATH.t_min, dtype=x1.dtype)

    def sd(t):
        return torch.sqrt(PATH.alpha(t) ** 2 * s**2 + PATH.sigma(t) ** 2)

    return PATH.alpha(t0) * mu + sd(t0) * (x1 - PATH.alpha(t1) * mu) / sd(t1)


W, MU, S = torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 1.5]), 0.5
WRONG = torch.tensor([0.7, 0.3])


def mixture(n: int, weights: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    return (MU[k] + S * torch.randn(n, generator=g))[:, None]


def mixture_noise_fn(x, t):
    """The exact eps prediction for the 1-D mixture: posterior-weighted component noises."""
    tb = t[:, None]
    a, sg = PATH.alpha(tb), PATH.sigma(tb)
    var = a**2 * S**2 + sg**2
    r = torch.softmax(torch.log(W) - 0.5 * (x - a * MU) ** 2 / var, dim=1)
    return sg * (r * (x - a * MU) / var).sum(1, keepdim=True)


def test_probability_flow_converges_with_the_solvers_order():
    """Exact Gaussian score: the ODE's solution is known in closed form, so the error of a
    fixed-step solver must fall as h^order (RK4: 16x per halving, Heun: 4x), also with
    the rho = 2 time grid."""
    mu, s = 1.5, 0.5
    fn = gaussian_noise_fn(mu, s)
    x1 = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    exact = gaussian_flow_map(x1, mu, s)
    for method, order, rho in (("rk4", 4, 1.0), ("heun", 2, 1.0), ("rk4", 4, 2.0)):
        errs = []
        for n in (8, 16, 32):
            out = parse_sde_sampler(f"{method}-{n}", rho=rho).sample(PATH, fn, x1)
            errs.append((out - exact).abs().max().item())
        rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
        assert min(rates) > order - 0.6, (method, rho, errs)
    # a fine solve is exact to high precision
    fine = parse_sde_sampler("rk4-200").sample(PATH, fn, x1)
    torch.testing.assert_close(fine, exact, rtol=0, atol=1e-8)


def test_rho_grid_is_what_makes_few_step_flows_accurate_for_narrow_data():
    """Data far narrower than the noise (as each mode of preprocessed showers is): with
    uniform steps in t a 10-step Heun solve misses the closed-form flow by O(1), with the
    rho = 3 grid (CaloLatent's default ode_rho) by 2-3 % of the noise scale."""
    from caloforge.pipelines.calolatent import CaloLatentConfig

    x1 = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    for s in (0.05, 0.01):
        fn = gaussian_noise_fn(1.5, s)
        exact = gaussian_flow_map(x1, 1.5, s)
        err = {rho: (parse_sde_sampler("heun-10", rho=rho).sample(PATH, fn, x1) - exact)
               .abs().max().item() for rho in (1.0, 3.0)}
        assert err[3.0] < 0.05 and err[1.0] > 5 * err[3.0], (s, err)
    assert CaloLatentConfig().ode_rho == 3.0


def test_euler_maruyama_samples_a_gaussian_with_the_exact_score():
    g = torch.Generator().manual_seed(0)
    mu, s, n = 1.5, 0.5, 20000
    x = euler_maruyama(PATH, gaussian_noise_fn(mu, s), torch.randn(n, 1, generator=g,
                       dtype=torch.float64), n_steps=200, generator=g)
    assert x.mean().item() == pytest.approx(mu, abs=4 * s / math.sqrt(n))
    assert x.std().item() == pytest.approx(s, rel=0.03)


def test_euler_maruyama_returns_the_last_noise_free_mean():
    """With a zero network (score 0) two steps are x1 = x0 (1 + beta(1) dt / 2) + noise,
    then the returned mean x1 (1 + beta(t_min) dt / 2) without the last step's noise."""
    x0 = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    out = euler_maruyama(PATH, lambda x, t: torch.zeros_like(x), x0, n_steps=2,
                         generator=torch.Generator().manual_seed(5))
    dt = 1.0 - PATH.t_min
    z = torch.randn(2, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x1 = x0 * (1 + 0.5 * 20.0 * dt) + math.sqrt(20.0 * dt) * z
    b0 = 0.1 + PATH.t_min * 19.9
    torch.testing.assert_close(out, x1 * (1 + 0.5 * b0 * dt))


@pytest.mark.parametrize("name", ["em-200", "rk4-10"])
def test_exact_mixture_score_samples_pass_a_two_sample_test(name):
    g = torch.Generator().manual_seed(1)
    x = parse_sde_sampler(name).sample(PATH, mixture_noise_fn, torch.randn(3000, 1, generator=g),
                                       generator=g)
    ref, wrong = mixture(50000, W, g), mixture(50000, WRONG, g)
    assert ks_2samp(x[:, 0].numpy(), ref[:, 0].numpy()).pvalue > 0.01
    assert ks_2samp(x[:, 0].numpy(), wrong[:, 0].numpy()).pvalue < 1e-6


class _TimeMLP(torch.nn.Module):
    """eps_hat = sigma(t) * MLP(x, features of t): the sigma factor gives the network the
    exact small-t behaviour of the noise (it vanishes like sigma times the data score)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(10, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, 1))

    def forward(self, x, t):
        k = 2.0 ** torch.arange(4, dtype=x.dtype)
        tf = torch.cat([torch.sin(t[:, None] * k), torch.cos(t[:, None] * k),
                        torch.log(t[:, None]) / 5], dim=1)
        return PATH.sigma(t[:, None]) * self.net(torch.cat([x, tf], dim=1))


@pytest.fixture(scope="module")
def trained_mixture_model():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    model, objective = _TimeMLP(), ScoreMatchingObjective(PATH)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    steps = 1000
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss = objective(model, {"x": mixture(512, W, g)})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    # the loss of the exact noise prediction: the minimum training can reach
    x = mixture(200000, W, g)
    floor = objective(mixture_noise_fn, {"x": x})["loss"].item()
    return model.eval(), losses, floor


@pytest.mark.parametrize("name", ["em-200", "rk4-10"])
def test_trained_score_model_samples_pass_a_two_sample_test(trained_mixture_model, name):
    """Trained by denoising score matching on the 0.3 / 0.7 mixture, the model's samples are
    not told apart from the mixture by a KS test, while the 0.7 / 0.3 mixture is."""
    model, losses, floor = trained_mixture_model
    first, last = sum(losses[:20]) / 20, sum(losses[-100:]) / 100
    assert first > 1.5 * floor and last < 1.1 * floor, (first, last, floor)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        x = parse_sde_sampler(name).sample(PATH, model, torch.randn(1000, 1, generator=g),
                                           generator=g)
    ref, wrong = mixture(50000, W, g), mixture(50000, WRONG, g)
    assert ks_2samp(x[:, 0].numpy(), ref[:, 0].numpy()).pvalue > 0.01
    assert ks_2samp(x[:, 0].numpy(), wrong[:, 0].numpy()).pvalue < 1e-6


def test_sampler_names_nfe_and_errors():
    em = parse_sde_sampler("EM-200")
    assert isinstance(em, EulerMaruyama) and em.nfe == 200 and em.name == "em-200"
    ode = parse_sde_sampler("rk4-10", rho=2.0)
    assert isinstance(ode, ProbabilityFlowSampler) and ode.nfe == 40 and ode.rho == 2.0
    assert parse_sde_sampler("heun-25").nfe == 50
    assert parse_sde_sampler(em) is em
    for bad in ("em-1", "leapfrog-10", "bns-4"):
        with pytest.raises(ConfigError):
            parse_sde_sampler(bad)
    with pytest.raises(ConfigError):
        probability_flow(PATH, lambda x, t: x, rho=0.5)


def test_samplers_are_reproducible_from_a_generator_and_pass_conditions():
    seen = []

    def fn(x, t, cond):
        seen.append((t.shape, cond.shape))
        return 0.1 * x + cond

    x = torch.randn(4, 3)
    cond = torch.ones(4, 1)
    a = EulerMaruyama(5).sample(PATH, fn, x, generator=torch.Generator().manual_seed(3), cond=cond)
    b = EulerMaruyama(5).sample(PATH, fn, x, generator=torch.Generator().manual_seed(3), cond=cond)
    assert torch.equal(a, b)
    assert seen[0] == ((4,), (4, 1)) and len(seen) == 10
    c = parse_sde_sampler("euler-3").sample(PATH, fn, x, cond=cond)
    assert c.shape == x.shape and torch.isfinite(c).all()
