"""Bespoke non-stationary solvers: Euler at initialisation, the parameterisation, the
reference machinery, state, and training on a curved field with a known flow."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from caloforge.errors import ConfigError
from caloforge.sampling import BNSSolver, parse_solver, train_bns
from caloforge.sampling.bespoke import hermite_interpolate, reference_trajectory


def wiggly(x, t, c):
    """A nonlinear, time-dependent field with a condition."""
    return torch.sin(3.0 * x) * torch.cos(2.0 * t) + c * x - t


class Counter:
    def __init__(self, f):
        self.f, self.calls, self.xs = f, 0, []

    def __call__(self, x, t, **cond):
        self.calls += 1
        self.xs.append(x)
        return self.f(x, t, **cond)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_initialised_to_euler(n, dtype):
    g = torch.Generator().manual_seed(n)
    x0 = torch.randn(10, 4, generator=g).to(dtype)
    c = torch.rand(10, 1, generator=g).to(dtype)
    bns = BNSSolver(n)
    f = Counter(wiggly)
    got = bns.solve(f, x0, c=c)
    assert f.calls == n == bns.nfe
    torch.testing.assert_close(got, parse_solver(f"euler-{n}").solve(wiggly, x0, c=c),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(bns.times(), torch.linspace(0, 1, n + 1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 8, 16])
def test_parameter_count_and_names(n):
    bns = BNSSolver(n)
    assert bns.name == f"bns-{n}" and bns.n_steps == n and bns.nfe == n
    # a: N, b: N(N+1)/2, free interior times: N - 1; the paper's N(N+5)/2 + 1 also
    # counts the two fixed end points t_0 = 0 and t_N = 1
    assert bns.n_parameters() == n * (n + 5) // 2 - 1
    assert bns.n_parameters() + 2 == n * (n + 5) // 2 + 1


def test_time_grid_stays_increasing():
    bns = BNSSolver(6)
    with torch.no_grad():
        bns.time_logits.copy_(torch.tensor([8.0, -8.0, 0.5, -20.0, 3.0]))
    t = bns.times().detach()
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0
    # no step shorter than the floor, even where a logit is far below the others
    assert float(t.diff().min()) >= 0.99 * BNSSolver.MIN_STEP_FRACTION / 6


def random_solver(n, seed):
    bns = BNSSolver(n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bns.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return bns


def test_parallel_steps_match_the_sequential_solve():
    bns = random_solver(5, 0).double()
    x0 = torch.randn(7, 3, dtype=torch.float64)
    c = torch.full((7, 1), 0.5, dtype=torch.float64)
    f = Counter(wiggly)
    x_n = bns.solve(f, x0, c=c)
    ts = bns.times()
    velocities = torch.stack([wiggly(x, ts[i], c) for i, x in enumerate(f.xs)])
    steps = bns.apply_velocities(x0, velocities)
    # entry i is x_{i+1}: the state f saw next, and the result at the end
    torch.testing.assert_close(steps[:-1], torch.stack(f.xs[1:]))
    torch.testing.assert_close(steps[-1], x_n)
    a, B = bns.coefficients()
    assert torch.equal(B, B.tril()) and a.shape == (5,)


def test_hermite_interpolation_is_exact_on_cubics():
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
    coef = torch.tensor([[0.3, -1.0, 2.0, 1.5], [1.0, 0.5, -3.0, 0.7]], dtype=torch.float64)

    def p(s):
        return coef[:, 0] + coef[:, 1] * s + coef[:, 2] * s**2 + coef[:, 3] * s**3

    def dp(s):
        return coef[:, 1] + 2 * coef[:, 2] * s + 3 * coef[:, 3] * s**2

    t = torch.tensor([0.0, 0.013, 0.5, 0.77, 0.999, 1.0], dtype=torch.float64,
                     requires_grad=True)
    x, dx = hermite_interpolate(p(grid), dp(grid), t)
    torch.testing.assert_close(x, p(t.detach()[:, None]))
    torch.testing.assert_close(dx, dp(t.detach()[:, None]))
    # the derivative with respect to the (learnable) time is the velocity
    (grad,) = torch.autograd.grad(x.sum(), t)
    torch.testing.assert_close(grad, dp(t.detach()[:, None]).sum(1))


def test_reference_trajectory_keeps_grid_velocities():
    x0 = torch.randn(5, 2, dtype=torch.float64)
    c = torch.full((5, 1), -0.2, dtype=torch.float64)
    ref = parse_solver("midpoint-10")
    f = Counter(wiggly)
    xs, vs = reference_trajectory(f, x0, ref, c=c)
    assert f.calls == ref.nfe + 1
    assert xs.shape == vs.shape == (11, 5, 2)
    torch.testing.assert_close(xs, ref.trajectory(wiggly, x0, c=c))
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(vs, torch.stack([wiggly(xs[k], s[k], c) for k in range(11)]))


def test_state_round_trip_through_safetensors(tmp_path):
    bns = random_solver(4, 1)
    save_file(bns.state_dict(), tmp_path / "bns.safetensors")
    again = BNSSolver.from_state_dict(load_file(tmp_path / "bns.safetensors"))
    assert again.n_steps == 4
    x0 = torch.randn(3, 2)
    c = torch.ones(3, 1)
    assert torch.equal(again.solve(wiggly, x0, c=c), bns.solve(wiggly, x0, c=c))
    with pytest.raises(ConfigError, match="not a BNS"):
        BNSSolver.from_state_dict({"weight": torch.zeros(2)})


# --- training on a curved field with a known flow ---------------------------------------


class MixtureField(nn.Module):
    """The exact flow-matching velocity from N(0, 1) to a 1-D Gaussian mixture whose
    means are shifted by a per-sample condition.

    Per component k: x_t ~ N(t mu_k, s_t^2) with s_t^2 = t^2 s_k^2 + (1 - t)^2 and
    velocity mu_k + (s_t'/s_t)(x - t mu_k); the marginal velocity is their average with
    the posterior weights p(k | x_t). Its flow has no closed form; the exact end point is
    the float64 RK4 solve with 1000 steps (converged far below the errors compared). The
    trajectories bend where the posterior switches between the components: Euler with 8
    steps is ~50 times worse than RK4 with 16 evaluations.
    """

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([-1.5, 1.5], dtype=torch.float64))
        self.register_buffer("s", torch.tensor([0.5, 0.65], dtype=torch.float64))
        self.register_buffer("pi", torch.tensor([0.4, 0.6], dtype=torch.float64))

    def forward(self, x, t, shift):
        mu = self.mu + shift
        var = t * t * self.s**2 + (1 - t) ** 2
        logw = torch.log(self.pi) - 0.5 * (x - t * mu) ** 2 / var - 0.5 * torch.log(var)
        v = mu + (t * self.s**2 - (1 - t)) / var * (x - t * mu)
        return (torch.softmax(logw, dim=-1) * v).sum(-1, keepdim=True)


def draw(n, g):
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x0, {"shift": 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)}


@pytest.mark.parametrize("loss", ["local", "global"])
def test_training_beats_rk4_at_the_same_cost(loss):
    torch.manual_seed(0)
    field = MixtureField()
    mu_before = field.mu.detach().clone()
    x0, cond = draw(1000, torch.Generator().manual_seed(123))
    with torch.no_grad():
        exact = parse_solver("rk4-1000").solve(field, x0, **cond)
        assert float((parse_solver("rk4-500").solve(field, x0, **cond) - exact).abs().max()) < 1e-8

    def rms_error(solver):
        with torch.no_grad():
            return math.sqrt(float(((solver.solve(field, x0, **cond) - exact) ** 2).mean()))

    bns = BNSSolver(8).double()
    rk4_2, euler_8 = rms_error(parse_solver("rk4-2")), rms_error(bns)
    assert parse_solver("rk4-2").nfe == bns.nfe == 8
    # the local loss is fed a bound method, the global one the module: both are frozen
    f = field.forward if loss == "local" else field
    history = train_bns(bns, f, draw, loss=loss, reference="rk4-16", lr=1e-2, batch_size=64,
                        max_iters=150, patience=100, generator=torch.Generator().manual_seed(1))
    trained = rms_error(bns)
    # the same 8 evaluations: well below RK4 with 2 steps, far below the Euler start
    assert trained < 0.6 * rk4_2 and trained < 0.1 * euler_8, (trained, rk4_2, euler_8)

    # only the solver learned: the field's parameter is untouched and got no gradient
    assert torch.equal(field.mu, mu_before) and field.mu.grad is None
    assert field.mu.requires_grad
    # the grid moved, and stayed a grid
    t = bns.times().detach()
    assert float((t - torch.linspace(0, 1, 9, dtype=torch.float64)).abs().max()) > 1e-3
    assert bool((t.diff() > 0).all())
    # the history describes the kept state
    assert len(history["loss"]) == history["n_iters"] <= 150
    assert len(history["val_loss"]) == history["n_iters"] + 1
    assert history["val_loss"][history["best_iter"]] == history["best_loss"]
    assert history["best_loss"] == min(history["val_loss"]) < history["val_loss"][0]
    assert history["val_gte"][history["best_iter"]] < history["val_gte"][0]


def test_early_stopping_on_the_training_loss():
    field = MixtureField()
    bns = BNSSolver(2).double()
    history = train_bns(bns, field, draw, loss="local", reference="rk4-8", lr=1e-2,
                        batch_size=16, max_iters=400, patience=5, val_batches=0,
                        generator=torch.Generator().manual_seed(2))
    assert history["val_loss"] == [] and history["stop_reason"] == "patience"
    assert history["n_iters"] < 400
    assert history["n_iters"] - history["best_iter"] == 5
    # the training loss at step k scores the parameters before that step
    assert history["best_loss"] == min(history["loss"]) == history["loss"][history["best_iter"]]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="n_steps"):
        BNSSolver(0)
    field = MixtureField()
    with pytest.raises(ConfigError, match="loss must be"):
        train_bns(BNSSolver(2), field, draw, loss="medium")
    with pytest.raises(ConfigError, match="fixed-step"):
        train_bns(BNSSolver(2), field, draw, reference=BNSSolver(4))
    with pytest.raises(ConfigError, match="batch_size"):
        train_bns(BNSSolver(2), field, draw, batch_size=0)
    with pytest.raises(ConfigError, match="trained for t from 0 to 1"):
        BNSSolver(2).solve(wiggly, torch.zeros(1), t1=2.0, c=1.0)
