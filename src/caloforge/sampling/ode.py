"""Fixed-step ODE solvers for dx/dt = f(x, t, **cond).

They take any callable and know nothing of networks. Methods and their order:
Euler (1), midpoint (2), Heun (explicit trapezoid, 2), classical Runge-Kutta "rk4" (4).
``times`` may be decreasing (integration backwards, as diffusion samplers do) and need
not be uniform (e.g. an EDM schedule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["ODE_METHODS", "ode_step", "solve_ode", "solve_ode_trajectory", "uniform_times"]

VectorField = Callable[..., Tensor]


def _euler(f: VectorField, x: Tensor, t: Tensor, h: Tensor, cond: dict[str, Any]) -> Tensor:
    return x + h * f(x, t, **cond)


def _midpoint(f: VectorField, x: Tensor, t: Tensor, h: Tensor, cond: dict[str, Any]) -> Tensor:
    k1 = f(x, t, **cond)
    return x + h * f(x + 0.5 * h * k1, t + 0.5 * h, **cond)


def _heun(f: VectorField, x: Tensor, t: Tensor, h: Tensor, cond: dict[str, Any]) -> Tensor:
    k1 = f(x, t, **cond)
    k2 = f(x + h * k1, t + h, **cond)
    return x + 0.5 * h * (k1 + k2)


def _rk4(f: VectorField, x: Tensor, t: Tensor, h: Tensor, cond: dict[str, Any]) -> Tensor:
    k1 = f(x, t, **cond)
    k2 = f(x + 0.5 * h * k1, t + 0.5 * h, **cond)
    k3 = f(x + 0.5 * h * k2, t + 0.5 * h, **cond)
    k4 = f(x + h * k3, t + h, **cond)
    return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


#: name -> (one-step function, order of convergence)
ODE_METHODS: dict[str, tuple[Callable[..., Tensor], int]] = {
    "euler": (_euler, 1),
    "midpoint": (_midpoint, 2),
    "heun": (_heun, 2),
    "rk4": (_rk4, 4),
}


def _method(name: str) -> Callable[..., Tensor]:
    if name not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {name!r}; known: {sorted(ODE_METHODS)}")
    return ODE_METHODS[name][0]


def uniform_times(t0: float, t1: float, n_steps: int) -> Tensor:
    """n_steps + 1 equally spaced times from t0 to t1 (float64 on CPU)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return torch.linspace(t0, t1, n_steps + 1, dtype=torch.float64)


def ode_step(
    f: VectorField,
    x: Tensor,
    t: float | Tensor,
    h: float | Tensor,
    method: str = "rk4",
    **cond: Any,
) -> Tensor:
    """One step of size h from (x, t). x (…) -> (…)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    h = torch.as_tensor(h, dtype=x.dtype, device=x.device)
    return _method(method)(f, x, t, h, cond)


def solve_ode_trajectory(
    f: VectorField, x0: Tensor, times: Sequence[float] | Tensor, method: str = "rk4", **cond: Any
) -> Tensor:
    """Integrate from times[0] to times[-1] through every given time.

    ``f(x, t, **cond)`` gets t as a 0-d tensor of x's dtype and device.
    Returns the states at all times, (len(times), *x0.shape); entry 0 is x0.
    """
    step = _method(method)
    ts = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("times must be a 1-D sequence of at least two values")
    xs = [x0]
    x = x0
    for i in range(ts.numel() - 1):
        x = step(f, x, ts[i], ts[i + 1] - ts[i], cond)
        xs.append(x)
    return torch.stack(xs)


def solve_ode(
    f: VectorField, x0: Tensor, times: Sequence[float] | Tensor, method: str = "rk4", **cond: Any
) -> Tensor:
    """Like :func:`solve_ode_trajectory` but returns only the final state (*x0.shape),
    without keeping the intermediate states."""
    step = _method(method)
    ts = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError("times must be a 1-D sequence of at least two values")
    x = x0
    for i in range(ts.numel() - 1):
        x = step(f, x, ts[i], ts[i + 1] - ts[i], cond)
    return x
