"""VAE objective of CaloDREAM's autoencoder (CaloDREAM Eq. 12 / Eq. 22): BCE + beta KL.

    L = -< x log x_psi + (1 - x) log(1 - x_psi) >_{r ~ q(r|x)} + beta KL[q(r|x) || N(0, 1)]

with x the layer-normalised voxels in [0, 1], x_psi = sigmoid(decoder logits) at one
reparameterised draw r = mu + sigma z per shower, and the closed-form Gaussian KL

    KL = 1/2 sum (mu^2 + sigma^2 - 1 - ln sigma^2).

The BCE is evaluated from the logits (``binary_cross_entropy_with_logits``), which stays
finite where the sigmoid saturates to exactly 0 or 1 in float32.

Reduction (the paper does not state it, and beta only means something relative to it):

* ``"mean"`` (default): the reconstruction term is the mean over every voxel of the
  batch, the KL the mean over every latent element. beta = 1e-6 (Tab. 4) is the number
  tuned for this convention (it is how CaloDREAM's VAE is trained), so the preset value
  keeps its meaning. It is not the ELBO: per shower it equals
  rec_sum / D_x + beta KL_sum / D_r.
* ``"sum"``: sum over voxels and over latent elements, mean over the batch. With
  beta = 1 this is exactly the negative ELBO per shower (up to the Bernoulli
  normalisation for non-binary x). The two conventions give the same gradients up to a
  global factor when beta_sum = beta_mean * D_x / D_r = beta_mean * F (F the reduction
  factor), so beta = 1e-6 under "mean" is beta = 2.7e-6 under "sum" for ds2.

``likelihood="gaussian"`` replaces the BCE by the Gaussian negative log-likelihood with a
fixed width, (x - x_psi)^2 / (2 sigma^2) without its constant — the "standard MSE loss"
that App. A.2 reports to reconstruct worse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["VAEObjective", "gaussian_kl"]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL[N(mu, exp(logvar)) || N(0, 1)] = (mu^2 + e^logvar - 1 - logvar) / 2."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


@dataclass
class VAEObjective:
    """``terms = objective(model, batch)`` for a VAE with a Gaussian posterior.

    Fields:
        beta: KL weight (CaloDREAM Tab. 4: 1e-6, with ``reduction="mean"``).
        likelihood: "bernoulli" (BCE, the paper's) or "gaussian" (squared error).
        reduction: "mean" (default) or "sum"; see the module docstring.
        sigma: width of the Gaussian likelihood (unused for "bernoulli").

    The model must provide ``encode_distribution(x, cond) -> (mu, logvar)`` and
    ``decode_logits(r, cond)`` (the :class:`~caloforge.models.autoencoders.base.
    VariationalAutoencoder` protocol). ``batch`` holds ``x`` (N, *data shape) in [0, 1]
    and ``cond`` (N, cond_in_dim). One posterior draw per shower comes from torch's
    global generator.

    Returns ``{"loss": rec + beta * kl, "rec": ..., "kl": ...}`` (0-d tensors; ``kl``
    unweighted, both in the chosen reduction).
    """

    beta: float = 1e-6
    likelihood: str = "bernoulli"
    reduction: str = "mean"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(
                f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}"
            )
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum', got {self.reduction!r}")
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {self.sigma}")

    def _reduce(self, per_element: Tensor) -> Tensor:
        if self.reduction == "mean":
            return per_element.mean()
        return per_element.reshape(per_element.shape[0], -1).sum(1).mean()

    def reconstruction(self, x: Tensor, logits: Tensor) -> Tensor:
        """Negative log-likelihood of x under the decoder output, reduced. Same shapes."""
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            nll = (x - torch.sigmoid(logits)).pow(2) / (2.0 * self.sigma**2)
        return self._reduce(nll)

    def kl(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL[q(r|x) || N(0, 1)], reduced."""
        return self._reduce(gaussian_kl(mu, logvar))

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x, cond = batch["x"], batch["cond"]
        mu, logvar = model.encode_distribution(x, cond)
        r = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = self.reconstruction(x, model.decode_logits(r, cond))
        kl = self.kl(mu, logvar)
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl}
