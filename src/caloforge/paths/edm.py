"""EDM noise levels and preconditioning (Karras et al. 2022; CaloClouds II, docs/caloclouds.md).

The forward process adds Gaussian noise of standard deviation sigma to the data,

    x_sigma = x0 + sigma n,   n ~ N(0, I),

the SDE dx = sqrt(2 t) dw with sigma(t) = t, so the noise level sigma *is* the time here:
noise at ``t_noise = sigma_max`` (80) and data at ``t_data = sigma_min`` (0.002). A network
F is wrapped into a denoiser

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

with c_skip = sd^2 / (sd^2 + sigma^2), c_out = sigma sd / sqrt(sd^2 + sigma^2),
c_in = 1 / sqrt(sd^2 + sigma^2), c_noise = ln(sigma) / 4 and sd = sigma_data. These are
EDM's forms: c_in makes the network's input unit-variance and c_out its effective target
(x0 - c_skip x) / c_out unit-variance when the data have standard deviation sigma_data.
The CaloClouds II paper prints c_in and c_out swapped (docs/caloclouds.md, A1), which
gives neither.

Networks on this path predict the data ("data" prediction, the denoiser D); the
probability-flow ODE is dx/dsigma = (x - D(x; sigma)) / sigma, which the samplers of
:mod:`caloforge.sampling.edm` integrate on the EDM step schedule. Training draws
ln sigma ~ N(p_mean, p_std^2) and weights the squared error by
lambda(sigma) = 1 / c_out^2 = (sigma^2 + sd^2) / (sigma sd)^2.

:class:`ConsistencyPreconditioning` is the consistency-model variant (Song et al. 2023;
docs/caloclouds.md, 'Consistency distillation'): c_skip and c_out shifted by sigma_min,
so that f(x, sigma_min) = x holds exactly whatever the network returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import ProbabilityPath, broadcast_time

__all__ = ["ConsistencyPreconditioning", "EDMPreconditioning"]


def _as_sigma(sigma: float | Tensor) -> Tensor:
    """A noise level as a tensor; Python numbers become float64 0-d tensors."""
    if isinstance(sigma, Tensor):
        return sigma
    return torch.as_tensor(sigma, dtype=torch.float64)


def _sigma_column(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as a (N,) tensor on x's device (a scalar is repeated N times).

    The dtype is sigma's own (float64 for Python numbers and integer tensors), so that
    coefficients are computed in the precision the caller gave sigma in, and a sigma that
    equals ``sigma_min`` in that precision gives the exact consistency boundary.
    """
    s = torch.as_tensor(sigma, device=x.device)
    if not s.is_floating_point():
        s = s.to(torch.float64)
    if s.dim() == 0:
        return s.expand(x.shape[0])
    if s.dim() != 1 or s.shape[0] != x.shape[0]:
        raise ValueError(
            f"sigma of shape {tuple(s.shape)} for x of shape {tuple(x.shape)}: give a scalar "
            f"or one noise level per sample, shape ({x.shape[0]},)"
        )
    return s


@dataclass(frozen=True)
class EDMPreconditioning(ProbabilityPath):
    """EDM's preconditioning, training noise distribution and probability path.

    Fields:
        sigma_data: the data's standard deviation sd the scalings assume (CaloClouds II:
            0.5 for every feature).
        p_mean, p_std: training noise levels ln sigma ~ N(p_mean, p_std^2) (-1.2, 1.2).
        sigma_min, sigma_max: the ends of the sampling schedule (0.002, 80); the path's
            ``t_data`` and ``t_noise``.

    The coefficient methods (``c_skip`` ... ``loss_weight``) are elementwise on a sigma
    tensor of any shape. ``denoise`` and the path methods take x of shape (N, ...) and sigma
    as :func:`~caloforge.paths.broadcast_time` accepts it (a float, a 0-d tensor, shape (N,),
    ...); ``denoise`` needs one noise level per sample (a scalar or (N,)), because the
    network receives c_noise of shape (N,).

    Example::

        pre = EDMPreconditioning()
        x0_hat = pre.denoise(net, x_sigma, sigma, energy=e)   # net(c_in x, c_noise, energy=e)
    """

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    prediction = "data"

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not self.sigma_data > 0:
            raise ConfigError(f"{name}: sigma_data must be > 0, got {self.sigma_data}")
        if not self.p_std > 0:
            raise ConfigError(f"{name}: p_std must be > 0, got {self.p_std}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(
                f"{name}: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    @property
    def t_noise(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def t_data(self) -> float:  # type: ignore[override]
        return self.sigma_min

    # ------------------------------------------------------------------ coefficients
    def c_skip(self, sigma: float | Tensor) -> Tensor:
        """sd^2 / (sd^2 + sigma^2): how much of the noisy input passes straight through."""
        return torch.reciprocal(1 + (_as_sigma(sigma) / self.sigma_data) ** 2)

    def c_out(self, sigma: float | Tensor) -> Tensor:
        """sigma sd / sqrt(sd^2 + sigma^2): the scale of the network's output."""
        sigma = _as_sigma(sigma)
        return sigma * self.sigma_data / torch.sqrt(self.sigma_data**2 + sigma**2)

    def c_in(self, sigma: float | Tensor) -> Tensor:
        """1 / sqrt(sd^2 + sigma^2): makes the network's input unit-variance."""
        return torch.rsqrt(self.sigma_data**2 + _as_sigma(sigma) ** 2)

    def c_noise(self, sigma: float | Tensor) -> Tensor:
        """ln(sigma) / 4: the noise level the network is conditioned on."""
        return torch.log(_as_sigma(sigma)) / 4

    def loss_weight(self, sigma: float | Tensor) -> Tensor:
        """EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2.

        The weighting of docs/caloclouds.md, A3.
        """
        sigma = _as_sigma(sigma)
        sd2 = self.sigma_data**2
        return (sigma**2 + sd2) / (sigma**2 * sd2)

    def sample_sigma(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """n training noise levels, ln sigma ~ N(p_mean, p_std^2); shape (n,)."""
        return self.sample_time((n,), generator=generator, device=device, dtype=dtype)

    def denoise(
        self, net: Callable[..., Tensor], x: Tensor, sigma: float | Tensor, **cond: Any
    ) -> Tensor:
        """D(x; sigma) = c_skip x + c_out net(c_in x, c_noise, **cond).

        Args:
            net: ``net(x_in, c_noise, **cond)`` with x_in of x's shape and c_noise (N,);
                returns x's shape.
            x: noisy states (N, ...).
            sigma: the noise level, a scalar or (N,).
            cond: keyword conditions passed to ``net`` unchanged.

        Returns:
            The denoised estimate, x's shape.
        """
        s = _sigma_column(sigma, x)

        def coef(c: Tensor) -> Tensor:  # (N,) in sigma's dtype -> broadcast, x's dtype
            return broadcast_time(c, x)

        out = net(coef(self.c_in(s)) * x, self.c_noise(s).to(x.dtype), **cond)
        if out.shape != x.shape:
            raise ValueError(
                f"the network returned shape {tuple(out.shape)}, expected {tuple(x.shape)}"
            )
        return coef(self.c_skip(s)) * x + coef(self.c_out(s)) * out

    # ------------------------------------------------------------------ the path
    def sample(self, x1: Tensor, t: float | Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """``(x1 + sigma noise, x1)``: the noisy state and the denoiser's target."""
        if noise.shape != x1.shape:
            raise ValueError(f"noise {tuple(noise.shape)} and data {tuple(x1.shape)} differ")
        return x1 + broadcast_time(t, x1) * noise, x1

    def sample_time(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Training noise levels of the given shape, ln sigma ~ N(p_mean, p_std^2)."""
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return torch.exp(self.p_mean + self.p_std * z)

    def to_velocity(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """dx/dsigma = (x - D) / sigma, the probability-flow ODE of the EDM SDE."""
        return (x_t - pred) / broadcast_time(t, x_t)

    def to_data(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """The denoiser output is the data estimate itself."""
        return pred

    def to_noise(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """n = (x - D) / sigma."""
        return (x_t - pred) / broadcast_time(t, x_t)

    def to_score(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """grad log p_sigma(x) = (D - x) / sigma^2 (Tweedie)."""
        return (pred - x_t) / broadcast_time(t, x_t).square()


@dataclass(frozen=True)
class ConsistencyPreconditioning(EDMPreconditioning):
    """Consistency-model parameterisation f(x, sigma) with f(x, sigma_min) = x exactly.

    c_skip = sd^2 / ((sigma - eps)^2 + sd^2), c_out = (sigma - eps) sd / sqrt(sigma^2 + sd^2)
    and c_in, c_noise as EDM's, with eps = sigma_min (Song et al. 2023; docs/caloclouds.md,
    'Consistency distillation'). At sigma = eps, c_skip is 1 and c_out 0 in floating
    point, so ``denoise`` returns x bit for bit for any finite network output. For
    sigma >> eps both approach EDM's.

    ``denoise`` here gives the consistency function f, not a denoiser; the path methods
    (noising, training noise levels, conversions) are EDM's and apply to denoiser outputs,
    such as a distillation teacher's.
    """

    def _shifted(self, sigma: Tensor) -> Tensor:
        # eps in sigma's own dtype: sigma == sigma_min then gives exactly 0
        eps = torch.as_tensor(self.sigma_min, dtype=sigma.dtype, device=sigma.device)
        return sigma - eps

    def c_skip(self, sigma: float | Tensor) -> Tensor:
        """sd^2 / ((sigma - sigma_min)^2 + sd^2); exactly 1 at sigma_min."""
        # written as 1 / (1 + u^2): at u = 0 that is exactly 1 in every dtype, while
        # sd^2 / (0 + sd^2) need not be (torch divides a number by a tensor via reciprocal)
        shifted = self._shifted(_as_sigma(sigma))
        return torch.reciprocal(1 + (shifted / self.sigma_data) ** 2)

    def c_out(self, sigma: float | Tensor) -> Tensor:
        """(sigma - sigma_min) sd / sqrt(sigma^2 + sd^2); exactly 0 at sigma_min."""
        sigma = _as_sigma(sigma)
        return self._shifted(sigma) * self.sigma_data / torch.sqrt(self.sigma_data**2 + sigma**2)
