"""Energy spots of GFlash steps: how many, how much energy, and at which radius.

Spots are generated for groups of showers so that one group never holds more than
``max_spots`` spots; memory use is therefore bounded whatever the incident energies.
The azimuth is drawn by the caller (voxelisation only needs the angular bin, point
clouds need the angle).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .gflash import StepDeposits

__all__ = ["SpotBatch", "iter_spot_batches"]

#: Default bound on spots held in memory at once (about 40 bytes each while placed).
MAX_SPOTS = 3_000_000


@dataclass
class SpotBatch:
    """Spots of showers ``start:stop`` of a :class:`StepDeposits`.

    Attributes:
        start, stop: shower range (rows of the step arrays).
        shower: local shower number (0-based within the batch) of every occupied step, (M,).
        step: step number of every occupied step, (M,).
        count: spots in every occupied step, (M,).
        energy_per_spot: smeared step energy / spot count (MeV), (M,).
        spot_step: occupied-step index (into the arrays above) of every spot, (S,) int32.
        r2: squared radius of every spot (mm^2), (S,) float32.
    """

    start: int
    stop: int
    shower: np.ndarray
    step: np.ndarray
    count: np.ndarray
    energy_per_spot: np.ndarray
    spot_step: np.ndarray
    r2: np.ndarray


def _groups(spots_per_shower: np.ndarray, max_spots: int) -> list[tuple[int, int]]:
    """Consecutive shower ranges holding at most ``max_spots`` spots (at least one shower)."""
    out, start, acc = [], 0, 0
    for i, c in enumerate(spots_per_shower.tolist()):
        if acc and acc + c > max_spots:
            out.append((start, i))
            start, acc = i, 0
        acc += c
    out.append((start, len(spots_per_shower)))
    return out


def iter_spot_batches(rng: np.random.Generator, steps: StepDeposits,
                      max_spots: int = MAX_SPOTS) -> Iterator[SpotBatch]:
    """Draw the radius of every spot, group by group.

    Each spot picks the core component with probability p and then a radius from that
    component's CDF r^2/(r^2 + R^2); one uniform number serves both choices (its position
    below or above p selects the component, its rescaled value inverts the CDF), which has
    exactly the distribution of two independent draws.
    """
    n, k = steps.n_spots.shape
    per_shower = steps.n_spots.sum(axis=1)
    for start, stop in _groups(per_shower, max_spots):
        counts = steps.n_spots[start:stop].ravel()
        occupied = np.flatnonzero(counts)
        cnt = counts[occupied]
        shower, step = np.divmod(occupied, k)
        e = steps.energy[start:stop].ravel()[occupied] / cnt
        p = steps.p_core[start:stop].ravel()[occupied].astype(np.float32)
        rc2 = (steps.r_core_mm[start:stop].ravel()[occupied] ** 2).astype(np.float32)
        rt2 = (steps.r_tail_mm[start:stop].ravel()[occupied] ** 2).astype(np.float32)
        spot_step = np.repeat(np.arange(len(occupied), dtype=np.int32), cnt)
        v = rng.random(len(spot_step), dtype=np.float32)
        ps = p[spot_step]
        core = v < ps
        with np.errstate(divide="ignore", invalid="ignore"):
            # u = v/p on the core branch, (v - p)/(1 - p) on the tail branch; both U(0,1).
            u = np.where(core, v / ps, (v - ps) / (1.0 - ps))
            r2 = np.where(core, rc2[spot_step], rt2[spot_step]) * (u / (1.0 - u))
        # u == 1 (float rounding) gives an infinite radius: a laterally leaking spot.
        r2 = np.nan_to_num(r2, nan=np.inf, posinf=np.inf)
        yield SpotBatch(start, stop, shower, step, cnt, e, spot_step, r2)
