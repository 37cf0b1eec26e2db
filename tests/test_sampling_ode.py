"""Fixed-step ODE solvers on dx/dt = -x: known answer and order of convergence."""

import math

import pytest
import torch

from caloforge.sampling import ODE_METHODS, ode_step, solve_ode, solve_ode_trajectory, uniform_times


def decay(x, t, rate=1.0):
    return -rate * x


def error(method: str, n: int) -> float:
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x1 = solve_ode(decay, x0, uniform_times(0.0, 1.0, n), method)
    return float((x1 - x0 * math.exp(-1.0)).abs().max())


@pytest.mark.parametrize("method", sorted(ODE_METHODS))
def test_order_of_convergence(method):
    order = ODE_METHODS[method][1]
    e1, e2 = error(method, 16), error(method, 32)
    observed = math.log2(e1 / e2)
    assert abs(observed - order) < 0.15, (method, observed)
    assert e2 < {1: 2e-2, 2: 3e-4, 4: 1e-7}[order]


def test_trajectory_backwards_in_time_and_conditions():
    x1 = torch.tensor([math.exp(-2.0)], dtype=torch.float64)
    # integrate dx/dt = -2 x from t = 1 back to t = 0: x(0) = x(1) e^{2}
    traj = solve_ode_trajectory(
        decay, x1, torch.linspace(1.0, 0.0, 41, dtype=torch.float64), "rk4", rate=2.0
    )
    assert traj.shape == (41, 1)
    torch.testing.assert_close(traj[0], x1)
    torch.testing.assert_close(
        traj[-1], torch.tensor([1.0], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_time_dependent_field_and_single_step():
    # dx/dt = t: exact x(1) = 1/2, which midpoint / heun / rk4 get exactly, euler not
    def f(x, t):
        return torch.ones_like(x) * t

    x0 = torch.zeros(3, dtype=torch.float64)
    for m in ("midpoint", "heun", "rk4"):
        torch.testing.assert_close(
            solve_ode(f, x0, [0.0, 1.0], m), torch.full((3,), 0.5, dtype=torch.float64)
        )
    assert float(ode_step(f, x0, 0.0, 1.0, "euler")[0]) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown ODE method"):
        solve_ode(decay, torch.ones(1), [0.0, 1.0], "rk5")
    with pytest.raises(ValueError):
        solve_ode(decay, torch.ones(1), [0.0], "euler")
    with pytest.raises(ValueError):
        uniform_times(0.0, 1.0, 0)
