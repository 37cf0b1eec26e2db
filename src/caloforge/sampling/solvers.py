"""ODE solvers by name: ``parse_solver("rk4-20").solve(f, x0, **cond)``.

A name is ``<method>-<steps>``: "euler-50", "midpoint-32", "heun-10", "rk4-20" are fixed-step
solvers on a uniform grid (the steppers of :mod:`caloforge.sampling.ode`), "bns-8" a bespoke
non-stationary solver, which has to be trained for its field first
(:mod:`caloforge.sampling.bespoke`) and is handed in by the caller::

    solver = parse_solver(name, trained={"bns-8": bns})

Every solver has ``name``, ``n_steps``, ``nfe`` (evaluations of f per solve: Euler 1 per
step, midpoint and Heun 2, RK4 4, BNS 1) and ``solve(f, x0, *, t0=0.0, t1=1.0, **cond)``.
Solvers never switch gradients off: a caller that only samples wraps the call in
``torch.no_grad()`` / ``torch.inference_mode()``, one that trains through it does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from ..errors import ConfigError
from .ode import ODE_METHODS, solve_ode, solve_ode_trajectory, uniform_times

__all__ = ["NFE_PER_STEP", "SOLVER_NAMES", "FixedStepSolver", "Solver", "parse_solver"]

#: evaluations of the field per step of each fixed-step method
NFE_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}

#: the name patterns parse_solver understands, for error messages and help texts
SOLVER_NAMES = "euler-N, midpoint-N, heun-N, rk4-N, bns-N (trained)"

_NAME = re.compile(r"^(euler|midpoint|heun|rk4|bns)-(\d+)$")


@runtime_checkable
class Solver(Protocol):
    """What samplers need from a solver (fixed-step or trained)."""

    @property
    def name(self) -> str: ...

    @property
    def n_steps(self) -> int: ...

    @property
    def nfe(self) -> int: ...

    def solve(
        self, f: Callable[..., Tensor], x0: Tensor, *, t0: float = 0.0, t1: float = 1.0,
        **cond: Any,
    ) -> Tensor: ...


@dataclass(frozen=True)
class FixedStepSolver:
    """``n_steps`` equal steps of an explicit Runge-Kutta method from t0 to t1.

    ``f(x, t, **cond)`` receives t as a 0-d tensor of x's dtype and device.
    """

    method: str
    n_steps: int

    def __post_init__(self) -> None:
        if self.method not in NFE_PER_STEP or self.method not in ODE_METHODS:
            raise ConfigError(
                f"unknown fixed-step method {self.method!r}; known: {sorted(NFE_PER_STEP)}"
            )
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int):
            raise ConfigError(f"n_steps must be an int, got {self.n_steps!r}")
        if self.n_steps < 1:
            raise ConfigError(f"solver {self.method}: n_steps must be >= 1, got {self.n_steps}")

    @property
    def name(self) -> str:
        return f"{self.method}-{self.n_steps}"

    @property
    def nfe(self) -> int:
        return NFE_PER_STEP[self.method] * self.n_steps

    @property
    def order(self) -> int:
        """Order of convergence of the method (global error ~ h^order)."""
        return ODE_METHODS[self.method][1]

    def times(self, t0: float = 0.0, t1: float = 1.0) -> Tensor:
        """The n_steps + 1 grid times (float64)."""
        return uniform_times(t0, t1, self.n_steps)

    def solve(
        self, f: Callable[..., Tensor], x0: Tensor, *, t0: float = 0.0, t1: float = 1.0,
        **cond: Any,
    ) -> Tensor:
        """x(t1) from x(t0) = x0; x0 (...) -> (...)."""
        return solve_ode(f, x0, self.times(t0, t1), self.method, **cond)

    def trajectory(
        self, f: Callable[..., Tensor], x0: Tensor, *, t0: float = 0.0, t1: float = 1.0,
        **cond: Any,
    ) -> Tensor:
        """The states at all grid times, (n_steps + 1, *x0.shape); entry 0 is x0."""
        return solve_ode_trajectory(f, x0, self.times(t0, t1), self.method, **cond)


def _trained_by_name(trained: Mapping[str, Solver] | Iterable[Solver] | None) -> dict[str, Solver]:
    if trained is None:
        return {}
    if isinstance(trained, Mapping):
        return dict(trained)
    return {s.name: s for s in trained}


def parse_solver(
    spec: str | Solver, *, trained: Mapping[str, Solver] | Iterable[Solver] | None = None
) -> Solver:
    """The solver a name stands for.

    Args:
        spec: a name such as "rk4-20" or "bns-8" (case and surrounding spaces ignored), or
            a solver object, which is returned unchanged.
        trained: trained solvers the caller holds, as a mapping name -> solver or an
            iterable of solvers (keyed by their ``name``); "bns-N" resolves only to these.

    Raises:
        ConfigError: for an unknown name, a step count below 1, or a "bns-N" that was
            not trained.
    """
    if not isinstance(spec, str):
        if isinstance(spec, Solver):
            return spec
        raise ConfigError(f"a solver is a name ({SOLVER_NAMES}) or a solver object, got {spec!r}")
    name = spec.strip().lower()
    m = _NAME.match(name)
    if m is None:
        raise ConfigError(f"unknown solver {spec!r}; known: {SOLVER_NAMES}")
    method, n_steps = m.group(1), int(m.group(2))
    if n_steps < 1:
        raise ConfigError(f"solver {spec!r}: the number of steps must be >= 1")
    if method != "bns":
        return FixedStepSolver(method, n_steps)
    available = _trained_by_name(trained)
    if name not in available:
        have = ", ".join(sorted(available)) or "none"
        raise ConfigError(
            f"solver {spec!r} is a bespoke solver that must be trained for this model first "
            f"(see caloforge.sampling.train_bns); trained solvers given: {have}"
        )
    solver = available[name]
    if solver.n_steps != n_steps:
        raise ConfigError(
            f"trained solver registered as {name!r} has {solver.n_steps} steps, not {n_steps}"
        )
    return solver
