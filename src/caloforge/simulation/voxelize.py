"""Binning GFlash spots on a cylindrical readout (CaloChallenge voxel order).

Spots are counted into an "extended" layout that has one extra radial slot per
(layer, angular bin) beyond the last edge; that slot collects the lateral leakage and is
dropped afterwards. Uniform azimuth over equal-width angular bins is the same as a
uniform angular bin, so only the bin is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..geometry import CylindricalGeometry
from .gflash import StepDeposits
from .spots import MAX_SPOTS, iter_spot_batches

__all__ = ["voxelize_steps"]


@dataclass(frozen=True)
class _Layout:
    n_ext: int               # extended slots per shower
    ext_offset: np.ndarray   # first slot of each layer, (L,)
    n_r: np.ndarray          # radial bins per layer, (L,)
    n_alpha: np.ndarray      # angular bins per layer, (L,)
    voxel_slot: np.ndarray   # extended slot of every real voxel, (V,)
    edges2: np.ndarray | None      # squared radial edges (regular geometry), else None
    uniform_dr: float | None       # common bin width when edges are equally spaced
    flat_edges: np.ndarray | None  # offset-shifted edges of all layers (irregular)
    flat_start: np.ndarray | None  # index of each layer's first edge in flat_edges


#: Shift between layers in the single sorted edge array of irregular geometries (mm);
#: larger than any radius that can land inside a voxel.
_LAYER_SHIFT = 1e7


@lru_cache(maxsize=16)
def _layout(geometry: CylindricalGeometry) -> _Layout:
    n_r = geometry.n_r.astype(np.int64)
    n_a = np.asarray(geometry.n_alpha, dtype=np.int64)
    slots = n_a * (n_r + 1)
    ext_offset = np.concatenate([[0], np.cumsum(slots)[:-1]])
    lay, alp, rb = geometry.voxel_layer, geometry.voxel_alpha, geometry.voxel_r
    voxel_slot = ext_offset[lay] + alp * (n_r[lay] + 1) + rb
    edges2 = uniform = flat = start = None
    if geometry.is_regular:
        e = np.asarray(geometry.r_edges[0])
        edges2 = (e ** 2).astype(np.float32)
        d = np.diff(e)
        if e[0] == 0 and np.allclose(d, d[0], rtol=1e-6):
            uniform = float(d[0])
    else:
        flat = np.concatenate([np.asarray(ed) + i * _LAYER_SHIFT
                               for i, ed in enumerate(geometry.r_edges)])
        start = np.concatenate([[0], np.cumsum([len(ed) for ed in geometry.r_edges])[:-1]])
    return _Layout(int(slots.sum()), ext_offset, n_r, n_a, voxel_slot, edges2, uniform,
                   flat, start)


def voxelize_steps(rng: np.random.Generator, steps: StepDeposits, step_layer: np.ndarray,
                   stored_per_deposited: np.ndarray, geometry: CylindricalGeometry, *,
                   threshold_mev: float = 0.0, max_spots: int = MAX_SPOTS,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Place the spots of every step and sum them per voxel.

    Args:
        steps: per-step deposits of N showers.
        step_layer: readout layer of each step, (K,).
        stored_per_deposited: stored MeV per deposited MeV in each layer, (L,).
        threshold_mev: stored voxel values below this become 0.

    Returns:
        showers: stored voxel energies (MeV), (N, V) float32, >= 0.
        lateral_leakage: stored-scale energy beyond the last radial edge, (N,) float64
            (before the threshold).
    """
    lay_out = _layout(geometry)
    n = steps.energy.shape[0]
    out = np.zeros((n, geometry.n_voxels), dtype=np.float32)
    leak = np.zeros(n)
    scale = np.asarray(stored_per_deposited, dtype=np.float64)
    regular = lay_out.edges2 is not None
    for b in iter_spot_batches(rng, steps, max_spots):
        nb = b.stop - b.start
        layer = step_layer[b.step]
        w = b.energy_per_spot * scale[layer]
        base = b.shower.astype(np.int64) * lay_out.n_ext + lay_out.ext_offset[layer]
        s = b.spot_step
        n_spot = len(s)
        if regular:
            nr = int(lay_out.n_r[0])
            na = int(lay_out.n_alpha[0])
            if lay_out.uniform_dr is not None:
                rb = (np.sqrt(b.r2) * np.float32(1.0 / lay_out.uniform_dr))
                rb = np.minimum(rb, np.float32(nr)).astype(np.int64)
            else:
                rb = np.searchsorted(lay_out.edges2, b.r2, side="right") - 1
                np.minimum(rb, nr, out=rb)
            ab = (rng.random(n_spot, dtype=np.float32) * np.float32(na)).astype(np.int64)
            np.minimum(ab, na - 1, out=ab)
            key = base[s] + ab * (nr + 1) + rb
        else:
            lay_s = layer[s]
            nr = lay_out.n_r[lay_s]
            na = lay_out.n_alpha[lay_s]
            r = np.minimum(np.sqrt(b.r2.astype(np.float64)), 0.5 * _LAYER_SHIFT)
            pos = np.searchsorted(lay_out.flat_edges, r + lay_s * _LAYER_SHIFT, side="right")
            rb = np.minimum(pos - 1 - lay_out.flat_start[lay_s], nr)
            ab = np.minimum((rng.random(n_spot) * na).astype(np.int64), na - 1)
            key = base[s] + ab * (nr + 1) + rb
        sums = np.bincount(key, weights=w[s], minlength=nb * lay_out.n_ext)
        sums = sums.reshape(nb, lay_out.n_ext)
        vox = sums[:, lay_out.voxel_slot]
        leak[b.start:b.stop] = sums.sum(axis=1) - vox.sum(axis=1)
        out[b.start:b.stop] = vox
    if threshold_mev > 0:
        out[out < threshold_mev] = 0.0
    return out, leak
