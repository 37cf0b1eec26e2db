"""Samplers of a noise-prediction network on the VP-SDE (CaloLatent, docs/calolatent.md).

Two ways from noise (t = 1) to data (t = t_min):

* :func:`euler_maruyama`: the reverse SDE dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dW-bar,
  stepped as CaloLatent's predictor-corrector sampler with the corrector off: N network
  calls at the N times ``linspace(1, t_min, N)``, each a step of size
  dt = (1 - t_min) / (N - 1)::

      x_mean = x + [1/2 beta(t) x + beta(t) s(x, t)] dt
      x      = x_mean + sqrt(beta(t) dt) z

  and the *noise-free* ``x_mean`` of the last step is returned. (The last step starts at
  t_min and so reaches slightly past t = 0, as in the reference sampler.)
* :func:`probability_flow`: the deterministic ODE with the same marginals,
  dx/dt = -1/2 beta(t) (x + s(x, t)), as a field ``f(x, t, **cond)`` for the shared ODE
  solvers (:mod:`caloforge.sampling.solvers`), e.g. ``parse_solver("rk4-10")`` with 40
  network calls. ``rho > 1`` integrates in s with t = t_min + (1 - t_min) s^rho, which
  puts more of a uniform grid's steps near the data, where the field changes fastest.

:func:`parse_sde_sampler` turns a name into either: "em-200" (Euler-Maruyama, 200 steps)
or any ODE solver name ("euler-50", "heun-10", "rk4-10", ...). The network is any callable
``noise_fn(x, t, **cond)`` with t of shape (N,); nothing here knows what it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import VPSDEPath
from .solvers import SOLVER_NAMES, Solver, parse_solver

__all__ = [
    "SDE_SAMPLER_NAMES",
    "EulerMaruyama",
    "ProbabilityFlowSampler",
    "SDESampler",
    "euler_maruyama",
    "parse_sde_sampler",
    "probability_flow",
]

#: sampler names :func:`parse_sde_sampler` understands
SDE_SAMPLER_NAMES = f"em-N (Euler-Maruyama), or a probability-flow ODE solver: {SOLVER_NAMES}"

NoiseFn = Callable[..., Tensor]

_EM = re.compile(r"^em-(\d+)$")


def _time_column(t: Tensor | float, x: Tensor) -> Tensor:
    """A scalar time as a (N,) tensor for the network, in x's dtype and device."""
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # drawn on the generator's device and moved: the same seed gives the same samples on
    # every device
    if generator is None:
        return torch.randn_like(x)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return z.to(x.device)


def euler_maruyama(
    path: VPSDEPath,
    noise_fn: NoiseFn,
    x: Tensor,
    *,
    n_steps: int = 200,
    generator: torch.Generator | None = None,
    **cond: Any,
) -> Tensor:
    """Reverse-SDE Euler-Maruyama from x ~ N(0, I) at t = 1; returns the last mean.

    Args:
        path: the VP-SDE (drift, diffusion, noise -> score).
        noise_fn: ``noise_fn(x, t, **cond)``, t (N,), the network's eps prediction.
        x: the initial noise (N, ...).
        n_steps: network calls (>= 2), at ``linspace(1, t_min, n_steps)``.
        generator: random source of the step noise (the default generator when None).
        cond: keyword conditions passed to ``noise_fn``.

    Returns:
        The noise-free mean of the last step, x's shape.
    """
    if n_steps < 2:
        raise ConfigError(f"Euler-Maruyama needs n_steps >= 2, got {n_steps}")
    times = torch.linspace(path.t_noise, path.t_data, n_steps, dtype=torch.float64)
    dt = (path.t_noise - path.t_data) / (n_steps - 1)
    x_mean = x
    for i, t in enumerate(times.tolist()):
        eps = noise_fn(x, _time_column(t, x), **cond)
        score = path.noise_to_score(x, eps, t)
        beta = path.beta(torch.as_tensor(t, dtype=x.dtype, device=x.device))
        # reverse-time step: x - [f - g^2 s] dt with f = -beta x / 2, g^2 = beta
        x_mean = x + (0.5 * beta * x + beta * score) * dt
        if i < n_steps - 1:  # the last step's noise is never used
            x = x_mean + torch.sqrt(beta * dt) * _randn_like(x, generator)
    return x_mean


def probability_flow(path: VPSDEPath, noise_fn: NoiseFn, rho: float = 1.0
                     ) -> Callable[..., Tensor]:
    """The probability-flow ODE as a field ``f(x, s, **cond)`` for the shared solvers.

    With ``rho = 1``, s is t itself (integrate from ``path.t_noise`` to ``path.t_data``).
    With ``rho > 1``, s runs from 1 to 0 and t = t_min + (1 - t_min) s^rho; the field is
    dx/ds = dx/dt * dt/ds. ``f`` accepts s as a scalar tensor (as the solvers pass it).
    """
    if not rho >= 1.0:
        raise ConfigError(f"rho must be >= 1, got {rho}")

    def field_t(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        eps = noise_fn(x, _time_column(t, x), **cond)
        return path.to_velocity(x, eps, t)

    if rho == 1.0:
        return field_t
    span = path.t_noise - path.t_data

    def field_s(x: Tensor, s: Tensor, **cond: Any) -> Tensor:
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device).clamp_min(0.0)
        t = path.t_data + span * s**rho
        return field_t(x, t, **cond) * (span * rho * s ** (rho - 1.0))

    return field_s


@runtime_checkable
class SDESampler(Protocol):
    """What a generator needs of a sampler: ``name``, ``nfe`` and ``sample``."""

    @property
    def name(self) -> str: ...

    @property
    def nfe(self) -> int: ...

    def sample(self, path: VPSDEPath, noise_fn: NoiseFn, x: Tensor, *,
               generator: torch.Generator | None = None, **cond: Any) -> Tensor: ...


@dataclass(frozen=True)
class EulerMaruyama:
    """:func:`euler_maruyama` with ``n_steps`` network calls (CaloLatent: 200)."""

    n_steps: int = 200

    def __post_init__(self) -> None:
        if self.n_steps < 2:
            raise ConfigError(f"Euler-Maruyama needs n_steps >= 2, got {self.n_steps}")

    @property
    def name(self) -> str:
        return f"em-{self.n_steps}"

    @property
    def nfe(self) -> int:
        return self.n_steps

    def sample(self, path: VPSDEPath, noise_fn: NoiseFn, x: Tensor, *,
               generator: torch.Generator | None = None, **cond: Any) -> Tensor:
        """x (N, ...) noise at t = 1 -> samples (N, ...)."""
        return euler_maruyama(path, noise_fn, x, n_steps=self.n_steps, generator=generator,
                              **cond)


@dataclass(frozen=True)
class ProbabilityFlowSampler:
    """The probability-flow ODE solved by a shared solver (deterministic given x)."""

    solver: Solver
    rho: float = 1.0

    def __post_init__(self) -> None:
        if not self.rho >= 1.0:
            raise ConfigError(f"rho must be >= 1, got {self.rho}")

    @property
    def name(self) -> str:
        return self.solver.name

    @property
    def nfe(self) -> int:
        return self.solver.nfe

    def sample(self, path: VPSDEPath, noise_fn: NoiseFn, x: Tensor, *,
               generator: torch.Generator | None = None, **cond: Any) -> Tensor:
        """x (N, ...) noise at t = 1 -> samples (N, ...); ``generator`` is unused."""
        f = probability_flow(path, noise_fn, self.rho)
        if self.rho == 1.0:
            return self.solver.solve(f, x, t0=path.t_noise, t1=path.t_data, **cond)
        return self.solver.solve(f, x, t0=1.0, t1=0.0, **cond)


def parse_sde_sampler(spec: str | SDESampler, *, rho: float = 1.0) -> SDESampler:
    """The sampler a name stands for: "em-N" or an ODE solver name ("rk4-10", ...).

    ``rho`` is the time exponent of ODE samplers (see :func:`probability_flow`). A sampler
    object is returned unchanged.
    """
    if not isinstance(spec, str):
        if isinstance(spec, SDESampler):
            return spec
        raise ConfigError(f"a sampler is a name ({SDE_SAMPLER_NAMES}) or a sampler, got {spec!r}")
    name = spec.strip().lower()
    m = _EM.match(name)
    if m is not None:
        return EulerMaruyama(int(m.group(1)))
    try:
        solver = parse_solver(name)
    except ConfigError as exc:
        raise ConfigError(f"sampler {spec!r}: {exc} (samplers: {SDE_SAMPLER_NAMES})") from None
    return ProbabilityFlowSampler(solver, rho)
