"""Separation power of two histograms, as in the CaloChallenge.

``S = 1/2 sum_i (h1_i - h2_i)^2 / (h1_i + h2_i)`` with both histograms normalised to unit
area; 0 for identical and 1 for disjoint distributions. Bins empty in both are skipped.
"""

from __future__ import annotations

import numpy as np

from ..geometry import CylindricalGeometry
from .binning import feature_bins, voxel_bin_groups
from .features import ShowerFeatures

__all__ = ["separation_power", "separation_power_samples", "separation_powers"]


def separation_power(h1: np.ndarray, h2: np.ndarray) -> float:
    """Separation power of two histograms of counts (or densities) on the same bins.

    Returns NaN when either histogram is empty (no entry in range): there is nothing to
    compare and a number would mean nothing.
    """
    h1 = np.asarray(h1, dtype=np.float64)
    h2 = np.asarray(h2, dtype=np.float64)
    if h1.shape != h2.shape:
        raise ValueError(f"histograms differ in shape: {h1.shape} vs {h2.shape}")
    s1, s2 = h1.sum(), h2.sum()
    if s1 <= 0 or s2 <= 0:
        return float("nan")
    p, q = h1 / s1, h2 / s2
    den = p + q
    m = den > 0
    return float(0.5 * np.sum((p[m] - q[m]) ** 2 / den[m]))


def _with_flow(x: np.ndarray, bins: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    h = np.histogram(x, bins=bins)[0]
    return np.concatenate([[np.sum(x < bins[0])], h, [np.sum(x > bins[-1])]])


def separation_power_samples(x1: np.ndarray, x2: np.ndarray, bins: np.ndarray, *,
                             flow: bool = True) -> float:
    """Separation power of two 1-D samples histogrammed on ``bins``.

    With ``flow`` (default) entries below the first or above the last edge are counted in
    an underflow and an overflow bin. The challenge's histograms drop them instead
    (``flow=False``), which hides, for example, a generator that leaves a layer empty
    (its energies fall below the log binning's lower edge, the threshold): caloforge
    keeps them so such a sample scores S = 1 in that layer.
    """
    if flow:
        return separation_power(_with_flow(x1, bins), _with_flow(x2, bins))
    h1 = np.histogram(np.asarray(x1).ravel(), bins=bins)[0]
    h2 = np.histogram(np.asarray(x2).ravel(), bins=bins)[0]
    return separation_power(h1, h2)


def separation_powers(ref: ShowerFeatures, gen: ShowerFeatures,
                      geometry: CylindricalGeometry, *,
                      convention: str = "caloforge") -> dict[str, dict]:
    """All separation powers between two feature sets.

    ``convention="official"`` histograms as the CaloChallenge code does: 39 E_layer bins
    and entries outside a binning dropped; ``"caloforge"`` (default) uses 40 E_layer bins
    and counts under- and overflow (see :func:`separation_power_samples`).

    Returns:
        ``{feature: {"mean": float, "per_layer": {layer: float}}}`` for per-layer features
        (mean over layers where the value is defined), ``{feature: {"mean": float}}`` for
        the others (``response``, ``e_tot``, ``voxel_energy``, ``shower_depth`` averaged over
        radial slices). Always the same keys for a given geometry.
    """
    thr = ref.threshold
    flow = convention != "official"

    def sp(x1, x2, bins):
        return separation_power_samples(x1, x2, bins, flow=flow)

    out: dict[str, dict] = {}
    out["response"] = {"mean": sp(ref.response, gen.response, feature_bins("response", geometry))}
    out["e_tot"] = {"mean": sp(ref.e_tot, gen.e_tot,
                               feature_bins("e_tot", geometry, reference=ref.e_tot))}
    c1, c2 = ref.voxel_counts, gen.voxel_counts
    groups = voxel_bin_groups(thr, c1)
    h1 = np.array([c1[a:b].sum() for a, b in zip(groups[:-1], groups[1:])])
    h2 = np.array([c2[a:b].sum() for a, b in zip(groups[:-1], groups[1:])])
    out["voxel_energy"] = {"mean": separation_power(h1, h2)}
    per_layer = {"e_layer": geometry.active_layers, "sparsity": geometry.active_layers,
                 "ec_r": geometry.active_layers, "width_r": geometry.active_layers,
                 "ec_eta": geometry.alpha_binned_layers, "ec_phi": geometry.alpha_binned_layers,
                 "width_eta": geometry.alpha_binned_layers,
                 "width_phi": geometry.alpha_binned_layers}
    for feat, layers in per_layer.items():
        vals = {}
        a, b = getattr(ref, feat), getattr(gen, feat)
        for lay in layers:
            bins = feature_bins(feat, geometry, layer=lay, reference=a[:, lay], threshold=thr,
                                convention=convention)
            vals[int(lay)] = sp(a[:, lay], b[:, lay], bins)
        finite = [v for v in vals.values() if np.isfinite(v)]
        out[feat] = {"mean": float(np.mean(finite)) if finite else float("nan"),
                     "per_layer": vals}
    bins = feature_bins("shower_depth", geometry)
    vals = [sp(ref.shower_depth[:, k], gen.shower_depth[:, k], bins)
            for k in range(ref.shower_depth.shape[1])]
    finite = [v for v in vals if np.isfinite(v)]
    out["shower_depth"] = {"mean": float(np.mean(finite)) if finite else float("nan"),
                           "per_slice": {int(k): v for k, v in enumerate(vals)}}
    return out
