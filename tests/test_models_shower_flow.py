"""CaloClouds II's Shower Flow (zuko): density, sampling, fitting a known distribution."""

import math

import pytest
import torch
from safetensors.torch import load, save
from zuko.flows import ElementWiseTransform, GeneralCouplingTransform
from zuko.lazy import UnconditionalTransform

from caloforge.errors import ConfigError
from caloforge.models import MODEL_REGISTRY, ShowerFlow, ShowerFlowConfig, build_model

TINY = dict(features=5, blocks=2, hidden=32, spline_hidden=16)


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _roughen(flow: ShowerFlow, scale: float = 3.0) -> None:
    """Scale up every hypernet's output layer so no transform is near the identity."""
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, (GeneralCouplingTransform, ElementWiseTransform)):
                m.hyper[-1].weight.mul_(scale)
                m.hyper[-1].bias.normal_(0.0, 0.5)


# --- a known conditional distribution: x | c ~ N(a + b c, L L^T), correlated -------------
A = torch.tensor([0.5, -0.3, 0.0, 0.2, -0.5])
B = torch.tensor([1.0, -0.8, 0.5, 0.0, 1.2])
L = torch.tensor([
    [0.5, 0.0, 0.0, 0.0, 0.0],
    [0.3, 0.4, 0.0, 0.0, 0.0],
    [-0.2, 0.1, 0.3, 0.0, 0.0],
    [0.0, 0.25, -0.2, 0.35, 0.0],
    [0.1, 0.0, 0.2, -0.1, 0.3],
])
SIGMA = L @ L.T


def draw_truth(c: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return A + c * B + torch.randn(c.shape[0], 5, generator=gen) @ L.T


def mismatch(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """Largest absolute error of the sample mean and of the sample covariance."""
    return ((samples.mean(0) - mean).abs().max().item(),
            (torch.cov(samples.T) - cov).abs().max().item())


MEAN_TOL, COV_TOL = 0.1, 0.05  # sampling errors at 4000 draws: ~0.01 and ~0.006


def matches(samples, mean, cov) -> bool:
    m, c = mismatch(samples, mean, cov)
    return m < MEAN_TOL and c < COV_TOL


@pytest.fixture(scope="module")
def trained() -> ShowerFlow:
    # ~2.5 s on one thread: 200 Adam steps of NLL on batches of 128
    torch.set_num_threads(1)
    torch.manual_seed(0)
    flow = ShowerFlow(ShowerFlowConfig(**TINY))
    gen = torch.Generator().manual_seed(0)
    steps = 200
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        c = torch.rand(128, 1, generator=gen)
        loss = -flow.log_prob(draw_truth(c, gen), c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return flow.eval()


def test_trained_flow_matches_the_conditional_mean_and_covariance(trained):
    torch.manual_seed(123)
    untrained = ShowerFlow(ShowerFlowConfig(**TINY))
    with torch.no_grad():
        for cv, other in ((0.2, 0.9), (0.9, 0.2)):
            c = torch.full((4000, 1), cv)
            s = trained.sample(c, generator=torch.Generator().manual_seed(1))
            assert matches(s, A + cv * B, SIGMA), mismatch(s, A + cv * B, SIGMA)
            # the same check fails for a wrong answer: another context's mean, no
            # correlations, or an untrained flow
            assert not matches(s, A + other * B, SIGMA)
            assert not matches(s, A + cv * B, torch.diag(torch.diag(SIGMA)))
            u = untrained.sample(c, generator=torch.Generator().manual_seed(1))
            assert not matches(u, A + cv * B, SIGMA)


def test_trained_log_prob_approaches_the_true_density(trained):
    gen = torch.Generator().manual_seed(5)
    c = torch.rand(2000, 1, generator=gen)
    x = draw_truth(c, gen)
    truth = torch.distributions.MultivariateNormal(A + c * B, SIGMA).log_prob(x)
    with torch.no_grad():
        model = trained.log_prob(x, c)
    # KL(truth || model) estimated on truth samples: small and (up to noise) non-negative
    kl = (truth - model).mean().item()
    assert -0.05 < kl < 0.1
    # a flow evaluated at the wrong context is far off
    with torch.no_grad():
        wrong = trained.log_prob(x, 1.0 - c)
    assert (truth - wrong).mean().item() > 0.5


def test_log_prob_of_own_samples_is_finite_and_inverts():
    torch.manual_seed(1)
    flow = ShowerFlow(ShowerFlowConfig(**TINY))
    _roughen(flow)
    c = torch.rand(64, 1)
    z = torch.randn(64, 5, generator=torch.Generator().manual_seed(3))
    x = flow.sample(c, generator=torch.Generator().manual_seed(3))
    assert x.shape == (64, 5) and x.dtype == torch.float32
    lp = flow.log_prob(x, c)
    assert lp.shape == (64,) and torch.isfinite(lp).all()
    # sample is the inverse of the density map applied to the generator's base noise
    torch.testing.assert_close(flow.flow.transform(c)(x), z, atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_with_a_generator():
    torch.manual_seed(2)
    flow = ShowerFlow(ShowerFlowConfig(**TINY))
    c = torch.rand(10, 1)
    a = flow.sample(c, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(99)  # the global RNG plays no part
    b = flow.sample(c, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = flow.sample(c, generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(a, other)
    assert flow.sample(torch.zeros(0, 1)).shape == (0, 5)


def _jacobian_log_prob(flow: ShowerFlow, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """log N(f(x)) + log|det df/dx| with the Jacobian from autograd, one row at a time."""
    out = []
    for xi, ci in zip(x, c):
        fn = lambda v, ci=ci: flow.flow.transform(ci[None])(v[None])[0]  # noqa: E731
        z = fn(xi)
        jac = torch.autograd.functional.jacobian(fn, xi)
        logdet = torch.linalg.slogdet(jac).logabsdet
        base = -0.5 * (z.square().sum() + z.numel() * math.log(2 * math.pi))
        out.append(base + logdet)
    return torch.stack(out)


def test_change_of_variables_matches_an_autograd_jacobian():
    torch.manual_seed(3)
    flow = ShowerFlow(ShowerFlowConfig(features=3, blocks=2, couplings=1, hidden=8,
                                       spline_hidden=8)).double()
    _roughen(flow)
    c = torch.rand(6, 1, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64) * 1.5  # mostly inside the spline's [-3, 3]
    with torch.no_grad():
        lp = flow.log_prob(x, c)
    ref = _jacobian_log_prob(flow, x, c)
    torch.testing.assert_close(lp, ref, rtol=1e-9, atol=1e-9)
    # the log-det is a sizeable part of the answer (the check would catch its loss)
    z = flow.flow.transform(c)(x)
    base = -0.5 * (z.square().sum(-1) + 3 * math.log(2 * math.pi))
    assert (ref - base).abs().min() > 0.05


def test_density_integrates_to_one_in_two_dimensions():
    torch.manual_seed(4)
    flow = ShowerFlow(ShowerFlowConfig(features=2, blocks=1, couplings=1, hidden=8,
                                       spline_hidden=8)).double()
    _roughen(flow, scale=2.0)
    h = 0.05
    grid = torch.arange(-10.0, 10.0, h, dtype=torch.float64) + h / 2
    x = torch.cartesian_prod(grid, grid)
    c = torch.full((x.shape[0], 1), 0.3, dtype=torch.float64)
    with torch.no_grad():
        lp = flow.log_prob(x, c)
        z = flow.flow.transform(c)(x)
    mass = lp.exp().sum().item() * h * h
    assert abs(mass - 1.0) < 5e-3
    # without the log-det term the "density" does not normalise
    base = -0.5 * (z.square().sum(-1) + 2 * math.log(2 * math.pi))
    assert abs(base.exp().sum().item() * h * h - 1.0) > 0.05


def test_state_dict_reload_gives_identical_log_prob_and_samples():
    torch.manual_seed(5)
    flow = ShowerFlow(ShowerFlowConfig(**TINY))
    _roughen(flow)
    blob = save({k: v.contiguous() for k, v in flow.state_dict().items()})
    # a different permutation seed and init: everything is replaced by the state dict
    torch.manual_seed(6)
    other = ShowerFlow(ShowerFlowConfig(**TINY, permutation_seed=7))
    x, c = torch.randn(8, 5), torch.rand(8, 1)
    assert not torch.equal(other.log_prob(x, c), flow.log_prob(x, c))
    other.load_state_dict(load(blob))
    torch.testing.assert_close(other.log_prob(x, c), flow.log_prob(x, c), rtol=0, atol=0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(other.sample(c, generator=g()), flow.sample(c, generator=g()),
                               rtol=0, atol=0)


def test_permutations_are_fixed_by_the_seed_and_stored_as_buffers():
    def orders(f):
        return [m._0.clone() for m in f.modules() if isinstance(m, UnconditionalTransform)]

    torch.manual_seed(0)
    a = ShowerFlow(ShowerFlowConfig(**TINY))
    torch.manual_seed(1)
    b = ShowerFlow(ShowerFlowConfig(**TINY))
    c = ShowerFlow(ShowerFlowConfig(**TINY, permutation_seed=43))
    oa, ob, oc = orders(a), orders(b), orders(c)
    # per block: couplings + 1 + couplings permutations
    assert len(oa) == 2 * (3 + 1 + 3)
    assert all(torch.equal(p, q) for p, q in zip(oa, ob))
    assert not all(torch.equal(p, q) for p, q in zip(oa, oc))
    assert all(sorted(p.tolist()) == list(range(5)) for p in oa)
    stored = [k for k in a.state_dict() if k.startswith("flow.transform.") and k.endswith("._0")]
    assert len(stored) == len(oa)


def test_paper_size_structure_and_parameter_count():
    flow = ShowerFlow()
    couplings = [m for m in flow.modules() if isinstance(m, GeneralCouplingTransform)]
    splines = [m for m in flow.modules() if isinstance(m, ElementWiseTransform)]
    assert len(couplings) == 60 and len(splines) == 10
    # hypernet (32 + 1) -> 650 -> 650 -> 33 x (shift, log-scale); split 32 / 33
    hyper = couplings[0].hyper
    assert [hyper[i].weight.shape for i in (0, 2, 4)] == [(650, 33), (650, 650), (66, 650)]
    assert int(couplings[0].mask.sum()) == 32
    # spline MLP 1 -> 260 -> 260 -> 65 x (8 widths, 8 heights, 7 inner derivatives)
    assert [splines[0].hyper[i].weight.shape for i in (0, 2, 4)] == [
        (260, 1), (260, 260), (65 * 23, 260)
    ]
    coupling = 33 * 650 + 650 + 650 * 650 + 650 + 650 * 66 + 66
    spline = 260 + 260 + 260 * 260 + 260 + 260 * 1495 + 1495
    assert flow.n_parameters() == 10 * (6 * coupling + spline) == 33_878_710
    # the reference's linear-rational spline has 4K - 1 = 31 outputs per feature: 35.2 M
    pyro_spline = 260 + 260 + 260 * 260 + 260 + 260 * 65 * 31 + 65 * 31
    assert round(10 * (6 * coupling + pyro_spline) / 1e5) == 352


def test_every_tensor_is_registered_so_to_device_moves_it():
    # no device machine in the test run: check that .to() reaches every tensor the flow
    # uses (the masks, permutations and base are buffers, not plain attributes)
    flow = ShowerFlow(ShowerFlowConfig(**TINY))
    for name, m in flow.named_modules():
        stray = [k for k, v in vars(m).items() if torch.is_tensor(v)]
        assert not stray, f"{name} holds unregistered tensors {stray}"
    kinds = {v.dtype for v in flow.state_dict().values()}
    assert kinds == {torch.float32, torch.bool, torch.int64}


def test_float64_move_context_dependence_and_errors():
    torch.manual_seed(8)
    flow = ShowerFlow(ShowerFlowConfig(**TINY)).to(torch.float64)
    c = torch.rand(4, 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 5, dtype=torch.float64)
    lp = flow.log_prob(x, c)
    assert lp.dtype == torch.float64
    assert flow.sample(c.detach()).dtype == torch.float64
    lp.sum().backward()
    assert c.grad.abs().min() > 0  # the context conditions the density
    with pytest.raises(ValueError, match="context must have shape"):
        flow.log_prob(x, c[:, 0])
    with pytest.raises(ValueError, match="x must have shape"):
        flow.log_prob(x[:, :4], c)
    # a NaN input gives a NaN value (for a training guard), not an exception
    bad = x.clone()
    bad[0, 0] = float("nan")
    out = flow.log_prob(bad, c.detach())
    assert torch.isnan(out[0]) and torch.isfinite(out[1:]).all()


def test_registry_build_and_strict_config():
    assert MODEL_REGISTRY["shower_flow"] == (ShowerFlow, ShowerFlowConfig)
    flow = build_model("shower_flow", {"features": 4, "blocks": 1, "hidden": 8,
                                       "spline_hidden": 8, "context": 2})
    assert flow(torch.randn(3, 4), torch.rand(3, 2)).shape == (3,)
    with pytest.raises(ConfigError, match="unknown config key"):
        build_model("shower_flow", {"n_blocks": 2})
    with pytest.raises(ConfigError, match="features"):
        ShowerFlowConfig(features=1)
    with pytest.raises(ConfigError, match="spline_bins"):
        ShowerFlowConfig(spline_bins=1)
    with pytest.raises(ConfigError, match="spline_bound"):
        ShowerFlowConfig(spline_bound=0.0)


def test_sampling_without_gradients_uses_a_checked_traced_graph():
    import copy

    torch.manual_seed(3)
    flow = ShowerFlow(ShowerFlowConfig(**TINY)).eval()
    _roughen(flow)
    c = torch.rand(6, 1)
    eager = flow.sample(c, generator=torch.Generator().manual_seed(5))  # grad mode: eager
    assert flow._traced == {}
    with torch.no_grad():
        traced = flow.sample(c, generator=torch.Generator().manual_seed(5))
        (fn,) = flow._traced.values()
        assert isinstance(fn, torch.jit.ScriptModule)  # recorded, and it passed its check
        torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)
        flow.sample(torch.rand(2, 1))  # another batch shape: its own graph
        assert len(flow._traced) == 2
        # the graph shares the flow's weights: a change of weights reaches it
        _roughen(flow, 1.5)
        changed = flow.sample(c, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(changed, flow.sample(c, generator=torch.Generator().manual_seed(5)),
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, traced)
    twin = copy.deepcopy(flow)  # copies carry no graphs; moving a flow drops them
    assert twin._traced == {}
    flow.to(torch.float64)
    assert flow._traced == {}
