"""Solvers by name: orders of convergence, evaluation counts, gradients, errors."""

import math

import numpy as np
import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.sampling import (
    ODE_METHODS,
    SOLVER_NAMES,
    BNSSolver,
    FixedStepSolver,
    Solver,
    parse_solver,
)
from caloforge.sampling.solvers import NFE_PER_STEP


def growth(x, t, rate=1.0):
    """dx/dt = rate cos(t) x, solved by x(t) = x(t0) exp(rate (sin t - sin t0))."""
    return rate * torch.cos(t) * x


def exact(x0, t0, t1, rate=1.0):
    return x0 * math.exp(rate * (math.sin(t1) - math.sin(t0)))


class Counter:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, x, t, **cond):
        self.calls += 1
        return self.f(x, t, **cond)


# step counts in each method's asymptotic range (midpoint's leading error term is small
# on this problem, so it needs finer steps before the h^2 law shows)
STEPS = {"euler": (16, 32, 64, 128), "midpoint": (32, 64, 128, 256),
         "heun": (32, 64, 128, 256), "rk4": (4, 8, 16, 32)}


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_order_of_convergence(method, order):
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    errors = []
    for n in STEPS[method]:
        x1 = parse_solver(f"{method}-{n}").solve(growth, x0)
        errors.append(float((x1 - exact(x0, 0.0, 1.0)).abs().max()))
    # fitted log-log slope of the error against the number of steps
    slope = -np.polyfit(np.log(STEPS[method]), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.1, (method, slope, errors)


@pytest.mark.parametrize("name,nfe", [("euler-50", 50), ("midpoint-32", 64), ("heun-10", 20),
                                      ("rk4-20", 80)])
def test_names_and_evaluation_counts(name, nfe):
    solver = parse_solver(name)
    assert isinstance(solver, FixedStepSolver) and isinstance(solver, Solver)
    method, n = name.split("-")
    assert (solver.name, solver.method, solver.n_steps, solver.nfe) == (name, method, int(n), nfe)
    f = Counter(growth)
    solver.solve(f, torch.ones(3), rate=0.5)
    assert f.calls == nfe
    assert solver.trajectory(growth, torch.ones(3)).shape == (int(n) + 1, 3)


def test_every_ode_method_has_a_count():
    assert set(NFE_PER_STEP) == set(ODE_METHODS)
    assert parse_solver("rk4-20").order == 4


def test_intervals_conditions_and_backwards():
    x0 = torch.tensor([2.0], dtype=torch.float64)
    fwd = parse_solver("rk4-40").solve(growth, x0, t0=0.5, t1=2.5, rate=0.7)
    torch.testing.assert_close(fwd, exact(x0, 0.5, 2.5, 0.7), rtol=1e-7, atol=0)
    back = parse_solver("rk4-40").solve(growth, fwd, t0=2.5, t1=0.5, rate=0.7)
    torch.testing.assert_close(back, x0, rtol=1e-7, atol=0)


def test_gradients_flow_through_a_solve():
    x0 = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    rate = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    x1 = parse_solver("rk4-20").solve(growth, x0, rate=rate)
    x1.sum().backward()
    s = math.sin(1.0)
    torch.testing.assert_close(x0.grad, torch.full((2,), math.exp(0.8 * s), dtype=torch.float64))
    # d/d rate of x0 exp(rate sin 1), summed over x0 = (1, 3)
    torch.testing.assert_close(
        rate.grad, torch.tensor(4.0 * s * math.exp(0.8 * s), dtype=torch.float64)
    )
    # and the caller can switch them off
    with torch.no_grad():
        assert not parse_solver("euler-4").solve(growth, x0).requires_grad


def test_unknown_and_bad_names():
    with pytest.raises(ConfigError) as err:
        parse_solver("rk5-20")
    assert str(err.value) == (
        "unknown solver 'rk5-20'; known: euler-N, midpoint-N, heun-N, rk4-N, bns-N (trained)"
    )
    assert SOLVER_NAMES in str(err.value)
    for bad in ("rk4", "rk4-", "rk4-x", "euler-2.5", "-3", ""):
        with pytest.raises(ConfigError, match="unknown solver"):
            parse_solver(bad)
    with pytest.raises(ConfigError, match=">= 1"):
        parse_solver("midpoint-0")
    with pytest.raises(ConfigError, match="unknown fixed-step method"):
        FixedStepSolver("rk45", 3)
    assert parse_solver(" RK4-8 ").name == "rk4-8"


def test_trained_solvers_resolve_by_name():
    with pytest.raises(ConfigError, match="must be trained.*given: none"):
        parse_solver("bns-8")
    bns8, bns4 = BNSSolver(8), BNSSolver(4)
    with pytest.raises(ConfigError, match="given: bns-4"):
        parse_solver("bns-8", trained={"bns-4": bns4})
    assert parse_solver("bns-8", trained={"bns-8": bns8}) is bns8
    assert parse_solver("bns-4", trained=[bns8, bns4]) is bns4
    assert parse_solver(bns8) is bns8
    with pytest.raises(ConfigError, match="has 4 steps, not 8"):
        parse_solver("bns-8", trained={"bns-8": bns4})
    with pytest.raises(ConfigError, match="solver object"):
        parse_solver(42)
