"""CaloChallenge high-level features of voxelised showers, computed chunk by chunk.

Every feature is computed once per file (:func:`compute_features`) and reused by every
metric. Definitions follow the CaloChallenge 2022 evaluation:

* voxels below a threshold are set to zero first (1 MeV for dataset 1, 0.5 keV / 0.033
  = 15.1515 keV for datasets 2 and 3, see :func:`default_threshold`);
* ``e_layer``: energy per layer; ``e_tot``: their sum;
* centres of energy ``<x> = sum E x / sum E`` per layer in the cell coordinates
  ``eta = r cos(alpha)``, ``phi = r sin(alpha)`` (layers with angular bins) and ``r``
  (all layers), widths ``sqrt(<x^2> - <x>^2)`` clipped at 0; a layer without energy has
  centre and width 0, as in the challenge's code;
* ``sparsity``: fraction of voxels of a layer that are zero after the threshold;
* the voxel-energy distribution as histogram counts on fixed fine log bins
  (:data:`VOXEL_FINE_EDGES`), accumulated chunk by chunk so voxels are never all in memory;
* CaloDREAM's shower depth per radial slice: for radial slice ``k`` (the radial bins of a
  regular geometry; fixed mm edges :data:`IRREGULAR_DEPTH_EDGES_MM` for irregular ones)
  the energy-weighted mean layer index ``d_k = sum_l l E_{l,k} / sum_l E_{l,k}``
  (0 when the slice holds no energy).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from ..geometry import CylindricalGeometry
from ..io import ShowerData, ShowerFile

# the official thresholds, one constant shared with the simulator: 1 MeV for dataset 1,
# 0.5 keV in silicon / 0.033 = 0.0151515... MeV for datasets 2 and 3
from ..io.calochallenge import DS1_THRESHOLD_MEV, DS23_THRESHOLD_MEV

__all__ = [
    "DS1_THRESHOLD_MEV",
    "DS23_THRESHOLD_MEV",
    "IRREGULAR_DEPTH_EDGES_MM",
    "VOXEL_FINE_EDGES",
    "ShowerFeatures",
    "apply_threshold",
    "compute_features",
    "default_threshold",
    "geometry_family",
    "high_level_vector",
]


#: Fine log bins (MeV) of the accumulated voxel-energy histogram: 20 per decade from
#: 1 keV to 10 TeV; metrics merge them into the challenge's 50 bins (see binning.py).
VOXEL_FINE_EDGES = np.logspace(-3, 7, 201)

#: Radial slices (mm) of the shower depth for irregular geometries (dataset 1), where
#: radial bins differ from layer to layer.
IRREGULAR_DEPTH_EDGES_MM = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, np.inf)

_EPS = 1e-8


def geometry_family(geometry: CylindricalGeometry) -> str:
    """``"ds1"`` for the dataset-1 geometries and other irregular ones, else ``"ds23"``."""
    name = geometry.name.lower()
    if name.startswith("ds1") or "dataset_1" in name or not geometry.is_regular:
        return "ds1"
    return "ds23"


def default_threshold(geometry: CylindricalGeometry) -> float:
    """The challenge's voxel threshold (MeV): 1 MeV for dataset 1, 0.5e-3 / 0.033 =
    0.0151515... MeV otherwise."""
    return DS1_THRESHOLD_MEV if geometry_family(geometry) == "ds1" else DS23_THRESHOLD_MEV


def apply_threshold(showers: np.ndarray, threshold: float) -> np.ndarray:
    """Copy of ``showers`` (N, V) with voxels below ``threshold`` (MeV) set to 0."""
    out = np.array(showers, dtype=np.float32, copy=True)
    out[out < threshold] = 0.0
    return out


@dataclass
class ShowerFeatures:
    """High-level features of N showers on a geometry with L layers.

    ``e_inc`` and ``e_tot`` are float64; the per-layer and per-slice arrays are float32
    (computed in float64, stored in float32: 1e-7 relative rounding is far below any
    metric's statistical error, and it halves the memory an evaluation holds per shower).

    Per-layer arrays have one column per layer of the geometry, including layers without
    voxels (which stay 0); use ``geometry.active_layers`` / ``alpha_binned_layers`` to pick.

    Attributes:
        e_inc: (N,) incident energy, MeV.
        e_tot: (N,) deposited energy after the threshold, MeV.
        e_layer: (N, L) energy per layer.
        ec_eta, ec_phi, width_eta, width_phi: (N, L) centres and widths in eta/phi, mm.
        ec_r, width_r: (N, L) centre and width in r, mm.
        sparsity: (N, L) fraction of zero voxels per layer.
        shower_depth: (N, K) energy-weighted mean layer index per radial slice.
        voxel_hist: (N, len(VOXEL_FINE_EDGES) - 1) per-shower counts of non-zero voxel
            energies on the fine bins (uint16: a shower has fewer than 65536 voxels).
        voxel_sum: (V,) sum of thresholded showers over the whole sample (for average
            images; not split by :meth:`subset`).
        voxel_sum_count: number of showers summed in ``voxel_sum``.
        threshold: the threshold applied (MeV).
    """

    e_inc: np.ndarray
    e_tot: np.ndarray
    e_layer: np.ndarray
    ec_eta: np.ndarray
    ec_phi: np.ndarray
    width_eta: np.ndarray
    width_phi: np.ndarray
    ec_r: np.ndarray
    width_r: np.ndarray
    sparsity: np.ndarray
    shower_depth: np.ndarray
    voxel_hist: np.ndarray
    voxel_sum: np.ndarray
    voxel_sum_count: int
    threshold: float
    per_shower: tuple = field(default=(
        "e_inc", "e_tot", "e_layer", "ec_eta", "ec_phi", "width_eta", "width_phi",
        "ec_r", "width_r", "sparsity", "shower_depth", "voxel_hist"), repr=False)

    def __len__(self) -> int:
        return int(self.e_inc.shape[0])

    @property
    def mean_shower(self) -> np.ndarray:
        """(V,) mean thresholded shower over the whole sample read."""
        return self.voxel_sum / max(int(self.voxel_sum_count), 1)

    @property
    def voxel_counts(self) -> np.ndarray:
        """(n_fine_bins,) voxel-energy histogram of the whole sample, int64."""
        return self.voxel_hist.sum(axis=0, dtype=np.int64)

    @property
    def response(self) -> np.ndarray:
        """(N,) E_tot / E_inc."""
        return self.e_tot / self.e_inc

    def subset(self, index) -> ShowerFeatures:
        """Features of the showers ``index`` (``voxel_sum`` is kept whole-sample)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.per_shower:
            kw[name] = kw[name][index]
        return ShowerFeatures(**kw)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "per_shower"}
        return out

    @classmethod
    def from_arrays(cls, arrays) -> ShowerFeatures:
        kw = {f.name: np.asarray(arrays[f.name]) for f in fields(cls) if f.name != "per_shower"}
        kw["threshold"] = float(kw["threshold"])
        kw["voxel_sum_count"] = int(kw["voxel_sum_count"])
        return cls(**kw)

    @classmethod
    def concatenate(cls, parts: list[ShowerFeatures]) -> ShowerFeatures:
        kw = {}
        for f in fields(cls):
            if f.name == "per_shower":
                continue
            if f.name in parts[0].per_shower:
                kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
            elif f.name in ("voxel_sum", "voxel_sum_count"):
                kw[f.name] = np.sum([getattr(p, f.name) for p in parts], axis=0)
            else:
                kw[f.name] = getattr(parts[0], f.name)
        return cls(**kw)


class _FeatureMatrices:
    """Sparse (V, columns) matrices turning a shower chunk into per-layer moments.

    One sparse product replaces per-layer loops: column blocks are [E, E eta, E eta^2,
    E phi, E phi^2, E r, E r^2] per layer, then E per (layer, radial slice).
    """

    def __init__(self, geometry: CylindricalGeometry):
        g = geometry
        V, L = g.n_voxels, g.n_layers
        layer = g.voxel_layer
        rows = np.arange(V)
        coords = [np.ones(V), g.eta, g.eta ** 2, g.phi, g.phi ** 2, g.r_centres, g.r_centres ** 2]
        blocks = [sp.csr_matrix((c, (rows, layer)), shape=(V, L)) for c in coords]
        if g.is_regular:
            slice_idx = g.voxel_r
            self.n_slices = int(g.n_r[g.active_layers[0]])
        else:
            edges = np.asarray(IRREGULAR_DEPTH_EDGES_MM)
            slice_idx = np.clip(np.searchsorted(edges, g.r_centres, side="right") - 1,
                                0, len(edges) - 2)
            self.n_slices = len(edges) - 1
        K = self.n_slices
        blocks.append(sp.csr_matrix((np.ones(V), (rows, layer * K + slice_idx)), shape=(V, L * K)))
        self.matrix = sp.hstack(blocks).tocsr().astype(np.float64)
        self.L, self.K = L, K
        self.counter = sp.csr_matrix((np.ones(V), (rows, layer)), shape=(V, L))
        self.layer_sizes = np.maximum(g.layer_sizes, 1).astype(np.float64)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _chunk_features(data: ShowerData, threshold: float, mats: _FeatureMatrices) -> ShowerFeatures:
    s = apply_threshold(data.showers, threshold)
    # dense (n, V) @ sparse (V, C): computed as (C, V) @ (V, n) to stay in scipy's fast path
    m = np.asarray((mats.matrix.T @ s.T.astype(np.float64)).T)
    L, K = mats.L, mats.K
    e, ex, ex2, ey, ey2, er, er2 = (m[:, i * L:(i + 1) * L] for i in range(7))
    e_lk = m[:, 7 * L:].reshape(-1, L, K)

    def centre_width(sx, sx2):
        c = _safe_div(sx, e)
        w = np.sqrt(np.clip(_safe_div(sx2, e) - c ** 2, 0.0, None))
        return c, w

    ec_eta, w_eta = centre_width(ex, ex2)
    ec_phi, w_phi = centre_width(ey, ey2)
    ec_r, w_r = centre_width(er, er2)
    nonzero = np.asarray((mats.counter.T @ (s > 0).T.astype(np.float64)).T)
    sparsity = 1.0 - nonzero / mats.layer_sizes
    e_slice = e_lk.sum(axis=1)
    depth = _safe_div(np.einsum("nlk,l->nk", e_lk, np.arange(L, dtype=np.float64)), e_slice)
    f32 = np.float32
    # per-shower voxel-energy histograms, so that any subset (e.g. a reference half)
    # has its own histogram; values above the last edge go to the last bin
    rows, cols = np.nonzero(s)
    nb = len(VOXEL_FINE_EDGES) - 1
    b = np.clip(np.searchsorted(VOXEL_FINE_EDGES, s[rows, cols], side="right") - 1, 0, nb - 1)
    vh = np.bincount(rows * nb + b, minlength=len(s) * nb).reshape(len(s), nb).astype(np.uint16)
    return ShowerFeatures(
        e_inc=np.asarray(data.incident_energies, dtype=np.float64),
        e_tot=e.sum(axis=1), e_layer=e.astype(f32), ec_eta=ec_eta.astype(f32),
        ec_phi=ec_phi.astype(f32), width_eta=w_eta.astype(f32), width_phi=w_phi.astype(f32),
        ec_r=ec_r.astype(f32), width_r=w_r.astype(f32), sparsity=sparsity.astype(f32),
        shower_depth=depth.astype(f32), voxel_hist=vh,
        voxel_sum=s.sum(axis=0, dtype=np.float64), voxel_sum_count=len(s),
        threshold=float(threshold),
    )


# voxels per chunk: ds3 in chunks of 123 showers, ds2 of 771; smaller chunks cost
# little time (the work is per voxel) and keep an evaluation's memory flat
_CHUNK_VOXELS = 5_000_000


def compute_features(source, *, geometry: CylindricalGeometry | None = None,
                     threshold: float | None = None, max_showers: int | None = None,
                     chunk_size: int | None = None, start: int = 0,
                     rows: np.ndarray | None = None) -> ShowerFeatures:
    """High-level features of showers, computed chunk by chunk.

    Args:
        source: a :class:`ShowerData`, an open :class:`ShowerFile`, or a path to a
            CaloChallenge file (opened and closed here).
        geometry: needed only for a path whose geometry cannot be detected.
        threshold: voxel threshold in MeV (default :func:`default_threshold`).
        max_showers: use only the first ``max_showers`` showers (from ``start``).
        chunk_size: showers per chunk (default: about 5M voxels per chunk, so memory
            stays near 0.1 GB whatever the geometry); peak memory is about
            ``chunk_size * V * 16`` bytes plus the features themselves.
        rows: use exactly these rows (increasing row numbers), e.g. a random subset;
            excludes ``start`` and ``max_showers``.

    Returns:
        :class:`ShowerFeatures` of ``min(N, max_showers)`` showers, or of ``rows``.
    """
    if rows is not None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if start or max_showers is not None:
            raise ValueError("give rows, or start / max_showers, not both")
    if chunk_size is None and not isinstance(source, (str, bytes)) and hasattr(source, "geometry"):
        chunk_size = max(100, int(_CHUNK_VOXELS // source.geometry.n_voxels))
    if isinstance(source, ShowerData):
        g = source.geometry
        if rows is not None:
            chunks = (source[rows[lo:lo + chunk_size]] for lo in range(0, len(rows), chunk_size))
            return _features_from_chunks(chunks, g, threshold, len(rows))
        stop = len(source) if max_showers is None else min(len(source), start + max_showers)
        chunks = (source[lo:min(lo + chunk_size, stop)] for lo in range(start, stop, chunk_size))
        return _features_from_chunks(chunks, g, threshold, max(stop - start, 0))
    if isinstance(source, ShowerFile):
        if rows is not None:
            chunks = (source.read_rows(rows[lo:lo + chunk_size])
                      for lo in range(0, len(rows), chunk_size))
            return _features_from_chunks(chunks, source.geometry, threshold, len(rows))
        stop = len(source) if max_showers is None else min(len(source), start + max_showers)
        return _features_from_chunks(source.iter_chunks(chunk_size, start, stop),
                                     source.geometry, threshold, max(stop - start, 0))
    with ShowerFile(source, geometry) as f:
        return compute_features(f, threshold=threshold, max_showers=max_showers,
                                chunk_size=chunk_size, start=start, rows=rows)


def _features_from_chunks(chunks, geometry, threshold, n_total: int) -> ShowerFeatures:
    """Features of ``n_total`` showers arriving in chunks, written into arrays allocated
    once: no list of per-chunk parts and no concatenated copy, so the features are the
    only memory that grows with N (every per-shower array is a copy of its own, never a
    view keeping a chunk's whole intermediate product alive)."""
    thr = default_threshold(geometry) if threshold is None else float(threshold)
    mats = _FeatureMatrices(geometry)
    out: dict[str, np.ndarray] = {}
    voxel_sum, count, pos = None, 0, 0
    for c in chunks:
        if not len(c):
            continue
        part = _chunk_features(c, thr, mats)
        n = len(part)
        if not out:
            out = {name: np.empty((n_total, *getattr(part, name).shape[1:]),
                                  dtype=getattr(part, name).dtype) for name in part.per_shower}
            voxel_sum = np.zeros_like(part.voxel_sum)
        for name in part.per_shower:
            out[name][pos:pos + n] = getattr(part, name)
        voxel_sum += part.voxel_sum
        count += part.voxel_sum_count
        pos += n
    if not out:
        from ..io import ShowerDataError
        raise ShowerDataError("no showers to compute features from")
    if pos != n_total:
        out = {name: a[:pos] for name, a in out.items()}
    return ShowerFeatures(**out, voxel_sum=voxel_sum, voxel_sum_count=count, threshold=thr)


def high_level_vector(f: ShowerFeatures, geometry: CylindricalGeometry) -> np.ndarray:
    """The challenge's high-level classifier input, (N, D).

    Columns: log10 E_inc, log10(E_layer + 1e-8) (active layers), centres in eta and phi
    divided by 100 and widths in eta and phi divided by 100 (layers with angular bins),
    log10(E_tot + 1e-8), sparsity (active layers), centre and width in r divided by 100
    (active layers). Energies in MeV.
    """
    act = list(geometry.active_layers)
    ab = list(geometry.alpha_binned_layers)
    cols = [
        np.log10(f.e_inc)[:, None],
        np.log10(f.e_layer[:, act] + _EPS),
        f.ec_eta[:, ab] / 100.0, f.ec_phi[:, ab] / 100.0,
        f.width_eta[:, ab] / 100.0, f.width_phi[:, ab] / 100.0,
        np.log10(f.e_tot + _EPS)[:, None],
        f.sparsity[:, act],
        f.ec_r[:, act] / 100.0, f.width_r[:, act] / 100.0,
    ]
    # float32, as the features: FPD and KPD accumulate their statistics in float64
    return np.concatenate(cols, axis=1, dtype=np.float32, casting="same_kind")
