"""The variance-preserving SDE with a linear noise schedule (CaloLatent, docs/calolatent.md).

Forward process, t from data (t ~ 0) to noise (t = 1)::

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW,     beta(t) = beta_min + t (beta_max - beta_min)

with beta_min = 0.1 and beta_max = 20 (the CaloScore-family schedule CaloLatent uses; the
paper states no schedule). Its marginal given x0 is Gaussian,

    x_t = alpha(t) x0 + sigma(t) eps,
    alpha(t) = exp(-1/2 B(t)),  B(t) = beta_min t + 1/2 t^2 (beta_max - beta_min),
    sigma(t)^2 = 1 - alpha(t)^2,

so the VP-SDE is an affine path like the linear flow-matching one, run the other way: noise
at ``t_noise = 1`` and data at ``t_data = t_min`` (1e-5: the schedule is used on
[1e-5, 1] for training times and sampling, because sigma(0) = 0 makes the score singular).
Networks on it predict the noise eps ("epsilon prediction"); the score is
``s = -eps / sigma(t)``.

The probability-flow ODE of the SDE, dx/dt = -1/2 beta(t) (x + s(x, t)), is the affine
path's velocity ``to_velocity`` (the same vector field, written without dividing by alpha),
so every shared ODE solver integrates it from ``t_noise`` to ``t_data``; the reverse-SDE
samplers of :mod:`caloforge.sampling.sde` use ``drift`` and ``diffusion``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import AffinePath, broadcast_time

__all__ = ["VPSDEPath"]


@dataclass(frozen=True)
class VPSDEPath(AffinePath):
    """Linear-schedule VP-SDE; the network predicts the noise eps.

    Fields:
        beta_min, beta_max: the schedule's end points (CaloLatent: 0.1 and 20).
        t_min: the smallest time used (CaloLatent: 1e-5), the path's ``t_data``.

    Every method takes x of shape (N, ...) and t as a scalar, (N,), a leading part of x's
    shape or x's full shape (:func:`~caloforge.paths.broadcast_time`) and returns x's
    shape; schedule functions (``beta``, ``alpha``, ``sigma``, ...) are elementwise in t.

    Example::

        path = VPSDEPath()
        x_t, eps = path.sample(x0, t, torch.randn_like(x0))
        score = path.noise_to_score(x_t, model(x_t, t), t)
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-5

    prediction = "noise"
    t_noise = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.beta_min <= self.beta_max or self.beta_max <= 0:
            raise ConfigError(
                f"VP-SDE needs 0 <= beta_min <= beta_max and beta_max > 0, got "
                f"{self.beta_min}, {self.beta_max}"
            )
        if not 0 < self.t_min < 1:
            raise ConfigError(f"VP-SDE t_min must lie in (0, 1), got {self.t_min}")

    @property
    def t_data(self) -> float:  # type: ignore[override]
        return self.t_min

    # ------------------------------------------------------------------ schedule
    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min), elementwise."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta = beta_min t + 1/2 t^2 (beta_max - beta_min)."""
        return self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)

    def alpha(self, t: Tensor) -> Tensor:
        """Mean coefficient exp(-B(t) / 2)."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation sqrt(1 - exp(-B(t))), computed with expm1 so that it stays
        accurate at t_min, where it is about sqrt(beta_min t_min) = 1e-3."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        # d/dt sqrt(1 - alpha^2) = -alpha alpha' / sigma = beta alpha^2 / (2 sigma)
        return 0.5 * self.beta(t) * torch.exp(-self.integrated_beta(t)) / self.sigma(t)

    # ------------------------------------------------------------------ the SDE
    def marginal(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of x_t given x0, both of x0's shape."""
        tb = broadcast_time(t, x0)
        return self.alpha(tb) * x0, self.sigma(tb).expand_as(x0)

    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Forward drift f(x, t) = -1/2 beta(t) x."""
        return -0.5 * self.beta(broadcast_time(t, x)) * x

    def diffusion(self, t: float | Tensor, like: Tensor) -> Tensor:
        """Forward diffusion g(t) = sqrt(beta(t)), shaped to broadcast against ``like``."""
        return torch.sqrt(self.beta(broadcast_time(t, like)))

    def sample_time(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """t ~ U(t_min, 1), uniform without importance sampling (CaloLatent)."""
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return self.t_min + (1.0 - self.t_min) * u

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draws of the terminal distribution N(0, I) (alpha(1) = 6e-3: close enough)."""
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    # ------------------------------------------------------------------ conversions
    def noise_to_score(self, x_t: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
        """s = -eps / sigma(t)."""
        return -eps / self.sigma(broadcast_time(t, x_t))

    def score_to_noise(self, x_t: Tensor, score: Tensor, t: float | Tensor) -> Tensor:
        """eps = -sigma(t) s."""
        return -self.sigma(broadcast_time(t, x_t)) * score

    def data_to_score(self, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
        """s = -(x_t - alpha x0) / sigma^2."""
        tb = broadcast_time(t, x_t)
        return -(x_t - self.alpha(tb) * x0) / self.sigma(tb).square()

    def score_to_data(self, x_t: Tensor, score: Tensor, t: float | Tensor) -> Tensor:
        """x0 = (x_t + sigma^2 s) / alpha (Tweedie)."""
        tb = broadcast_time(t, x_t)
        return (x_t + self.sigma(tb).square() * score) / self.alpha(tb)

    def to_score(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """The score implied by a noise prediction."""
        return self.noise_to_score(x_t, pred, t)

    def to_velocity(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """Probability-flow drift -1/2 beta (x + s) = -1/2 beta (x - eps / sigma).

        Equal to the affine path's alpha' x0 + sigma' eps, but without the division by
        alpha(t), which is 6e-3 at t = 1.
        """
        tb = broadcast_time(t, x_t)
        return -0.5 * self.beta(tb) * (x_t - pred / self.sigma(tb))
