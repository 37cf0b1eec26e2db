"""Samplers of an EDM denoiser and of a consistency model (CaloClouds II, docs/caloclouds.md).

Everything here takes a callable and knows nothing of networks:

* a *denoiser* ``denoiser(x, sigma) -> D(x; sigma)``, sigma of shape (N,), e.g.
  ``lambda x, s: precond.denoise(net, x, s, **cond)``;
* a *consistency function* ``fn(x, sigma) -> f(x, sigma)``, the same call with
  :class:`~caloforge.paths.ConsistencyPreconditioning`.

:func:`edm_sample` integrates the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
from sigma_max to 0 on the EDM step schedule (:func:`karras_sigmas`):

    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,

i = 0 ... n - 1, then sigma_n = 0 (rho = 7). "heun" is the second-order Heun method whose
last step, to sigma = 0, is a plain Euler step (the field is singular there): n levels cost
2n - 1 denoiser calls, 25 for CaloClouds II's 13 (docs/caloclouds.md, A15). "euler" costs
n. With ``s_churn > 0`` it is EDM's stochastic sampler: before each step with
s_tmin <= sigma_i <= s_tmax, noise raises the level to sigma_hat = (1 + gamma) sigma_i,
gamma = min(s_churn / n, sqrt(2) - 1), and the step starts from sigma_hat.

:func:`consistency_sample` is the consistency model's sampler: one step
x = f(sigma_0 z, sigma_0), then for every further level s: x = f(x + sqrt(s^2 - eps^2) z, s).

:class:`EDMSampler` names a sampler ("heun-13", "euler-40", "consistency-1");
:func:`parse_edm_sampler` reads the name. Schedules are computed in float64; samples come
back in the dtype of the noise. Like the ODE solvers, nothing here switches gradients off:
callers that only sample use ``torch.no_grad()`` / ``torch.inference_mode()``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "EDM_METHODS",
    "EDM_SAMPLER_NAMES",
    "Denoiser",
    "EDMSampler",
    "consistency_levels",
    "consistency_sample",
    "edm_sample",
    "karras_sigmas",
    "parse_edm_sampler",
]

#: ``denoiser(x, sigma)`` with sigma (N,) -> D(x; sigma) of x's shape (or f(x, sigma))
Denoiser = Callable[[Tensor, Tensor], Tensor]

#: the methods an :class:`EDMSampler` may have
EDM_METHODS = ("heun", "euler", "consistency")

#: the names :func:`parse_edm_sampler` understands, for error messages and help texts
EDM_SAMPLER_NAMES = "heun-N (N >= 1 noise levels), euler-N, consistency-K (K >= 1 steps)"

_NAME = re.compile(r"^(heun|euler|consistency)-(\d+)$")


def _check_range(sigma_min: float, sigma_max: float, rho: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not rho > 0:
        raise ConfigError(f"rho must be > 0, got {rho}")


def karras_sigmas(
    n_levels: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """EDM's noise levels, from sigma_max down to sigma_min, then a final 0.

    Args:
        n_levels: noise levels (>= 1); one level is just sigma_max.
        sigma_min, sigma_max: the ends (0.002 and 80).
        rho: the schedule's exponent (7); larger puts more levels near sigma_min.

    Returns:
        (n_levels + 1,) tensor, decreasing, ``[sigma_max, ..., sigma_min, 0]``.
    """
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
        raise ConfigError(f"n_levels must be an int >= 1, got {n_levels!r}")
    _check_range(sigma_min, sigma_max, rho)
    if n_levels == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, n_levels, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        levels = (hi + ramp * (lo - hi)) ** rho
        # pin the ends: the power of a power is off by an ulp or so
        levels[0], levels[-1] = sigma_max, sigma_min
    levels = torch.cat([levels, levels.new_zeros(1)])
    return levels.to(device=device, dtype=dtype)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # drawn on the generator's device and moved: a seed gives the same samples everywhere
    if generator is None:
        return torch.randn_like(x)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return z.to(x.device)


def _column(sigma: float, x: Tensor) -> Tensor:
    """A noise level as the (N,) tensor a denoiser receives, in x's dtype and device."""
    return torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)


def _levels(sigmas: Sequence[float] | Tensor) -> list[float]:
    t = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"noise levels must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("noise levels must be finite")
    return t.tolist()


def edm_sample(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    *,
    method: str = "heun",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integrate dx/dsigma = (x - D(x; sigma)) / sigma from sigmas[0] to sigmas[-1].

    Args:
        denoiser: ``denoiser(x, sigma)`` with sigma (N,) in x's dtype; returns x's shape.
        noise: standard normal draws of the output's shape (N, ...); x starts at
            ``sigmas[0] * noise``.
        sigmas: strictly decreasing noise levels, ending at 0 or above (e.g.
            :func:`karras_sigmas`); a step to 0 is always a plain Euler step.
        method: "heun" (second order, two calls per step but one on the last step to 0)
            or "euler" (one call per step).
        s_churn: EDM's stochasticity (0: the deterministic ODE sampler).
        s_tmin, s_tmax: churn only at levels in [s_tmin, s_tmax].
        s_noise: scale of the churn noise (1: exact).
        generator: random source of the churn noise (the default generator when None).

    Returns:
        The samples, the noise's shape and dtype.
    """
    if method not in ("heun", "euler"):
        raise ConfigError(f"EDM ODE method must be heun or euler, got {method!r}")
    if not s_churn >= 0 or not s_noise >= 0:
        raise ConfigError(f"s_churn and s_noise must be >= 0, got {s_churn}, {s_noise}")
    levels = _levels(sigmas)
    if len(levels) < 2:
        raise ValueError("edm_sample needs at least two noise levels (start and end)")
    if any(b >= a for a, b in zip(levels, levels[1:])) or levels[-1] < 0:
        raise ValueError(f"noise levels must decrease strictly to a value >= 0, got {levels}")
    if levels[0] <= 0:
        raise ValueError(f"the first noise level must be > 0, got {levels[0]}")
    n_steps = len(levels) - 1
    gamma_max = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
    x = noise * levels[0]
    for s, s_next in zip(levels[:-1], levels[1:]):
        gamma = gamma_max if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1.0 + gamma)
        if gamma > 0:
            # raise the noise level from s to s_hat: add variance s_hat^2 - s^2
            x = x + math.sqrt(s_hat**2 - s**2) * s_noise * _randn_like(x, generator)
        d = (x - denoiser(x, _column(s_hat, x))) / s_hat
        x_next = x + (s_next - s_hat) * d
        if method == "heun" and s_next > 0:
            d_next = (x_next - denoiser(x_next, _column(s_next, x_next))) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
    return x.to(noise.dtype)


def consistency_sample(
    fn: Denoiser,
    noise: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    sigma_min: float = 0.002,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample a consistency model in ``len(sigmas)`` calls (docs/caloclouds.md, 'Consistency
    distillation').

    Args:
        fn: the consistency function ``fn(x, sigma)``, sigma (N,) in x's dtype.
        noise: standard normal draws of the output's shape (N, ...).
        sigmas: decreasing noise levels, all above sigma_min; the first is where sampling
            starts (sigma_max), each later one a re-noising level.
        sigma_min: the consistency model's eps (the level f maps to).
        generator: random source of the re-noising draws.

    Returns:
        The samples, the noise's shape and dtype.
    """
    levels = _levels(sigmas)
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"consistency noise levels must decrease, got {levels}")
    if levels[-1] < sigma_min:
        raise ValueError(f"consistency noise levels must be >= sigma_min={sigma_min}, got {levels}")
    x = fn(noise * levels[0], _column(levels[0], noise))
    for s in levels[1:]:
        # x sits at noise level sigma_min; re-noise it to level s
        x = x + math.sqrt(s**2 - sigma_min**2) * _randn_like(x, generator)
        x = fn(x, _column(s, x))
    return x.to(noise.dtype)


def consistency_levels(
    n_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """The levels of a k-step consistency sampler: [sigma_max] for k = 1, else the first k
    of the k + 1 EDM levels (:func:`karras_sigmas`), i.e. the schedule without sigma_min,
    where f would return its input and the call be wasted. (k = 2: [80, 2.52].)"""
    return karras_sigmas(n_steps + 1, sigma_min, sigma_max, rho)[:n_steps]


@dataclass(frozen=True)
class EDMSampler:
    """A named sampler of a denoiser ("heun", "euler") or consistency function.

    Fields:
        method: "heun", "euler" or "consistency".
        n_steps: noise levels of the EDM schedule (heun, euler) or consistency steps.
        sigma_min, sigma_max, rho: the schedule (0.002, 80, 7).
        s_churn: EDM's stochasticity for heun and euler (0 = deterministic).

    ``nfe`` counts calls of the network: heun-n 2n - 1, euler-n n, consistency-k k.
    """

    method: str
    n_steps: int
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    s_churn: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in EDM_METHODS:
            raise ConfigError(f"unknown EDM sampler method {self.method!r}; known: {EDM_METHODS}")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ConfigError(f"sampler {self.method}: n_steps must be an int >= 1, "
                              f"got {self.n_steps!r}")
        _check_range(self.sigma_min, self.sigma_max, self.rho)
        if not self.s_churn >= 0:
            raise ConfigError(f"s_churn must be >= 0, got {self.s_churn}")
        if self.method == "consistency" and self.s_churn != 0:
            raise ConfigError("s_churn applies to heun and euler, not to consistency sampling")

    @property
    def name(self) -> str:
        return f"{self.method}-{self.n_steps}"

    @property
    def nfe(self) -> int:
        return 2 * self.n_steps - 1 if self.method == "heun" else self.n_steps

    def sigmas(self) -> Tensor:
        """The noise levels used (float64): n + 1 with the final 0 for heun and euler, the
        k re-noising levels for consistency (:func:`consistency_levels`)."""
        if self.method == "consistency":
            return consistency_levels(self.n_steps, self.sigma_min, self.sigma_max, self.rho)
        return karras_sigmas(self.n_steps, self.sigma_min, self.sigma_max, self.rho)

    def sample(
        self, denoiser: Denoiser, noise: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Standard normal ``noise`` (N, ...) -> samples (N, ...) in noise's dtype.

        ``denoiser`` is D(x, sigma) for heun and euler, the consistency function f(x, sigma)
        for consistency; ``generator`` drives churn and re-noising draws.
        """
        if self.method == "consistency":
            return consistency_sample(denoiser, noise, self.sigmas(), sigma_min=self.sigma_min,
                                      generator=generator)
        return edm_sample(denoiser, noise, self.sigmas(), method=self.method,
                          s_churn=self.s_churn, generator=generator)


def parse_edm_sampler(name: str | EDMSampler, **kwargs: float) -> EDMSampler:
    """The sampler a name stands for: "heun-13", "euler-40", "consistency-1", ...

    Args:
        name: ``<method>-<n>`` (case and surrounding spaces ignored), or an
            :class:`EDMSampler`, returned unchanged.
        kwargs: further :class:`EDMSampler` fields (sigma_min, sigma_max, rho, s_churn).

    Raises:
        ConfigError: for a name of another form, n < 1, or bad schedule values.
    """
    if isinstance(name, EDMSampler):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"an EDM sampler is a name ({EDM_SAMPLER_NAMES}), got {name!r}")
    m = _NAME.match(name.strip().lower())
    if m is None:
        raise ConfigError(f"unknown EDM sampler {name!r}; valid forms: {EDM_SAMPLER_NAMES}")
    unknown = set(kwargs) - {"sigma_min", "sigma_max", "rho", "s_churn"}
    if unknown:
        raise ConfigError(f"unknown EDM sampler options {sorted(unknown)}")
    return EDMSampler(m.group(1), int(m.group(2)), **kwargs)
