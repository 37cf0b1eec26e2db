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

from .fpd_kpd import InsufficientDataError

__all__ = ["log_voxels", "prdc"]


def log_voxels(showers: np.ndarray, floor_mev: float = 0.1) -> np.ndarray:
    """(N, V) voxel energies -> log10, with voxels below ``floor_mev`` (zeros) set to it.

    Voxels above the threshold but below 0.1 MeV (datasets 2/3) are also lifted to
    0.1 MeV, i.e. the floor acts on all values below it, not only exact zeros.
    """
    return np.log10(np.maximum(np.asarray(showers, dtype=np.float32), floor_mev))


# rows per block of the distance computation: a float64 block of the (transformed)
# samples takes at most this many bytes, so the working set does not grow with the samples
# (ds3 has 40 500 voxels: 98 rows a block)
_BLOCK_BYTES = 32_000_000


def _block_rows(dim: int) -> int:
    return max(16, int(_BLOCK_BYTES // (8 * max(dim, 1))))


def _prepared(x: np.ndarray, lo: int, hi: int, transform) -> np.ndarray:
    block = x[lo:hi]
    if transform is not None:
        block = transform(block)
    return np.asarray(block, dtype=np.float64)


def _squared_norms(x: np.ndarray, rows: int, transform) -> np.ndarray:
    out = np.empty(len(x))
    for lo in range(0, len(x), rows):
        b = _prepared(x, lo, lo + rows, transform)
        out[lo:lo + len(b)] = np.einsum("ij,ij->i", b, b)
    return out


def _distance_rows(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray,
                   rows: int, transform):
    """Yield ``(lo, d)``: Euclidean distances (r, len(b)) of ``a[lo:lo + r]`` to all of ``b``.

    Both samples are transformed and cast to float64 one block at a time, so memory is a
    few blocks plus the (r, len(b)) distances, however large the samples.
    """
    for lo in range(0, len(a), rows):
        ab = _prepared(a, lo, lo + rows, transform)
        d = np.empty((len(ab), len(b)))
        for c in range(0, len(b), rows):
            bb = _prepared(b, c, c + rows, transform)
            d[:, c:c + len(bb)] = ab @ bb.T
        d *= -2.0
        d += na[lo:lo + len(ab), None]
        d += nb[None, :]
        np.sqrt(np.clip(d, 0.0, None, out=d), out=d)
        yield lo, d


def _kth_radius(x: np.ndarray, norms: np.ndarray, k: int, rows: int, transform) -> np.ndarray:
    rad = np.empty(len(x))
    for lo, d in _distance_rows(x, x, norms, norms, rows, transform):
        # the (k+1)-th smallest distance: the point itself (distance ~0) comes first
        rad[lo:lo + len(d)] = np.partition(d, k, axis=1)[:, k]
    return rad


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5, transform=None) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` (m, D) against ``real`` (n, D).

    Args:
        real, fake: samples, any float dtype (e.g. float32 voxels).
        k: neighbours.
        transform: applied to each block of rows before distances are taken (e.g.
            :func:`log_voxels`), so no transformed copy of a whole sample is made.

    Every distance (radii and cross distances alike) is computed in float64 from the
    dot-product expansion, in blocks of rows whose size depends on D, so memory stays
    bounded (a few 32 MB blocks) whatever the sample sizes.
    Returns ``{"precision", "recall", "density", "coverage"}`` as floats.
    """
    real = np.asarray(real)
    fake = np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"PRDC needs two (n, D) samples of one D, got {real.shape} and {fake.shape}")
    if len(real) <= k or len(fake) <= k:
        raise InsufficientDataError(f"PRDC with k={k} needs more than {k} samples on each side")
    rows = _block_rows(real.shape[1])
    nr = _squared_norms(real, rows, transform)
    nf = _squared_norms(fake, rows, transform)
    # blocks of different shapes round the same pair's distance differently in the last
    # bits: a point on a ball's edge (the k-th neighbour itself) must count as inside, so
    # radii are widened by a relative 1e-9
    rad_r = _kth_radius(real, nr, k, rows, transform) * (1 + 1e-9)
    rad_f = _kth_radius(fake, nf, k, rows, transform) * (1 + 1e-9)
    n, m = len(real), len(fake)
    precision_hits = np.zeros(m, dtype=bool)
    density_counts = np.zeros(m, dtype=np.int64)
    recall_hits = np.zeros(n, dtype=bool)
    min_to_fake = np.full(n, np.inf)
    for start, block in _distance_rows(fake, real, nf, nr, rows, transform):
        sl = slice(start, start + len(block))
        inside_r = block <= rad_r[None, :]  # (b, n): fake j inside real i's ball
        precision_hits[sl] = inside_r.any(axis=1)
        density_counts[sl] = inside_r.sum(axis=1)
        recall_hits |= (block <= rad_f[sl][:, None]).any(axis=0)
        np.minimum(min_to_fake, block.min(axis=0), out=min_to_fake)
    return {
        "precision": float(precision_hits.mean()),
        "recall": float(recall_hits.mean()),
        "density": float(density_counts.sum() / (k * m)),
        "coverage": float((min_to_fake <= rad_r).mean()),
    }
