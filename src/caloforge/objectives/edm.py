"""EDM denoising loss (Karras et al. 2022; CaloClouds II Eq. 3.5 with EDM weighting,
docs/caloclouds.md, A3).

    L = < lambda(sigma) [ D(x0 + sigma n; sigma) - x0 ]^2 >,
        ln sigma ~ N(p_mean, p_std^2) (one per sample),  n ~ N(0, I),
        lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,

averaged over the batch and every element of x0. With EDM's preconditioning this equals
the unweighted squared error of the network against its effective target
(x0 - c_skip x) / c_out, which has unit variance at every noise level when the data have
standard deviation sigma_data; the optimum's loss is then 1 per element.

Padding: the CaloClouds II reference code averages over every point, padded ones included.
That is the default (``mask=None``); with a mask only the valid elements count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import EDMPreconditioning, broadcast_time

__all__ = ["EDMObjective", "edm_denoising_loss", "masked_mean"]


def masked_mean(err: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``err`` (N, ...) over all elements, or over those where ``mask`` is set.

    ``mask`` has a leading part of err's shape (e.g. (N, P) for err (N, P, F)), any dtype,
    nonzero = valid; it is broadcast over the trailing dimensions, so a valid point counts
    with all its features. Masked-out elements are excluded with ``where``, so NaN or inf
    there cannot leak in. An all-empty mask gives 0 (with a graph).
    """
    if mask is None:
        return err.mean()
    if mask.dim() > err.dim() or tuple(mask.shape) != tuple(err.shape[: mask.dim()]):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit data of shape {tuple(err.shape)}: "
            "give a leading part of the data's shape, e.g. (N, P) for (N, P, F)"
        )
    m = (mask != 0).reshape(*mask.shape, *([1] * (err.dim() - mask.dim()))).expand_as(err)
    total = torch.where(m, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum()
    return total / m.sum().clamp_min(1).to(err.dtype)


def edm_denoising_loss(
    denoise: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    precond: EDMPreconditioning,
    *,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    sigma: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """EDM-weighted squared error of a denoiser on noised data.

    Args:
        denoise: ``denoise(x_sigma, sigma)`` with sigma (N,) -> D(x_sigma; sigma), x0's
            shape; usually ``lambda x, s: precond.denoise(net, x, s, **cond)``.
        x0: clean data (N, ...).
        precond: the noise distribution and weighting (sigma_data, p_mean, p_std).
        mask: optional validity mask of a leading part of x0's shape, e.g. (N, P) for
            point clouds (N, P, F); None counts every element (padding included).
        generator: random source of sigma and the noise.
        sigma: noise levels (N,) to use instead of drawing them.
        noise: standard normal noise (x0's shape) to use instead of drawing it.

    Returns:
        0-d loss tensor.
    """
    n = x0.shape[0]
    if sigma is None:
        sigma = precond.sample_sigma(n, generator=generator, device=x0.device, dtype=x0.dtype)
    elif tuple(sigma.shape) != (n,):
        raise ValueError(f"sigma must have shape ({n},), got {tuple(sigma.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_sigma, _ = precond.sample(x0, sigma, noise)
    pred = denoise(x_sigma, sigma)
    if pred.shape != x0.shape:
        raise ValueError(
            f"the denoiser returned shape {tuple(pred.shape)}, expected {tuple(x0.shape)}"
        )
    err = broadcast_time(precond.loss_weight(sigma), x0) * (pred - x0).square()
    return masked_mean(err, mask)


@dataclass
class EDMObjective:
    """``objective(denoise, x0, mask=None) -> {"loss": ...}`` for training stages.

    ``denoise(x, sigma)`` is the preconditioned network D (conditions closed over by the
    caller). The generator, when set, draws sigma and the noise.
    """

    precond: EDMPreconditioning = field(default_factory=EDMPreconditioning)
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.precond, EDMPreconditioning):
            raise ConfigError(
                f"EDMObjective: precond must be an EDMPreconditioning, got {type(self.precond)}"
            )

    def __call__(
        self,
        denoise: Callable[[Tensor, Tensor], Tensor],
        x0: Tensor,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        loss = edm_denoising_loss(denoise, x0, self.precond, mask=mask, generator=self.generator)
        return {"loss": loss}
