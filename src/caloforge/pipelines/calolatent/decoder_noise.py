"""The width of the VAE decoder's Gaussian, fitted per voxel and incident-energy bin.

CaloLatent's VAE is trained with a squared error, the likelihood of a Gaussian of fixed
width around the decoder's output. The paper (and its reference code) generates the
*mean* of that Gaussian. With a 144-dimensional latent for 6480 voxels, the mean misses
most of a shower's voxel-to-voxel fluctuations: on the shipped tiny model the
reconstruction error is 0.87 of the standardised spread per voxel, and showers decoded
from the mean are too smooth (too many small non-empty voxels, too-wide profiles).

Sampling the Gaussian instead, x = decoder(z) + sigma_v(E) * eps, restores the spread.
sigma_v(E) is the maximum-likelihood width: the root-mean-square reconstruction residual
(the encoder's posterior mean through the decoder) of voxel v over the training showers of
incident-energy bin E, with bins of equal counts in ln E. Fitted by the ``decoder_noise``
stage after ``vae``, stored as the stage's buffers; a checkpoint without it (or
``use_decoder_noise = False``) decodes the mean, as the paper. docs/calolatent.md has the
measured effect and the reasons.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import ConfigError

__all__ = ["DecoderNoise", "fit_decoder_noise"]


class DecoderNoise(nn.Module):
    """Per-voxel widths (n_bins, V) of the decoder's Gaussian in preprocessed space, and
    the n_bins - 1 inner bin edges in ln(E_inc / MeV)."""

    def __init__(self, n_bins: int, n_voxels: int) -> None:
        super().__init__()
        if n_bins < 1 or n_voxels < 1:
            raise ConfigError(f"DecoderNoise needs n_bins >= 1 and n_voxels >= 1, "
                              f"got {n_bins}, {n_voxels}")
        self.register_buffer("log_e_edges", torch.zeros(n_bins - 1, dtype=torch.float64))
        self.register_buffer("sigma", torch.zeros(n_bins, n_voxels))

    def widths(self, incident_energy: Tensor) -> Tensor:
        """sigma (N, V) for incident energies (N,) MeV."""
        log_e = torch.log(incident_energy.to(self.log_e_edges))
        return self.sigma[torch.bucketize(log_e, self.log_e_edges)]

    def forward(self, mean: Tensor, incident_energy: Tensor, noise: Tensor) -> Tensor:
        """A draw of the decoder's Gaussian: mean (N, V) + sigma (N, V) * noise (N, V)."""
        return mean + self.widths(incident_energy).to(mean) * noise


def fit_decoder_noise(residuals: Tensor, incident_energy: Tensor, n_bins: int) -> DecoderNoise:
    """The maximum-likelihood widths from reconstruction residuals (N, V) (data minus the
    decoded posterior mean, preprocessed space) of showers with energies (N,) MeV."""
    n = len(residuals)
    if n < 2 * n_bins:
        raise ConfigError(f"fitting the decoder's width in {n_bins} energy bins needs at least "
                          f"{2 * n_bins} showers, got {n}")
    log_e = torch.log(incident_energy.to(torch.float64))
    q = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    edges = torch.quantile(log_e, q) if n_bins > 1 else torch.zeros(0, dtype=torch.float64)
    bins = torch.bucketize(log_e, edges)
    noise = DecoderNoise(n_bins, residuals.shape[1])
    r2 = residuals.to(torch.float64) ** 2
    for k in range(n_bins):
        sel = bins == k
        # discrete energies (ds1) can leave a bin empty: it takes the width of all showers
        rows = r2[sel] if bool(sel.any()) else r2
        noise.sigma[k] = rows.mean(0).sqrt().to(noise.sigma)
    noise.log_e_edges.copy_(edges)
    return noise
