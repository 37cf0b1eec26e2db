"""Precision, recall, density and coverage (Naeem et al. 2020) with k nearest neighbours.

For real samples R (n) and generated samples F (m), with ``rad_R(i)`` the distance of
real sample i to its k-th nearest real neighbour (itself excluded), likewise ``rad_F``:

* precision = 1/m sum_j [exists i: |F_j - R_i| <= rad_R(i)]
* recall    = 1/n sum_i [exists j: |R_i - F_j| <= rad_F(j)]
* density   = 1/(k m) sum_j sum_i [|F_j - R_i| <= rad_R(i)]
* coverage  = 1/n sum_i [min_j |R_i - F_j| <= rad_R(i)]

Voxel inputs are ``log10`` of the voxel energies (MeV) with zero voxels set to 0.1 MeV
first (:func:`log_voxels`).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .fpd_kpd import InsufficientDataError

__all__ = ["log_voxels", "prdc"]


def log_voxels(showers: np.ndarray, floor_mev: float = 0.1) -> np.ndarray:
    """(N, V) voxel energies -> log10, with voxels below ``floor_mev`` (zeros) set to it.

    Voxels above the threshold but below 0.1 MeV (datasets 2/3) are also lifted to
    0.1 MeV, i.e. the floor acts on all values below it, not only exact zeros.
    """
    return np.log10(np.maximum(np.asarray(showers, dtype=np.float32), floor_mev))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    dist, _ = nn.kneighbors(x)
    return dist[:, -1]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` (m, D) against ``real`` (n, D).

    The k-th-neighbour radii come from sklearn's NearestNeighbors; the fake-real
    distances are computed in float64 (the same precision as the radii, so a point
    exactly on a ball's edge is counted consistently) in blocks of 1024 fake rows, so
    memory stays at ``1024 * n`` doubles.
    Returns ``{"precision", "recall", "density", "coverage"}`` as floats.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if len(real) <= k or len(fake) <= k:
        raise InsufficientDataError(f"PRDC with k={k} needs more than {k} samples on each side")
    # the radii come from sklearn and the cross distances from a dot-product expansion,
    # which round differently: a point on a ball's edge (the k-th neighbour itself) must
    # count as inside, so radii are widened by a relative 1e-9
    rad_r = _kth_radius(real, k) * (1 + 1e-9)
    rad_f = _kth_radius(fake, k) * (1 + 1e-9)
    n, m = len(real), len(fake)
    precision_hits = np.zeros(m, dtype=bool)
    density_counts = np.zeros(m, dtype=np.int64)
    recall_hits = np.zeros(n, dtype=bool)
    min_to_fake = np.full(n, np.inf)
    r2 = np.einsum("ij,ij->i", real, real)
    for start in range(0, m, 1024):
        f = fake[start:start + 1024]
        d2 = np.einsum("ij,ij->i", f, f)[:, None] + r2[None, :] - 2.0 * (f @ real.T)
        block = np.sqrt(np.clip(d2, 0.0, None))
        rows = slice(start, start + len(block))
        inside_r = block <= rad_r[None, :]  # (b, n): fake j inside real i's ball
        precision_hits[rows] = inside_r.any(axis=1)
        density_counts[rows] = inside_r.sum(axis=1)
        recall_hits |= (block <= rad_f[rows][:, None]).any(axis=0)
        np.minimum(min_to_fake, block.min(axis=0), out=min_to_fake)
    return {
        "precision": float(precision_hits.mean()),
        "recall": float(recall_hits.mean()),
        "density": float(density_counts.sum() / (k * m)),
        "coverage": float((min_to_fake <= rad_r).mean()),
    }
