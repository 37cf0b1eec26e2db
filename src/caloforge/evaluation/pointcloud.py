"""Point-cloud shower observables and scores (CaloClouds II definitions).

Every observable is computed at cell level: the points of a shower are projected onto
the planar cell grid of a :class:`~caloforge.geometry.PlanarGeometry` (energy summed per
cell), cells below the half-MIP threshold (0.1 MeV) are removed, and the observables are
computed from the remaining cells placed at their centres. The pipeline::

    hits = project_to_cells(points, geometry)            # CellHits
    bins = fit_observable_bins(hits_of_reference)        # ObservableBins (store it)
    obs = point_cloud_observables(hits, bins)            # PointCloudObservables
    scores = evaluate_point_clouds(ref, gen, geometry)   # all of it, as a dict
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CaloforgeError
from ..geometry import PlanarGeometry
from ..io import PointCloudData
from .wasserstein import standardisation, w1_with_error

__all__ = [
    "CellHits",
    "ObservableBins",
    "PointCloudObservables",
    "HALF_MIP_MEV",
    "N_OBSERVABLE_BINS",
    "project_to_cells",
    "project_file_to_cells",
    "fit_observable_bins",
    "point_cloud_observables",
    "point_cloud_w1_scores",
    "high_level_features",
    "evaluate_point_clouds",
]

#: Half the most probable MIP deposit in 0.5 mm of silicon (about 0.2 MeV).
HALF_MIP_MEV = 0.1
#: Number of longitudinal and radial energy observables.
N_OBSERVABLE_BINS = 10
#: Names of the scalar per-shower observables, in the order of the classifier's inputs.
SCALAR_OBSERVABLES = ("n_hits", "e_vis_over_e_inc", "cog_x", "cog_y", "cog_z")


class PointCloudEvaluationError(CaloforgeError, ValueError):
    """Point clouds cannot be evaluated as asked (no hits, too few layers, no geometry)."""


# --------------------------------------------------------------------------- projection
@dataclass
class CellHits:
    """Cells above threshold of N showers, stored flat (one entry per hit cell).

    Attributes:
        shower: shower number of each hit, shape (H,), sorted.
        layer, ix, iy: cell indices of each hit, shape (H,).
        energy: cell energy (MeV), shape (H,).
        incident_energies: MeV, shape (N,).
        geometry: the cell grid.
        threshold_mev: the cell threshold that was applied.
        lost_energy_mev: point energy outside the window or the layers (MeV, all showers).
        point_energy_mev: all point energy (MeV, all showers).
    """

    shower: np.ndarray
    layer: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    energy: np.ndarray
    incident_energies: np.ndarray
    geometry: PlanarGeometry
    threshold_mev: float
    lost_energy_mev: float = 0.0
    point_energy_mev: float = 0.0

    @property
    def lost_energy_fraction(self) -> float:
        """Share of the point energy that fell outside the window or the layers."""
        return self.lost_energy_mev / self.point_energy_mev if self.point_energy_mev > 0 else 0.0

    @property
    def n_showers(self) -> int:
        return int(len(self.incident_energies))

    @property
    def x_mm(self) -> np.ndarray:
        """Cell-centre x (mm), shape (H,)."""
        return self.geometry.x_edges[0] + (self.ix + 0.5) * self.geometry.cell_mm

    @property
    def y_mm(self) -> np.ndarray:
        """Cell-centre y (mm), shape (H,)."""
        return self.geometry.y_edges[0] + (self.iy + 0.5) * self.geometry.cell_mm

    @property
    def z_mm(self) -> np.ndarray:
        """Depth of the middle of the hit's active layer (mm), shape (H,)."""
        return self.geometry.layer_centre_mm[self.layer]

    @classmethod
    def concatenate(cls, parts: list[CellHits]) -> CellHits:
        """Hits of consecutive shower blocks as one object (shower numbers shifted)."""
        if not parts:
            raise PointCloudEvaluationError("nothing to concatenate")
        g, thr = parts[0].geometry, parts[0].threshold_mev
        if any(p.geometry != g or p.threshold_mev != thr for p in parts):
            raise PointCloudEvaluationError("cannot join hits of other geometries or thresholds")
        starts = np.cumsum([0] + [p.n_showers for p in parts[:-1]])
        return cls(np.concatenate([p.shower + s for p, s in zip(parts, starts)]),
                   np.concatenate([p.layer for p in parts]), np.concatenate([p.ix for p in parts]),
                   np.concatenate([p.iy for p in parts]),
                   np.concatenate([p.energy for p in parts]),
                   np.concatenate([p.incident_energies for p in parts]), g, thr,
                   float(sum(p.lost_energy_mev for p in parts)),
                   float(sum(p.point_energy_mev for p in parts)))

    def to_point_clouds(self, pdg: int = 22) -> PointCloudData:
        """The hits as a point cloud: one point per cell above threshold, at the cell
        centre (x, y mm), z = layer + 0.5 (layer units, the showerdata convention), in
        shower order. Projecting it again gives the same cells."""
        order = np.lexsort((self.iy, self.ix, self.layer, self.shower))
        pts = np.empty((len(order), 4), dtype=np.float32)
        pts[:, 0] = self.x_mm[order]
        pts[:, 1] = self.y_mm[order]
        pts[:, 2] = self.layer[order] + 0.5
        pts[:, 3] = self.energy[order]
        counts = np.bincount(self.shower, minlength=self.n_showers).astype(np.int64)
        return PointCloudData(self.incident_energies.astype(np.float32), pts, counts,
                              self.geometry, pdg)

    def radius_mm(self, axis_xy: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Distance of each cell centre from the shower axis (mm), shape (H,)."""
        return np.hypot(self.x_mm - axis_xy[0], self.y_mm - axis_xy[1])


def project_to_cells(
    points: PointCloudData,
    geometry: PlanarGeometry | None = None,
    *,
    threshold_mev: float = HALF_MIP_MEV,
) -> CellHits:
    """Sum point energies per cell and keep the cells at or above the threshold.

    A point belongs to the layer given by the integer part of its z (layer units, as in
    the ``showerdata`` layout) and to the cell containing its (x, y). Points outside the
    layers or the transverse window are dropped; their share of the energy is recorded
    in ``lost_energy_fraction``. Use a window large enough to hold the whole shower
    (CaloClouds II projects onto 400 x 400 mm, e.g. ``ild_ecal(n_cells=80)``).

    Args:
        points: showers as points (x mm, y mm, z layer units, E MeV).
        geometry: cell grid; ``None`` takes ``points.geometry``.
        threshold_mev: cells with energy below this are removed (0 keeps every cell).
    """
    geometry = geometry if geometry is not None else points.geometry
    if geometry is None:
        raise PointCloudEvaluationError(
            "no planar geometry: pass one (e.g. caloforge.geometry.ild_ecal(n_cells=80))"
        )
    if threshold_mev < 0:
        raise PointCloudEvaluationError(f"threshold must be >= 0 MeV, got {threshold_mev}")
    p = points.points
    e = p[:, 3].astype(np.float64)
    shower = points.shower_index()
    layer = np.floor(p[:, 2]).astype(np.int64)
    ix, iy, inside = geometry.cell_of(p[:, 0], p[:, 1])
    keep = inside & (layer >= 0) & (layer < geometry.n_layers) & (e > 0)

    nx, ny, nl = geometry.n_cells_x, geometry.n_cells_y, geometry.n_layers
    key = ((shower[keep] * nl + layer[keep]) * nx + ix[keep]) * ny + iy[keep]
    cells, inverse = np.unique(key, return_inverse=True)
    cell_e = np.bincount(inverse.reshape(-1), weights=e[keep], minlength=len(cells))
    above = cell_e >= threshold_mev
    if threshold_mev == 0:
        above &= cell_e > 0
    cells, cell_e = cells[above], cell_e[above]
    cells, iy_c = np.divmod(cells, ny)
    cells, ix_c = np.divmod(cells, nx)
    shower_c, layer_c = np.divmod(cells, nl)
    return CellHits(shower_c, layer_c, ix_c, iy_c, cell_e,
                    np.asarray(points.incident_energies, dtype=np.float64), geometry,
                    float(threshold_mev), float(e[~keep].sum()), float(e.sum()))


def project_file_to_cells(
    path: str | os.PathLike,
    geometry: PlanarGeometry,
    *,
    threshold_mev: float = HALF_MIP_MEV,
    chunk_size: int = 1_000,
    max_showers: int | None = None,
) -> CellHits:
    """:func:`project_to_cells` of a point-cloud (showerdata) file, read ``chunk_size``
    showers at a time: only the cells above threshold are kept, so GEANT4-size clouds
    (tens of thousands of steps per shower) fit in memory."""
    from ..io import point_cloud_file_length, read_point_clouds

    n = point_cloud_file_length(path)
    if max_showers is not None:
        n = min(n, int(max_showers))
    parts = [project_to_cells(read_point_clouds(path, lo, min(lo + chunk_size, n)), geometry,
                              threshold_mev=threshold_mev)
             for lo in range(0, n, chunk_size)]
    if not parts:
        raise PointCloudEvaluationError(f"{os.fspath(path)} holds no showers")
    return CellHits.concatenate(parts)


# ------------------------------------------------------------------------------ binning
@dataclass
class ObservableBins:
    """Bin edges of the longitudinal and radial energy observables.

    Attributes:
        long_edges: 11 layer indices (0-based); bin i holds layers
            ``long_edges[i] <= layer < long_edges[i+1]``, the last edge is ``n_layers``.
            CaloClouds II's published groups are ``[0, 8, 11, 13, 15, 16, 18, 19, 21, 24, 30]``.
        radial_edges: 11 radii (mm) from the shower axis; bins are half-open
            ``[r_i, r_{i+1})`` except that the last bin takes every larger radius too.
        axis_xy: transverse position of the shower axis (mm) the radii are measured from.
    """

    long_edges: tuple[int, ...]
    radial_edges: tuple[float, ...]
    axis_xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.long_edges = tuple(int(v) for v in self.long_edges)
        self.radial_edges = tuple(float(v) for v in self.radial_edges)
        self.axis_xy = (float(self.axis_xy[0]), float(self.axis_xy[1]))
        for name, edges in (("long_edges", self.long_edges), ("radial_edges", self.radial_edges)):
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise PointCloudEvaluationError(f"{name} must increase strictly: {edges}")

    @property
    def n_long(self) -> int:
        return len(self.long_edges) - 1

    @property
    def n_radial(self) -> int:
        return len(self.radial_edges) - 1

    def long_bin(self, layer: np.ndarray) -> np.ndarray:
        """Longitudinal bin of each layer index (layers outside go to the end bins)."""
        return np.searchsorted(np.asarray(self.long_edges[1:-1]), layer, side="right")

    def radial_bin(self, r_mm: np.ndarray) -> np.ndarray:
        """Radial bin of each radius (mm)."""
        return np.searchsorted(np.asarray(self.radial_edges[1:-1]), r_mm, side="right")

    def to_dict(self) -> dict[str, Any]:
        return {"long_edges": list(self.long_edges), "radial_edges": list(self.radial_edges),
                "axis_xy": list(self.axis_xy)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObservableBins:
        unknown = set(d) - {"long_edges", "radial_edges", "axis_xy"}
        if unknown:
            raise PointCloudEvaluationError(f"unknown ObservableBins keys: {sorted(unknown)}")
        return cls(d["long_edges"], d["radial_edges"], tuple(d.get("axis_xy", (0.0, 0.0))))


def _equal_count_cuts(values: np.ndarray, n_bins: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Cuts between distinct values that split the entries into ``n_bins`` groups of about
    equal counts: (k, u) with u the sorted distinct values and k, shape (n_bins - 1,), the
    indices such that cut i lies between u[k[i]] and u[k[i] + 1].

    Cells sit on a grid, so their layers and radii take few distinct values and plain
    quantiles would often coincide; cutting only between distinct values keeps every bin
    populated, the analogue of rounding the layer quantiles to whole layers.
    """
    u, counts = np.unique(values, return_counts=True)
    n_cuts = n_bins - 1
    if len(u) - 1 < n_cuts:
        raise PointCloudEvaluationError(
            f"the reference hits take only {len(u)} distinct {what} values; "
            f"{n_bins} bins need at least {n_bins}"
        )
    below = np.cumsum(counts)[:-1] / counts.sum()  # fraction at or below u_k, k < len(u)-1
    targets = np.arange(1, n_bins) / n_bins
    k = np.array([int(np.argmin(np.abs(below - t))) for t in targets])
    # Make the cuts distinct: push forward, then pull back from the end.
    for i in range(1, n_cuts):
        k[i] = max(k[i], k[i - 1] + 1)
    for i in range(n_cuts - 1, -1, -1):
        k[i] = min(k[i], len(u) - 2 - (n_cuts - 1 - i))
    return k, u


def fit_observable_bins(
    reference: CellHits,
    *,
    n_bins: int = N_OBSERVABLE_BINS,
    axis_xy: tuple[float, float] = (0.0, 0.0),
    r_max_mm: float | None = None,
) -> ObservableBins:
    """Equal-statistics (cell-hit count) bins of layer and radius, from reference hits.

    Longitudinal edges are whole layers; radial edges lie halfway between neighbouring
    distinct cell radii. The outer radial edge is ``r_max_mm`` (default: the farthest
    window corner from the axis), used only for display: larger radii fall in the last bin.
    """
    if len(reference.energy) == 0:
        raise PointCloudEvaluationError("the reference has no cells above threshold")
    g = reference.geometry
    k, u = _equal_count_cuts(reference.layer, n_bins, "layer")
    # A cut between layers u_k and u_{k+1} starts the next group at layer u_{k+1}.
    long_edges = [0, *(int(u[i + 1]) for i in k), g.n_layers]
    r = reference.radius_mm(axis_xy)
    k, u = _equal_count_cuts(np.round(r, 6), n_bins, "radius")
    if r_max_mm is None:
        r_max_mm = float(np.hypot(np.abs(g.x_edges - axis_xy[0]).max(),
                                  np.abs(g.y_edges - axis_xy[1]).max()))
    r_max_mm = max(float(r_max_mm), float(u[-1]) + 1e-6)
    radial_edges = [0.0, *(0.5 * (u[i] + u[i + 1]) for i in k), r_max_mm]
    return ObservableBins(long_edges, radial_edges, axis_xy)


# ---------------------------------------------------------------------------- observables
@dataclass
class PointCloudObservables:
    """Per-shower and per-cell observables of N showers.

    Attributes:
        incident_energies: MeV, shape (N,).
        n_hits: cells above threshold per shower, shape (N,).
        e_vis: summed energy of those cells (MeV), shape (N,).
        e_long: energy per longitudinal group (MeV), shape (N, n_long).
        e_radial: energy per radial ring (MeV), shape (N, n_radial).
        cog_x, cog_y, cog_z: energy-weighted cell-centre centroid (mm), shape (N,); NaN
            for a shower without hits.
        e_cell: energy of every hit cell (MeV), shape (H,).
        bins: the bins used for e_long and e_radial.
    """

    incident_energies: np.ndarray
    n_hits: np.ndarray
    e_vis: np.ndarray
    e_long: np.ndarray
    e_radial: np.ndarray
    cog_x: np.ndarray
    cog_y: np.ndarray
    cog_z: np.ndarray
    e_cell: np.ndarray
    bins: ObservableBins = field(repr=False)

    @property
    def e_vis_over_e_inc(self) -> np.ndarray:
        """Visible energy over incident energy ("sampling fraction"), shape (N,)."""
        return self.e_vis / self.incident_energies

    def __len__(self) -> int:
        return len(self.incident_energies)


def point_cloud_observables(hits: CellHits, bins: ObservableBins) -> PointCloudObservables:
    """Observables of projected, thresholded showers (see :class:`PointCloudObservables`)."""
    n = hits.n_showers
    s, e = hits.shower, hits.energy
    n_hits = np.bincount(s, minlength=n)
    e_vis = np.bincount(s, weights=e, minlength=n)
    lb = bins.long_bin(hits.layer)
    e_long = np.bincount(s * bins.n_long + lb, weights=e,
                         minlength=n * bins.n_long).reshape(n, bins.n_long)
    rb = bins.radial_bin(hits.radius_mm(bins.axis_xy))
    e_radial = np.bincount(s * bins.n_radial + rb, weights=e,
                           minlength=n * bins.n_radial).reshape(n, bins.n_radial)
    with np.errstate(invalid="ignore", divide="ignore"):
        cog = [np.bincount(s, weights=e * c, minlength=n) / e_vis
               for c in (hits.x_mm, hits.y_mm, hits.z_mm)]
    return PointCloudObservables(hits.incident_energies, n_hits, e_vis, e_long, e_radial,
                                 cog[0], cog[1], cog[2], e.copy(), bins)


# ---------------------------------------------------------------------------------- scores
def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def point_cloud_w1_scores(
    ref: PointCloudObservables,
    gen: PointCloudObservables,
    *,
    n_subsamples: int = 10,
    e_cell_subsample: int | None = 50_000,
    rng: int = 42,
) -> dict[str, dict[str, Any]]:
    """W1 of each standardised observable, mean and std over ``n_subsamples`` subsamples.

    Observables: n_hits, e_vis_over_e_inc, e_cell, e_long, e_radial, cog_x, cog_y, cog_z.
    Each is standardised with the reference's mean and std. Showers are split into
    ``n_subsamples`` disjoint chunks; cell energies are compared on chunks of
    ``e_cell_subsample`` hits (CaloClouds II: 50k; ``None``: as many as fit disjointly).
    ``e_long`` and ``e_radial`` are the average over their bins, with uncertainty
    sqrt(sum of the bins' squared stds) as CaloClouds II computes it; the per-bin values
    are in ``"per_bin"``. Centroids of showers without hits (NaN) are left out.

    Returns:
        ``{name: {"mean": float, "std": float}}`` in standardised units (multiply by 100
        for the units of CaloClouds II's Tab. 1).
    """
    _check_same_bins(ref, gen)
    out: dict[str, dict[str, Any]] = {}

    def score(a: np.ndarray, b: np.ndarray, size: int | None = None) -> tuple[float, float]:
        return w1_with_error(a, b, n_subsamples=n_subsamples, subsample_size=size,
                             standardise_with=standardisation(a), rng=rng)

    for name in ("n_hits", "e_vis_over_e_inc"):
        m, s = score(getattr(ref, name), getattr(gen, name))
        out[name] = {"mean": m, "std": s}
    size = None
    if e_cell_subsample is not None:
        fit = min(len(ref.e_cell), len(gen.e_cell)) // n_subsamples
        size = max(1, min(int(e_cell_subsample), fit))
    m, s = score(ref.e_cell, gen.e_cell, size)
    out["e_cell"] = {"mean": m, "std": s}
    for name in ("e_long", "e_radial"):
        a, b = getattr(ref, name), getattr(gen, name)
        per_bin = [score(a[:, i], b[:, i]) for i in range(a.shape[1])]
        means = np.array([p[0] for p in per_bin])
        stds = np.array([p[1] for p in per_bin])
        out[name] = {"mean": float(means.mean()), "std": float(np.sqrt((stds ** 2).sum())),
                     "per_bin": [{"mean": float(m), "std": float(s)} for m, s in per_bin]}
    for name in ("cog_x", "cog_y", "cog_z"):
        m, s = score(_finite(getattr(ref, name)), _finite(getattr(gen, name)))
        out[name] = {"mean": m, "std": s}
    return out


def _check_same_bins(ref: PointCloudObservables, gen: PointCloudObservables) -> None:
    if ref.bins.to_dict() != gen.bins.to_dict():
        raise PointCloudEvaluationError(
            "reference and generated observables were computed with different bins"
        )


def high_level_features(
    obs: PointCloudObservables,
    standardise_with: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The classifier's 25 inputs per shower, standardised.

    Columns: 10 E_radial, 10 E_long, CoG x, y, z, N_hits, E_vis/E_inc (CaloClouds II;
    E_cell is per cell, not per shower, and is not an input). Centroids of showers
    without hits are set to the reference mean (0 after standardisation).

    Args:
        obs: observables of N showers.
        standardise_with: (mean, std) arrays of shape (25,); ``None`` uses ``obs``'s own
            statistics (do this for the reference, then pass its statistics for the
            generated sample).

    Returns:
        (features (N, 25) float32, (mean, std) used).
    """
    x = np.concatenate([
        obs.e_radial, obs.e_long,
        np.stack([obs.cog_x, obs.cog_y, obs.cog_z, obs.n_hits.astype(np.float64),
                  obs.e_vis_over_e_inc], axis=1),
    ], axis=1).astype(np.float64)
    if standardise_with is None:
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = (np.asarray(v, dtype=np.float64) for v in standardise_with)
    z = (x - mean) / std
    z[~np.isfinite(z)] = 0.0
    return z.astype(np.float32), (mean, std)


def evaluate_point_clouds(
    ref: PointCloudData | CellHits | PointCloudObservables,
    gen: PointCloudData | CellHits | PointCloudObservables,
    geometry: PlanarGeometry | None = None,
    *,
    threshold_mev: float = HALF_MIP_MEV,
    bins: ObservableBins | None = None,
    axis_xy: tuple[float, float] = (0.0, 0.0),
    n_subsamples: int = 10,
    e_cell_subsample: int | None = 50_000,
    classifier: bool = True,
    classifier_preset: str = "cpu",
    rng: int = 42,
) -> dict[str, Any]:
    """All point-cloud scores of a generated sample against a reference.

    Both samples are projected onto ``geometry``'s cells with the same threshold. The
    E_long / E_radial bins are fitted on the reference unless ``bins`` is given (pass the
    stored bins of an earlier evaluation to compare numbers between runs). Either input
    may be precomputed :class:`PointCloudObservables` (then ``bins`` must match theirs).
    Either may also be :class:`CellHits` (e.g. from :func:`project_file_to_cells` for
    files larger than memory). For the reference floor, call it with two halves of the
    reference.

    Returns:
        ``{"w1": {observable: {"mean", "std"}}, "classifier": dict | None,
        "bins": ObservableBins.to_dict(), "threshold_mev", "n_ref", "n_gen",
        "n_ref_empty", "n_gen_empty", "lost_energy_fraction": {"ref", "gen"},
        "w1_unit"}``; ``"classifier"`` holds the scalar fields (auc, jsd,
        ...) of :func:`caloforge.evaluation.classifier.classifier_test`'s result on
        :func:`high_level_features`, or None when ``classifier=False``.
    """
    lost = {"ref": None, "gen": None}
    if isinstance(ref, PointCloudObservables):
        if bins is None:
            bins = ref.bins
        ref_obs = ref
    else:
        hits = ref if isinstance(ref, CellHits) else \
            project_to_cells(ref, geometry, threshold_mev=threshold_mev)
        lost["ref"] = hits.lost_energy_fraction
        if bins is None:
            bins = fit_observable_bins(hits, axis_xy=axis_xy)
        ref_obs = point_cloud_observables(hits, bins)
    if isinstance(gen, PointCloudObservables):
        gen_obs = gen
    else:
        hits = gen if isinstance(gen, CellHits) else \
            project_to_cells(gen, geometry, threshold_mev=threshold_mev)
        lost["gen"] = hits.lost_energy_fraction
        gen_obs = point_cloud_observables(hits, bins)
    for h in (ref, gen):
        if isinstance(h, CellHits) and h.threshold_mev != threshold_mev:
            raise PointCloudEvaluationError(
                f"hits were projected with threshold {h.threshold_mev} MeV, not {threshold_mev}"
            )
    if ref_obs.bins.to_dict() != bins.to_dict():
        raise PointCloudEvaluationError("the reference observables were made with other bins")
    for name, o in (("reference", ref_obs), ("generated", gen_obs)):
        if len(o) < 2 * n_subsamples:
            raise PointCloudEvaluationError(
                f"the {name} sample has {len(o)} showers; {n_subsamples} subsamples need "
                f"at least {2 * n_subsamples}"
            )
        if (o.n_hits > 0).sum() < n_subsamples:
            raise PointCloudEvaluationError(f"the {name} sample has almost no cells above threshold")

    w1 = point_cloud_w1_scores(ref_obs, gen_obs, n_subsamples=n_subsamples,
                               e_cell_subsample=e_cell_subsample, rng=rng)
    result: dict[str, Any] = {
        "w1": w1,
        "w1_unit": "W1 of observables standardised with the reference (x100 = CaloClouds II Tab. 1)",
        "classifier": None,
        "bins": bins.to_dict(),
        "threshold_mev": float(threshold_mev),
        "n_ref": len(ref_obs),
        "n_gen": len(gen_obs),
        "n_ref_empty": int((ref_obs.n_hits == 0).sum()),
        "n_gen_empty": int((gen_obs.n_hits == 0).sum()),
        "lost_energy_fraction": lost,
    }
    if classifier:
        from .classifier import classifier_test  # heavy (torch); only when asked

        x_ref, stats = high_level_features(ref_obs)
        x_gen, _ = high_level_features(gen_obs, stats)
        res = classifier_test(x_ref, x_gen, preset=classifier_preset, hidden=(32, 16, 8))
        result["classifier"] = _json_scalars(res)
    return result


def _json_scalars(res: Any) -> Any:
    """The scalar fields of a classifier result (arrays such as the per-shower weights are
    left out so that the scores stay JSON-serialisable)."""
    if hasattr(res, "to_dict"):
        res = res.to_dict()
    elif dataclasses.is_dataclass(res):
        res = {f.name: getattr(res, f.name) for f in dataclasses.fields(res)}
    if not isinstance(res, dict):
        return res
    out = {}
    for k, v in res.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, (bool, int, float, str, type(None))) or (
            isinstance(v, list) and all(isinstance(i, (int, float)) for i in v)
        ):
            out[k] = v
    return out
