"""The interface every probability path offers to objectives and samplers.

A probability path connects a simple noise distribution with the data: for a time t, a
data sample x1 and a noise sample it gives the noisy state x_t and the regression target
of the network trained on that path. Paths differ in their time convention (the linear
flow-matching path runs from noise at t = 0 to data at t = 1; a VP-SDE and the EDM noise
levels run the other way) and in what their networks predict (velocity, noise or denoised
data). The conversions between those predictions live on the path, so that a sampler or a
loss written against this interface never needs to know which path it runs on.

Times broadcast against states by one rule (:func:`broadcast_time`): a scalar, a tensor of
shape (N,) for x of shape (N, ...), or any leading part of x's shape up to x's full shape
(an independent time per element, as in the CaloDREAM energy network's per-layer flows).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["PREDICTIONS", "AffinePath", "ProbabilityPath", "broadcast_time"]

#: The prediction targets a network on a path may have.
PREDICTIONS = ("velocity", "noise", "data")


def broadcast_time(t: float | Tensor, x: Tensor) -> Tensor:
    """Shape t so that it broadcasts against x, in x's dtype and on x's device.

    t: a Python number or 0-d tensor (one time for everything), shape (N,) for x of shape
    (N, ...), or more generally any leading part ``x.shape[:k]`` (k <= x.dim()), which gets
    trailing singleton dimensions; t of x's full shape is returned as it is. Gradients
    flow through the conversion.
    """
    if not isinstance(t, Tensor):
        return torch.as_tensor(t, dtype=x.dtype, device=x.device)
    t = t.to(dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t
    if t.dim() > x.dim() or tuple(t.shape) != tuple(x.shape[: t.dim()]):
        raise ValueError(
            f"time of shape {tuple(t.shape)} does not broadcast against x of shape "
            f"{tuple(x.shape)}: give a scalar, shape (N,) or a leading part of x's shape"
        )
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim())))


class ProbabilityPath(ABC):
    """A path between noise and data, with conversions between prediction targets.

    Class attributes a path sets:

    - ``prediction``: what its networks regress on, one of :data:`PREDICTIONS`;
    - ``t_noise`` and ``t_data``: the times of pure noise and of the data. A sampler
      integrates the probability-flow ODE dx/dt = ``to_velocity(x, model(x, t), t)``
      from ``t_noise`` to ``t_data``.

    All methods take x of shape (N, ...) and t as :func:`broadcast_time` accepts it, and
    return tensors of x's shape.
    """

    prediction: str
    t_noise: float
    t_data: float

    @abstractmethod
    def sample(self, x1: Tensor, t: float | Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Noisy state and regression target for data x1 (N, ...) and noise of its shape.

        Returns ``(x_t, target)``, both (N, ...), where ``target`` is of the kind
        named by ``prediction``.
        """

    @abstractmethod
    def sample_time(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Training times of the given shape, drawn from the path's time distribution."""

    @abstractmethod
    def to_velocity(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """dx/dt of the probability-flow ODE at (x_t, t) from a network output ``pred``."""

    @abstractmethod
    def to_data(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """The data estimate E[x1 | x_t] implied by a network output ``pred``."""

    @abstractmethod
    def to_noise(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        """The noise estimate E[noise | x_t] implied by a network output ``pred``."""


class AffinePath(ProbabilityPath):
    """x_t = alpha(t) x1 + sigma(t) eps, with velocity u = alpha'(t) x1 + sigma'(t) eps.

    Subclasses give ``alpha``, ``sigma`` and their derivatives (elementwise on a time
    tensor already broadcast against x) and set ``prediction``; every conversion follows
    from inverting the 2x2 linear map (x1, eps) -> (x_t, u), whose determinant is
    alpha sigma' - sigma alpha'. Conversions that divide by alpha or sigma are singular
    where those vanish (the ends of the path); subclasses document where.
    Times are U(0, 1), with noise at t = 0 and data at t = 1, unless a subclass says else.
    """

    t_noise = 0.0
    t_data = 1.0

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor: ...

    def sample(self, x1: Tensor, t: float | Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        if noise.shape != x1.shape:
            raise ValueError(f"noise {tuple(noise.shape)} and data {tuple(x1.shape)} differ")
        tb = broadcast_time(t, x1)
        x_t = self.alpha(tb) * x1 + self.sigma(tb) * noise
        target = {
            "velocity": lambda: self.d_alpha(tb) * x1 + self.d_sigma(tb) * noise,
            "noise": lambda: noise,
            "data": lambda: x1,
        }[self.prediction]()
        return x_t, target

    def sample_time(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)

    # conversions between the three predictions (x_t, value, t) -> other value

    def velocity_to_data(self, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        det = self.alpha(tb) * self.d_sigma(tb) - self.sigma(tb) * self.d_alpha(tb)
        return (self.d_sigma(tb) * x_t - self.sigma(tb) * v) / det

    def velocity_to_noise(self, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        det = self.alpha(tb) * self.d_sigma(tb) - self.sigma(tb) * self.d_alpha(tb)
        return (self.alpha(tb) * v - self.d_alpha(tb) * x_t) / det

    def data_to_velocity(self, x_t: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        eps = (x_t - self.alpha(tb) * x1) / self.sigma(tb)
        return self.d_alpha(tb) * x1 + self.d_sigma(tb) * eps

    def noise_to_velocity(self, x_t: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        x1 = (x_t - self.sigma(tb) * eps) / self.alpha(tb)
        return self.d_alpha(tb) * x1 + self.d_sigma(tb) * eps

    def data_to_noise(self, x_t: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        return (x_t - self.alpha(tb) * x1) / self.sigma(tb)

    def noise_to_data(self, x_t: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
        tb = broadcast_time(t, x_t)
        return (x_t - self.sigma(tb) * eps) / self.alpha(tb)

    def to_velocity(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        if self.prediction == "velocity":
            return pred
        if self.prediction == "data":
            return self.data_to_velocity(x_t, pred, t)
        return self.noise_to_velocity(x_t, pred, t)

    def to_data(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        if self.prediction == "data":
            return pred
        if self.prediction == "velocity":
            return self.velocity_to_data(x_t, pred, t)
        return self.noise_to_data(x_t, pred, t)

    def to_noise(self, x_t: Tensor, pred: Tensor, t: float | Tensor) -> Tensor:
        if self.prediction == "noise":
            return pred
        if self.prediction == "velocity":
            return self.velocity_to_noise(x_t, pred, t)
        return self.data_to_noise(x_t, pred, t)
