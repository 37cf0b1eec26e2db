"""The autoencoder interface shared by every stage-1 model (VQ-VAEs and the VAE).

A latent pipeline needs three things of its autoencoder: map a shower into the latent
space, map a latent back to a shower, and know the latent's shape (to draw prior samples
of the right size). :class:`Autoencoder` states exactly that, as a structural
:class:`~typing.Protocol`, so the models do not inherit from a common base class:

* ``encode(x, cond) -> z`` with z of shape ``(N, *latent_shape)``. What z is depends on
  the model: the VQ-VAEs return the continuous encoder output *before* quantisation; the
  VAE returns the posterior mean mu (a deterministic summary; use
  ``VariationalAutoencoder.sample_latent`` for draws r = mu + sigma z).
* ``decode(z, cond) -> x`` maps any latent of that shape back to the model's data space
  (VQ-VAE: energy fractions; VAE: Bernoulli means, i.e. normalised voxels in (0, 1)).
* ``latent_shape``: one shower's latent, without the batch axis, channel first.

:class:`VariationalAutoencoder` adds what the VAE objective needs on top: the posterior
parameters and the decoder's pre-sigmoid output (for a numerically stable BCE).

Both protocols are ``runtime_checkable``: ``isinstance(model, Autoencoder)`` checks that
the members exist (not their signatures).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Autoencoder", "VariationalAutoencoder"]


@runtime_checkable
class Autoencoder(Protocol):
    """Any stage-1 autoencoder: ``encode``, ``decode`` and ``latent_shape``."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one shower's latent (channel first, no batch axis)."""
        ...

    def encode(self, x: Tensor, cond: Tensor) -> Tensor:
        """x in the data layout, cond (N, cond_in_dim) -> z (N, *latent_shape)."""
        ...

    def decode(self, z: Tensor, cond: Tensor) -> Tensor:
        """z (N, *latent_shape), cond (N, cond_in_dim) -> x in the data layout."""
        ...


@runtime_checkable
class VariationalAutoencoder(Autoencoder, Protocol):
    """An :class:`Autoencoder` with a Gaussian posterior q(r | x) = N(mu, diag(sigma^2))."""

    def encode_distribution(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x, cond -> (mu, logvar), each (N, *latent_shape)."""
        ...

    def decode_logits(self, z: Tensor, cond: Tensor) -> Tensor:
        """z (N, *latent_shape), cond -> decoder output before the sigmoid (data layout)."""
        ...
