"""The linear (rectified / conditional flow-matching) path, CaloDREAM Eq. 7-8.

    x_t = (1 - t) eps + t x1,     target velocity u = x1 - eps,

with t = 0 pure noise and t = 1 data, and no minimal width (sigma_min = 0, as Eq. 8 implies).
Sampling integrates dx/dt = v(x, t) from t = 0 to t = 1.

Given (x_t, t), velocity, data and noise determine each other (x_t = x1 - (1 - t) u =
eps + t u). Near the ends two conversions are singular and return inf / nan there, by
design: ``data_to_velocity`` divides by 1 - t (at t = 1, x_t *is* the data and carries no
trace of the noise) and ``noise_to_velocity`` divides by t (at t = 0, x_t is the noise).
Callers that evaluate at the ends clamp t themselves (e.g. ``t.clamp(1e-4, 1 - 1e-4)``).
``velocity_to_data`` and ``velocity_to_noise`` are exact at every t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import AffinePath, broadcast_time

__all__ = ["LinearFlowPath"]


@dataclass(frozen=True)
class LinearFlowPath(AffinePath):
    """x_t = (1 - t) eps + t x1; the network predicts the velocity x1 - eps.

    Every method takes x of shape (N, ...) and t as a scalar, (N,), a leading part of x's
    shape or x's full shape (an independent t per element), and returns x's shape.

    Example::

        path = LinearFlowPath()
        x_t, target = path.sample(x1, t, torch.randn_like(x1))
        x1_hat = path.velocity_to_data(x_t, model(x_t, t), t)
    """

    prediction = "velocity"
    t_noise = 0.0
    t_data = 1.0

    # the schedule of the affine path: x_t = alpha x1 + sigma eps; sampling, the time
    # draw and the generic to_* dispatch come from AffinePath
    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    # --- the four conversions, in the simpler exact forms of this path -----------------

    def velocity_to_data(self, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
        """x1 = x_t + (1 - t) v; exact at every t."""
        return x_t + (1.0 - broadcast_time(t, x_t)) * v

    def velocity_to_noise(self, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
        """eps = x_t - t v; exact at every t."""
        return x_t - broadcast_time(t, x_t) * v

    def data_to_velocity(self, x_t: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
        """v = (x1 - x_t) / (1 - t); singular at t = 1 (see the module docstring)."""
        return (x1 - x_t) / (1.0 - broadcast_time(t, x_t))

    def noise_to_velocity(self, x_t: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
        """v = (x_t - eps) / t; singular at t = 0 (see the module docstring)."""
        return (x_t - eps) / broadcast_time(t, x_t)
