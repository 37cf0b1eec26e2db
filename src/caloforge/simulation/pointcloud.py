"""Point clouds of GFlash spots in a planar (ILD-like) calorimeter.

As CaloClouds II clusters GEANT4 steps, spots are grouped by active layer and their
energies summed on a transverse grid ``SUBCELLS`` x ``SUBCELLS`` times finer than the
cells. A point sits at the centre of its sub-cell; its z is the layer number + 0.5 (layer
units, so the integer part is the layer); its energy is the silicon energy in MeV.
"""

from __future__ import annotations

import numpy as np

from ..geometry import PlanarGeometry
from .gflash import StepDeposits
from .spots import MAX_SPOTS, iter_spot_batches

__all__ = ["SUBCELLS", "MIN_POINT_ENERGY_MEV", "cluster_steps"]

#: Sub-cells per cell along x and along y (CaloClouds II: 6 x 6).
SUBCELLS = 6
#: Points below this energy (MeV) are dropped: they come from the far tail of the
#: parametrised profile (every step carries at least one spot) and are far below any
#: energy a silicon step deposit can have.
MIN_POINT_ENERGY_MEV = 1e-4


def cluster_steps(rng: np.random.Generator, steps: StepDeposits, step_layer: np.ndarray,
                  visible_fraction: np.ndarray, geometry: PlanarGeometry, *,
                  max_spots: int = MAX_SPOTS) -> tuple[np.ndarray, np.ndarray]:
    """Place spots, keep those inside the window and sum them per (layer, sub-cell).

    Args:
        steps: per-step deposits of N showers.
        step_layer: active layer of each step, (K,).
        visible_fraction: silicon share of the deposited energy per layer, (L,).

    Returns:
        points: (P, 4) float32 rows (x mm, y mm, z layer units, E MeV), shower by shower.
        n_points: points per shower, (N,) int64.
    """
    n = steps.energy.shape[0]
    pitch = geometry.cell_mm / SUBCELLS
    gx, gy = geometry.n_cells_x * SUBCELLS, geometry.n_cells_y * SUBCELLS
    hx, hy = geometry.half_width_x_mm, geometry.half_width_y_mm
    L = geometry.n_layers
    fvis = np.asarray(visible_fraction, dtype=np.float64)
    chunks, counts = [], np.zeros(n, dtype=np.int64)
    for b in iter_spot_batches(rng, steps, max_spots):
        layer = step_layer[b.step]
        w = b.energy_per_spot * fvis[layer]
        s = b.spot_step
        phi = rng.random(len(s), dtype=np.float32) * np.float32(2 * np.pi)
        r = np.sqrt(b.r2)
        with np.errstate(invalid="ignore"):
            ix = np.floor((r * np.cos(phi) + hx) / pitch)
            iy = np.floor((r * np.sin(phi) + hy) / pitch)
        inside = (ix >= 0) & (ix < gx) & (iy >= 0) & (iy < gy)
        s, ix, iy = s[inside], ix[inside].astype(np.int64), iy[inside].astype(np.int64)
        key = ((b.shower[s].astype(np.int64) * L + layer[s]) * gx + ix) * gy + iy
        uniq, inv = np.unique(key, return_inverse=True)
        energy = np.bincount(inv, weights=w[s], minlength=len(uniq))
        keep = energy >= MIN_POINT_ENERGY_MEV
        uniq, energy = uniq[keep], energy[keep]
        rest, iy_u = np.divmod(uniq, gy)
        rest, ix_u = np.divmod(rest, gx)
        shower_u, layer_u = np.divmod(rest, L)
        pts = np.empty((len(uniq), 4), dtype=np.float32)
        pts[:, 0] = (ix_u + 0.5) * pitch - hx
        pts[:, 1] = (iy_u + 0.5) * pitch - hy
        pts[:, 2] = layer_u + 0.5
        pts[:, 3] = energy
        chunks.append(pts)
        counts[b.start:b.stop] = np.bincount(shower_u, minlength=b.stop - b.start)
    points = np.concatenate(chunks) if chunks else np.zeros((0, 4), np.float32)
    return points, counts
