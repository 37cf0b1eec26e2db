"""The CaloChallenge histogram binnings, per feature, layer and dataset.

Issue definitions (ranges in mm, 100 bins unless said):

=================  ==========================  =========================================
feature            datasets 2 and 3            dataset 1
=================  ==========================  =========================================
E_tot / E_inc      100 bins on [0.5, 1.5]      same
E_layer            40 log bins, threshold to   same
                   the reference maximum
voxel energy       50 log bins, threshold to   same
                   the reference maximum
centre eta / phi   [-30, 30]                   [-100, 100]; layers 12-13 [-500, 500]
width eta / phi    [0, 30]                     [0, 100]; layers 12-13 [0, 400]
centre r           [0, 42]                     [0, 500]; layers 12-14 [0, 1500]
width r            [0, 20]                     [0, 100]; layers 12-14 [0, 400] (*)
sparsity           20 bins on [0, 1]           same
E_tot              40 log bins, reference      same (*)
                   min to max
shower depth       50 bins on [0, L - 1]       same (*)
=================  ==========================  =========================================

(*) not given by the issue: chosen here and documented in docs/evaluation.md.
"""

from __future__ import annotations

import numpy as np

from ..geometry import CylindricalGeometry
from .features import VOXEL_FINE_EDGES, geometry_family

__all__ = ["CONVENTIONS", "FEATURE_NAMES", "feature_bins", "voxel_bin_groups"]

#: Features with a histogram binning (per-layer ones take a ``layer``).
FEATURE_NAMES = ("response", "e_tot", "e_layer", "ec_eta", "ec_phi", "width_eta",
                 "width_phi", "ec_r", "width_r", "sparsity", "shower_depth")


def _log_bins(lo: float, hi: float, n: int) -> np.ndarray:
    lo = max(float(lo), 1e-12)
    hi = float(hi)
    if not np.isfinite(hi) or hi <= lo * 1.0001:
        hi = lo * 10.0  # a feature that never exceeds the threshold: one decade, all empty
    return np.logspace(np.log10(lo), np.log10(hi), n + 1)


#: Conventions of the histograms: ``caloforge`` (40 E_layer bins, under- and overflow
#: counted) or ``official`` (the CaloChallenge code's: 40 edges, i.e. 39 E_layer bins, and
#: entries outside the binning dropped).
CONVENTIONS = ("caloforge", "official")


def feature_bins(feature: str, geometry: CylindricalGeometry, *, layer: int | None = None,
                 reference: np.ndarray | None = None, threshold: float | None = None,
                 convention: str = "caloforge") -> np.ndarray:
    """Bin edges of ``feature`` (in the units of :class:`ShowerFeatures`).

    Args:
        feature: one of :data:`FEATURE_NAMES`.
        geometry: selects the dataset-1 or dataset-2/3 ranges.
        layer: layer index for per-layer features with layer-dependent ranges.
        reference: reference values, needed for the data-driven binnings (``e_layer``:
            its maximum; ``e_tot``: its minimum and maximum).
        threshold: the voxel threshold in MeV (lower edge of ``e_layer``).
        convention: ``"caloforge"`` (40 ``e_layer`` bins) or ``"official"`` (39: the
            challenge's code takes 40 log-spaced edges).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    ds1 = geometry_family(geometry) == "ds1"
    lay = -1 if layer is None else int(layer)
    if feature == "response":
        return np.linspace(0.5, 1.5, 101)
    if feature == "sparsity":
        return np.linspace(0.0, 1.0, 21)
    if feature == "e_layer":
        if reference is None or threshold is None:
            raise ValueError("e_layer binning needs the reference values and the threshold")
        n = 39 if convention == "official" else 40
        return _log_bins(threshold, np.max(reference) if len(reference) else threshold, n)
    if feature == "e_tot":
        if reference is None:
            raise ValueError("e_tot binning needs the reference values")
        pos = np.asarray(reference)[np.asarray(reference) > 0]
        if not len(pos):
            return _log_bins(1e-3, 1e-2, 40)
        return _log_bins(pos.min(), pos.max(), 40)
    if feature in ("ec_eta", "ec_phi"):
        half = (500.0 if lay in (12, 13) else 100.0) if ds1 else 30.0
        return np.linspace(-half, half, 101)
    if feature in ("width_eta", "width_phi"):
        hi = (400.0 if lay in (12, 13) else 100.0) if ds1 else 30.0
        return np.linspace(0.0, hi, 101)
    if feature == "ec_r":
        hi = (1500.0 if lay in (12, 13, 14) else 500.0) if ds1 else 42.0
        return np.linspace(0.0, hi, 101)
    if feature == "width_r":
        hi = (400.0 if lay in (12, 13, 14) else 100.0) if ds1 else 20.0
        return np.linspace(0.0, hi, 101)
    if feature == "shower_depth":
        return np.linspace(0.0, max(geometry.n_layers - 1, 1), 51)
    raise ValueError(f"unknown feature {feature!r}; known: {', '.join(FEATURE_NAMES)}")


def voxel_bin_groups(threshold: float, ref_hist: np.ndarray, n_bins: int = 50) -> np.ndarray:
    """Group the fine voxel-energy bins into about ``n_bins`` log bins from the threshold to
    the reference maximum.

    The voxel histogram is accumulated chunk by chunk on fixed fine bins
    (``VOXEL_FINE_EDGES``, 20 per decade), so the challenge's 50 log bins between the
    threshold and the reference maximum are approximated by merging fine bins: edges are
    snapped to the nearest fine edge (at most 1/40 decade away).

    Returns:
        (n_groups + 1,) indices into the fine bins; group ``i`` is
        ``fine[idx[i]:idx[i+1]]``.
    """
    edges = VOXEL_FINE_EDGES
    nz = np.flatnonzero(ref_hist)
    lo = int(np.clip(np.searchsorted(edges, threshold, side="right") - 1, 0, len(edges) - 2))
    hi = int(nz.max()) + 1 if len(nz) else lo + 1
    hi = max(hi, lo + 1)
    idx = np.unique(np.round(np.linspace(lo, hi, min(n_bins, hi - lo) + 1)).astype(int))
    return idx
