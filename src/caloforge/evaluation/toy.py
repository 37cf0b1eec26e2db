"""Toy voxelised showers drawn with numpy, for tests and benchmarks of the metrics.

Not a physics simulator (see ``caloforge.simulation`` for that): a shower is a gamma-like
longitudinal profile times an exponential radial profile, with a random shower maximum,
radial scale and response, and voxel fluctuations that leave most voxels empty (about 75 %
on dataset 2), like real CaloChallenge showers. Distortions let tests check that metrics
see what they should: ``energy_scale`` multiplies every voxel, ``drop_layer`` empties a
layer.
"""

from __future__ import annotations

import numpy as np

from ..geometry import CylindricalGeometry
from ..io import ShowerData

__all__ = ["toy_showers"]


def toy_showers(geometry: CylindricalGeometry, n: int, *, rng: np.random.Generator | int | None = 0,
                e_range: tuple[float, float] = (1e3, 1e5), energy_scale: float = 1.0,
                drop_layer: int | None = None, occupancy: float = 0.25) -> ShowerData:
    """``n`` toy showers on ``geometry``; energies log-uniform in ``e_range`` (MeV).

    Args:
        occupancy: rough fraction of non-zero voxels.

    Returns:
        ShowerData with showers (n, V) float32.
    """
    rng = np.random.default_rng(rng)
    g = geometry
    e_inc = np.exp(rng.uniform(np.log(e_range[0]), np.log(e_range[1]), n))
    layers = np.arange(g.n_layers, dtype=np.float64)
    active = np.zeros(g.n_layers)
    active[list(g.active_layers)] = 1.0
    # longitudinal gamma profile, maximum near log(E) (deeper for higher energy)
    t_max = (0.25 + 0.05 * np.log10(e_inc) + rng.normal(0, 0.03, n))[:, None] * g.n_layers
    a = 4.0
    prof = (layers[None, :] + 0.5) ** a * np.exp(-a * (layers[None, :] + 0.5) / t_max) * active
    prof /= prof.sum(axis=1, keepdims=True)
    response = np.clip(rng.normal(0.9, 0.03, n), 0.5, 1.2)
    e_layer = (e_inc * response)[:, None] * prof
    # radial profile exp(-r / lambda), normalised inside each layer
    lam = np.abs(rng.normal(1.0, 0.15, n))[:, None] * 0.08 * max(float(np.max(g.r_centres)), 1.0)
    w = np.exp(-g.r_centres[None, :] / lam)
    starts = g.layer_offsets[:-1][g.layer_sizes > 0]
    norm = np.add.reduceat(w, starts, axis=1)
    full = np.zeros((n, g.n_layers))
    full[:, list(g.active_layers)] = norm
    w /= full[:, g.voxel_layer]
    mean = e_layer[:, g.voxel_layer] * w
    # sparse fluctuations: a voxel is hit with probability p, then carries mean / p on average
    c = np.quantile(mean, 1.0 - occupancy, axis=1, keepdims=True) + 1e-12
    p = 1.0 - np.exp(-mean / c)
    hit = rng.random(mean.shape) < p
    vox = np.where(hit, mean / np.maximum(p, 1e-12) * rng.gamma(4.0, 0.25, mean.shape), 0.0)
    vox *= energy_scale
    if drop_layer is not None:
        vox[:, g.layer_slice(drop_layer)] = 0.0
    return ShowerData(e_inc, vox.astype(np.float32), g)
