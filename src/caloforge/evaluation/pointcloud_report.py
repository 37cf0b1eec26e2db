"""Evaluate generated point-cloud (showerdata) files against a reference: scores, table,
report, with the reference-vs-reference floor.

The point-cloud counterpart of :mod:`.report` (which handles CaloChallenge voxel files),
following CaloClouds II (Sections 4.1-4.3): every file is projected onto the cells of a
:class:`~caloforge.geometry.PlanarGeometry` chunk by chunk, cells below the threshold
(0.1 MeV) are removed, the E_long / E_radial bins are fitted once on the reference, and
each generated file gets the W1 score of every observable (mean and std over 10
subsamples) and the AUC of the 25-input high-level classifier. The **floor** is the same
scores between two random halves of the reference; every generated file is compared with
the second half using at most as many showers as the first half holds, so the numbers in
a row can be read against the floor. Every subset is a seeded random draw, never the
first rows of a file (generated files may be sorted, e.g. by energy)::

    result = evaluate_point_cloud_files("ref.h5", ["model.h5"], ["model"])
    print(format_point_cloud_table(result))
    write_point_cloud_report(result, "eval/")
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CaloforgeError, ConfigError
from ..geometry import PlanarGeometry, ild_ecal
from ..io import (
    ShowerDataError,
    atomic_path,
    point_cloud_file_length,
    read_point_clouds,
)
from .fpd_kpd import InsufficientDataError
from .pointcloud import (
    HALF_MIP_MEV,
    CellHits,
    ObservableBins,
    PointCloudEvaluationError,
    PointCloudObservables,
    evaluate_point_clouds,
    fit_observable_bins,
    high_level_features,
    point_cloud_observables,
    project_to_cells,
)
from .report import Metric, format_vs_floor, vs_floor, write_metrics_and_plots

__all__ = [
    "CLASSIFIER_HIDDEN",
    "FLOOR",
    "POINT_CLOUD_METRICS",
    "POINT_CLOUD_METRIC_INFO",
    "PointCloudEvaluationOptions",
    "PointCloudEvaluationResult",
    "evaluate_point_cloud_files",
    "format_point_cloud_table",
    "make_point_cloud_plots",
    "parse_point_cloud_geometry",
    "write_point_cloud_report",
]

#: Row name of the reference-vs-reference scores.
FLOOR = "reference floor"
#: Hidden layers of the CaloClouds II high-level classifier (the paper's 32-16-8).
CLASSIFIER_HIDDEN = (32, 16, 8)
#: W1 values are reported multiplied by this (the units of CaloClouds II's Tab. 1).
W1_SCALE = 100.0

_W1_OBSERVABLES = ("n_hits", "e_vis_over_e_inc", "e_cell", "e_long", "e_radial", "cog_x",
                   "cog_y", "cog_z")
_OBSERVABLE_NAMES = {
    "n_hits": "N_hits (cells above threshold)",
    "e_vis_over_e_inc": "E_vis / E_inc",
    "e_cell": "E_cell (cell energies)",
    "e_long": "E_long (mean of 10 layer groups)",
    "e_radial": "E_radial (mean of 10 rings)",
    "cog_x": "m1,X (centroid x)",
    "cog_y": "m1,Y (centroid y)",
    "cog_z": "m1,Z (centroid depth)",
}

#: Every score reported, in table order: (key, label).
POINT_CLOUD_METRICS = (
    *((f"w1/{o}", f"W1 x100: {_OBSERVABLE_NAMES[o]}") for o in _W1_OBSERVABLES),
    ("cls_high/auc", "classifier AUC (25 high-level inputs)"),
    ("cls_high/jsd", "classifier JSD (25 high-level inputs)"),
)
#: ``{key: {"name", "better", "ideal", "unit"}}``, written into metrics.json.
POINT_CLOUD_METRIC_INFO = {
    k: {"name": label,
        "better": "0.5 ideal" if k.endswith("/auc") else "lower",
        "ideal": 0.5 if k.endswith("/auc") else 0.0,
        "unit": ("W1 of the observable standardised with the reference half's mean and std, "
                 "x100" if k.startswith("w1/") else "dimensionless")}
    for k, label in POINT_CLOUD_METRICS
}
_KEYS = tuple(k for k, _ in POINT_CLOUD_METRICS)


# ------------------------------------------------------------------------------ options
@dataclass
class PointCloudEvaluationOptions:
    """What to compute and with how many showers.

    Attributes:
        classifier: ``"none"``; ``"cpu"``: one training of the CaloClouds II classifier
            (hidden 32-16-8, Adam lr 1e-3, ``classifier_epochs`` epochs) seeded with
            ``seed``; ``"official"``: the same network trained ``official_runs`` times on
            different random splits, AUC reported as mean and std as in CaloClouds II's
            Tab. 2. The network is tiny, so neither needs a GPU.
        threshold_mev: cell threshold (MeV); CaloClouds II: half a MIP, 0.1 MeV.
        max_showers: use at most this many showers of each file (seeded random subset).
        seed: seeds every random choice (subsets, halves, W1 subsamples, classifier).
        n_subsamples: W1 scores are the mean and std over this many disjoint subsamples.
        e_cell_subsample: cell hits per E_cell subsample (CaloClouds II: 50k; smaller
            samples use as many as fit disjointly).
        classifier_epochs: epochs of each classifier training (CaloClouds II: 10).
        official_runs: trainings of the ``"official"`` classifier.
        device: torch device of the classifier (default: CUDA when available).
        chunk_size: showers read and projected at a time (memory).
        bin_showers: reference showers (random) the E_long / E_radial bins are fitted on
            (CaloClouds II: its 40k-shower test set).
        max_cell_hits: cell energies kept per file for the E_cell score, a uniform random
            sample of all hits when there are more (the score compares 10 x 50k).
        max_lost_fraction: warn when more than this share of a file's point energy falls
            outside the cell window or the layers.
    """

    classifier: str = "cpu"
    threshold_mev: float = HALF_MIP_MEV
    max_showers: int | None = None
    seed: int = 0
    n_subsamples: int = 10
    e_cell_subsample: int | None = 50_000
    classifier_epochs: int = 10
    official_runs: int = 10
    device: str | None = None
    chunk_size: int = 1_000
    bin_showers: int = 40_000
    max_cell_hits: int = 5_000_000
    max_lost_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.classifier not in ("none", "cpu", "official"):
            raise ConfigError(f"classifier must be none, cpu or official, not {self.classifier!r}")
        if not self.threshold_mev >= 0:
            raise ConfigError(f"threshold must be >= 0 MeV, got {self.threshold_mev}")
        if self.max_showers is not None and self.max_showers < 1:
            raise ConfigError(f"max_showers must be >= 1, got {self.max_showers}")
        for name in ("n_subsamples", "classifier_epochs", "official_runs", "chunk_size",
                     "bin_showers", "max_cell_hits"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.e_cell_subsample is not None and self.e_cell_subsample < 1:
            raise ConfigError(f"e_cell_subsample must be >= 1, got {self.e_cell_subsample}")
        if not 0 <= self.max_lost_fraction <= 1:
            raise ConfigError(f"max_lost_fraction must be in [0, 1], got {self.max_lost_fraction}")

    @property
    def classifier_seeds(self) -> list[int]:
        """Seeds of the classifier trainings (none, one, or ``official_runs``)."""
        runs = {"none": 0, "cpu": 1, "official": self.official_runs}[self.classifier]
        return [self.seed + i for i in range(runs)]


def parse_point_cloud_geometry(spec: str | PlanarGeometry | None) -> PlanarGeometry:
    """The planar cell grid of a ``--geometry`` value for point clouds.

    ``None`` or ``"ild-ecal"``: :func:`~caloforge.geometry.ild_ecal` with its default
    30 x 30 window of 5 mm cells, the grid ``caloforge simulate --points`` writes its
    clouds on (points outside it are never produced, so no energy is lost).
    ``"ild-ecal:N"``: the same ECAL with an N x N window (CaloClouds II projects onto
    400 x 400 mm, ``ild-ecal:80``), for clouds that extend further.

    Raises:
        ConfigError: any other value.
    """
    if spec is None:
        return ild_ecal()
    if isinstance(spec, PlanarGeometry):
        return spec
    name, _, size = str(spec).strip().partition(":")
    if name.strip().lower().replace("_", "-") != "ild-ecal":
        raise ConfigError(f"--geometry {spec}: point clouds take ild-ecal or ild-ecal:N "
                          "(an N x N window of 5 mm cells)")
    if not size:
        return ild_ecal()
    try:
        n = int(size)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--geometry {spec}: N in ild-ecal:N must be a positive integer")
    return ild_ecal(n_cells=n)


# ------------------------------------------------------------------------------- result
@dataclass
class PointCloudEvaluationResult:
    """Everything :func:`evaluate_point_cloud_files` found.

    Attributes:
        labels: generated sample labels, in order.
        floor: scores of reference half A against half B (:data:`POINT_CLOUD_METRICS`
            keys; W1 values x100).
        models: ``{label: scores}`` of each generated sample against reference half B.
        details: ``{row: {...}}``: per-bin W1 of E_long / E_radial, classifier runs,
            cell hits per E_cell subsample, showers without hits.
        bins: the E_long / E_radial bins (fitted on the reference).
        geometry: the cell grid.
        warnings: human-readable warnings (also in the report).
        meta: files, sizes, threshold, options, timings.
        observables: ``{"reference" | label: PointCloudObservables}`` of the showers each
            row used (reference: half B), for plots.
        profiles: mean cell energy per shower (MeV) by layer and by ring of one cell
            pitch: ``{"radial_edges_mm": (R + 1,), "rows": {"reference" | label:
            {"layer": (L,), "radial": (R,)}}}`` (reference: every selected shower).
    """

    labels: list[str]
    floor: dict[str, Metric]
    models: dict[str, dict[str, Metric]]
    details: dict[str, Any]
    bins: ObservableBins
    geometry: PlanarGeometry
    warnings: list[str]
    meta: dict[str, Any]
    observables: dict[str, PointCloudObservables] = field(default_factory=dict, repr=False)
    profiles: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``metrics.json``."""
        return {
            "kind": "point_clouds",
            "metric_keys": list(_KEYS),
            "metric_info": POINT_CLOUD_METRIC_INFO,
            "vs_floor": {lab: {k: vs_floor(k, m.value, self.floor[k].value) for k, m in ms.items()}
                         for lab, ms in self.models.items()},
            "floor": {k: m.to_dict() for k, m in self.floor.items()},
            "models": {lab: {k: m.to_dict() for k, m in ms.items()}
                       for lab, ms in self.models.items()},
            "details": self.details,
            "bins": self.bins.to_dict(),
            "geometry": self.geometry.to_dict(),
            "profiles": self.profiles,
            "warnings": self.warnings,
            "meta": self.meta,
        }


# ----------------------------------------------------------------------------- reading
@dataclass
class _Sample:
    """Per-shower observables of the selected showers of one file, and a uniform random
    sample of its cell energies with the shower each belongs to."""

    obs: PointCloudObservables
    cell_shower: np.ndarray
    n_cells: int
    lost_fraction: float
    layer_sum: np.ndarray
    radial_sum: np.ndarray

    def __len__(self) -> int:
        return len(self.obs)

    def subset(self, idx: np.ndarray) -> PointCloudObservables:
        """Observables of showers ``idx`` (in that order); E_cell: their sampled hits."""
        o = self.obs
        e_cell = o.e_cell[np.isin(self.cell_shower, idx)]
        return PointCloudObservables(o.incident_energies[idx], o.n_hits[idx], o.e_vis[idx],
                                     o.e_long[idx], o.e_radial[idx], o.cog_x[idx], o.cog_y[idx],
                                     o.cog_z[idx], e_cell, o.bins)


class _Accumulator:
    """Observables of consecutive chunks of projected showers, joined.

    Cell energies are kept by bottom-k sampling (each hit gets a uniform random key; the
    ``cap`` smallest keys are kept), a uniform sample without replacement of all hits
    however the file is chunked, so GEANT4-size files need not hold every hit in memory.
    """

    def __init__(self, bins: ObservableBins, geometry: PlanarGeometry, radial_edges: np.ndarray,
                 cap: int, rng: np.random.Generator):
        self.bins, self.geometry, self.radial_edges = bins, geometry, radial_edges
        self.cap, self.rng = cap, rng
        self.parts: list[PointCloudObservables] = []
        # (keys, cell energies, shower numbers) of the sampled hits, joined lazily
        self.pool: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pool_size = 0
        self.n_showers = self.n_cells = 0
        self.lost = self.total = 0.0
        self.layer_sum = np.zeros(geometry.n_layers)
        self.radial_sum = np.zeros(len(radial_edges) - 1)

    def add(self, hits: CellHits) -> None:
        obs = point_cloud_observables(hits, self.bins)
        obs.e_cell = obs.e_cell[:0]  # kept in the sampled pool below, not per chunk
        self.parts.append(obs)
        self.pool.append((self.rng.random(len(hits.energy)), hits.energy,
                          hits.shower + self.n_showers))
        self.pool_size += len(hits.energy)
        if self.pool_size > 2 * self.cap:  # thin now and then: linear in the hits overall
            self._thin()
        self.n_showers += hits.n_showers
        self.n_cells += len(hits.energy)
        self.lost += hits.lost_energy_mev
        self.total += hits.point_energy_mev
        self.layer_sum += np.bincount(hits.layer, weights=hits.energy,
                                      minlength=self.geometry.n_layers)
        self.radial_sum += np.histogram(hits.radius_mm(self.bins.axis_xy), self.radial_edges,
                                        weights=hits.energy)[0]

    def _thin(self) -> tuple[np.ndarray, np.ndarray]:
        keys, e, s = (np.concatenate([p[i] for p in self.pool]) for i in range(3))
        if len(keys) > self.cap:
            keep = np.sort(np.argpartition(keys, self.cap - 1)[:self.cap])
            keys, e, s = keys[keep], e[keep], s[keep]
        self.pool, self.pool_size = [(keys, e, s)], len(keys)
        return e, s

    def result(self) -> _Sample:
        ps = self.parts
        cat = lambda name: np.concatenate([getattr(p, name) for p in ps])  # noqa: E731
        cell_e, cell_s = self._thin()
        obs = PointCloudObservables(cat("incident_energies"), cat("n_hits"), cat("e_vis"),
                                    cat("e_long"), cat("e_radial"), cat("cog_x"), cat("cog_y"),
                                    cat("cog_z"), cell_e, self.bins)
        return _Sample(obs, cell_s, self.n_cells,
                       self.lost / self.total if self.total > 0 else 0.0,
                       self.layer_sum, self.radial_sum)


def _file_length(path: str, option: str) -> int:
    try:
        n = point_cloud_file_length(path)
    except ShowerDataError as exc:
        raise exc.with_option(option) from None
    if n == 0:
        raise ShowerDataError("holds no showers", path=path, option=option)
    return n


def _iter_projected(path: str, rows: np.ndarray, geometry: PlanarGeometry, threshold: float,
                    chunk_size: int, option: str) -> Iterator[CellHits]:
    """:class:`CellHits` of the showers ``rows`` (increasing) of a file, in chunks of at
    most ``chunk_size`` showers read from one contiguous range of rows."""
    lo = 0
    while lo < len(rows):
        # the rows of this read: as many as fit into chunk_size consecutive file rows
        hi = int(np.searchsorted(rows, rows[lo] + chunk_size, side="left"))
        start, stop = int(rows[lo]), int(rows[hi - 1]) + 1
        try:
            data = read_point_clouds(path, start, stop)
        except ShowerDataError as exc:
            raise exc.with_option(option) from None
        if hi - lo < stop - start:
            data = data[rows[lo:hi] - start]
        yield project_to_cells(data, geometry, threshold_mev=threshold)
        lo = hi


def _random_rows(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """``k`` of the rows ``0..n-1`` without replacement, increasing (all when k >= n)."""
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=int(k), replace=False)).astype(np.int64)


def _fit_bins(path: str, rows: np.ndarray, geometry: PlanarGeometry,
              opts: PointCloudEvaluationOptions,
              rng: np.random.Generator) -> tuple[ObservableBins, list[CellHits] | None]:
    """Bins fitted on up to ``opts.bin_showers`` random rows of the reference; the hits
    come back when those were all the rows (no second read needed)."""
    fit_rows = _random_rows(len(rows), opts.bin_showers, rng)
    parts = list(_iter_projected(path, rows[fit_rows], geometry, opts.threshold_mev,
                                 opts.chunk_size, "--reference"))
    hits = CellHits.concatenate(parts)
    if len(hits.energy) == 0:
        raise PointCloudEvaluationError(
            f"--reference {path}: no cell reaches the threshold of {opts.threshold_mev:g} MeV "
            f"on {geometry.name} ({geometry.n_cells_x} x {geometry.n_cells_y} cells); check "
            "the units (energies in GeV in the file), --threshold and --geometry")
    try:
        bins = fit_observable_bins(hits)
    except PointCloudEvaluationError as exc:
        raise PointCloudEvaluationError(f"--reference {path}: {exc}") from None
    return bins, (parts if len(fit_rows) == len(rows) else None)


def _read_sample(path: str, rows: np.ndarray, geometry: PlanarGeometry, bins: ObservableBins,
                 radial_edges: np.ndarray, opts: PointCloudEvaluationOptions, option: str,
                 rng: np.random.Generator, parts: list[CellHits] | None = None) -> _Sample:
    acc = _Accumulator(bins, geometry, radial_edges, opts.max_cell_hits, rng)
    chunks = parts if parts is not None else _iter_projected(
        path, rows, geometry, opts.threshold_mev, opts.chunk_size, option)
    for hits in chunks:
        acc.add(hits)
    sample = acc.result()
    with_hits = int((sample.obs.n_hits > 0).sum())
    if sample.n_cells == 0 or with_hits < 2 * opts.n_subsamples:
        raise PointCloudEvaluationError(
            f"{option} {path}: {'no' if sample.n_cells == 0 else f'only {with_hits} of {len(sample)}'}"
            f" showers have a cell above the threshold of {opts.threshold_mev:g} MeV on "
            f"{geometry.name} ({geometry.n_cells_x} x {geometry.n_cells_y} cells); check the "
            "units (energies in GeV in the file), --threshold and --geometry")
    return sample


def _check_energies(ref_e: np.ndarray, gen_e: np.ndarray, option_path: str, label: str,
                    warnings: list[str]) -> None:
    from scipy.stats import ks_2samp

    lo, hi = max(ref_e.min(), gen_e.min()), min(ref_e.max(), gen_e.max())
    if lo > hi:
        raise CaloforgeError(
            f"{option_path}: incident energies ({gen_e.min():.4g}..{gen_e.max():.4g} MeV) do "
            f"not overlap those of the reference ({ref_e.min():.4g}..{ref_e.max():.4g} MeV); "
            "the samples cannot be compared")
    ks = ks_2samp(ref_e, gen_e)
    if ks.pvalue < 1e-3:
        warnings.append(
            f"{label}: incident-energy spectrum differs from the reference's (KS statistic "
            f"{ks.statistic:.3f}, p = {ks.pvalue:.1e}); the scores then mix generator quality "
            "with the different spectrum")


# ------------------------------------------------------------------------------ scoring
def _scores(ref: PointCloudObservables, gen: PointCloudObservables, bins: ObservableBins,
            opts: PointCloudEvaluationOptions) -> tuple[dict[str, Metric], dict[str, Any]]:
    """All scores of ``gen`` against ``ref`` (W1 x100, classifier), and their details."""
    res = evaluate_point_clouds(ref, gen, bins=bins, threshold_mev=opts.threshold_mev,
                                n_subsamples=opts.n_subsamples,
                                e_cell_subsample=opts.e_cell_subsample, classifier=False,
                                rng=opts.seed)
    n = (len(ref), len(gen))
    metrics: dict[str, Metric] = {}
    for name in _W1_OBSERVABLES:
        w = res["w1"][name]
        metrics[f"w1/{name}"] = Metric(W1_SCALE * w["mean"], W1_SCALE * w["std"], None, n)
    details: dict[str, Any] = {
        "w1_per_bin_x100": {name: [{"mean": W1_SCALE * b["mean"], "std": W1_SCALE * b["std"]}
                                   for b in res["w1"][name]["per_bin"]]
                            for name in ("e_long", "e_radial")},
        "e_cell_hits_per_subsample": _e_cell_size(ref, gen, opts),
        "n_showers_without_hits": [res["n_ref_empty"], res["n_gen_empty"]],
    }
    seeds = opts.classifier_seeds
    if not seeds:
        note = "classifier not run (--classifier none)"
        metrics["cls_high/auc"] = Metric(None, None, note)
        metrics["cls_high/jsd"] = Metric(None, None, note)
        return metrics, details
    from .classifier import classifier_test  # torch: only when a classifier runs

    x_ref, stats = high_level_features(ref)
    x_gen, _ = high_level_features(gen, stats)
    try:
        runs = [classifier_test(x_ref, x_gen, preset="cpu", hidden=CLASSIFIER_HIDDEN,
                                epochs=opts.classifier_epochs, seed=s, device=opts.device)
                for s in seeds]
    except InsufficientDataError as exc:
        metrics["cls_high/auc"] = Metric(None, None, str(exc))
        metrics["cls_high/jsd"] = Metric(None, None, str(exc))
        return metrics, details
    k = runs[0].n_per_class
    for name in ("auc", "jsd"):
        vals = np.array([getattr(r, name) for r in runs])
        err = float(vals.std()) if len(runs) > 1 else None
        metrics[f"cls_high/{name}"] = Metric(float(vals.mean()), err, None, (k, k))
    details["classifier"] = {
        "runs": len(runs), "seeds": seeds, "hidden": list(CLASSIFIER_HIDDEN),
        "epochs": opts.classifier_epochs, "n_per_class": k,
        "auc": [r.auc for r in runs], "jsd": [r.jsd for r in runs],
        "best_epoch": [r.best_epoch for r in runs],
    }
    return metrics, details


def _e_cell_size(ref: PointCloudObservables, gen: PointCloudObservables,
                 opts: PointCloudEvaluationOptions) -> int:
    """Cell hits per E_cell subsample, as :func:`point_cloud_w1_scores` chooses it."""
    fit = min(len(ref.e_cell), len(gen.e_cell)) // opts.n_subsamples
    return fit if opts.e_cell_subsample is None else max(1, min(int(opts.e_cell_subsample), fit))


# ----------------------------------------------------------------------------- evaluate
def evaluate_point_cloud_files(
    reference: str | os.PathLike,
    generated: list[str | os.PathLike],
    labels: list[str] | None = None,
    *,
    options: PointCloudEvaluationOptions | None = None,
    geometry: str | PlanarGeometry | None = None,
    bins: ObservableBins | None = None,
    log: Callable[[str], None] | None = None,
) -> PointCloudEvaluationResult:
    """Score generated point-cloud files against a reference point-cloud file.

    Steps: a seeded random subset of the reference (all of it, or ``max_showers``) is
    split into two random halves A and B; the E_long / E_radial bins are fitted on (up to
    ``bin_showers`` of) the selected reference; each generated file contributes a random
    subset of as many showers as half A holds (``max_showers`` at most). The floor scores
    A against B, each model is scored against B, always with B's statistics for the
    standardisation.

    Args:
        reference: reference point-cloud file (showerdata layout).
        generated: generated point-cloud files.
        labels: one per generated file (default: the file names).
        options: :class:`PointCloudEvaluationOptions`.
        geometry: planar cell grid, or a ``--geometry`` string (see
            :func:`parse_point_cloud_geometry`); default ``ild_ecal()``.
        bins: E_long / E_radial bins to use instead of fitting them (e.g. the ``bins`` of
            an earlier ``metrics.json``, to compare numbers between runs).
        log: callable taking a progress message (default: silent).

    Raises:
        CaloforgeError: empty files, too few showers, no cells above threshold,
            non-overlapping energy spectra, bad labels (one line each, naming the file).
    """
    opts = options or PointCloudEvaluationOptions()
    say = log or (lambda msg: None)
    geo = parse_point_cloud_geometry(geometry)
    reference = os.fspath(reference)
    generated = [os.fspath(p) for p in generated]
    if not generated:
        raise CaloforgeError("no generated file to evaluate")
    if labels is None:
        labels = [os.path.splitext(os.path.basename(p))[0] for p in generated]
    labels = list(labels)
    if len(labels) != len(generated):
        raise CaloforgeError(f"{len(labels)} labels for {len(generated)} generated files")
    if len(set(labels)) != len(labels) or FLOOR in labels or "reference" in labels:
        raise CaloforgeError(f"labels must be distinct and not 'reference' or '{FLOOR}': {labels}")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    n_min_half = 2 * opts.n_subsamples  # evaluate_point_clouds' minimum per side

    # sizes first: an empty or too small file fails before any projection
    n_ref_file = _file_length(reference, "--reference")
    gen_files = [_file_length(p, "--generated") for p in generated]
    # independent streams: adding a generated file changes no other file's subset
    rng_ref = np.random.default_rng([opts.seed, 7919, 0])
    rng_gen = [np.random.default_rng([opts.seed, 7919, i + 1]) for i in range(len(generated))]
    ref_rows = _random_rows(n_ref_file, opts.max_showers, rng_ref)
    n_ref = len(ref_rows)
    n_cmp = n_ref // 2
    if n_cmp < n_min_half:
        raise ShowerDataError(
            f"{n_ref} showers{' selected' if n_ref < n_ref_file else ''}; the floor splits the "
            f"reference into two halves of at least {n_min_half} showers each "
            f"({opts.n_subsamples} subsamples), so at least {2 * n_min_half} are needed",
            path=reference, option="--reference")
    cap = n_cmp if opts.max_showers is None else min(n_cmp, opts.max_showers)
    gen_rows = [_random_rows(n, cap, rng) for n, rng in zip(gen_files, rng_gen)]
    for path, rows in zip(generated, gen_rows):
        if len(rows) < n_min_half:
            raise ShowerDataError(
                f"{len(rows)} showers; {opts.n_subsamples} subsamples need at least {n_min_half}",
                path=path, option="--generated")

    r_max = float(np.hypot(geo.half_width_x_mm, geo.half_width_y_mm))
    radial_edges = np.arange(0.0, r_max + geo.cell_mm, geo.cell_mm)

    t = time.perf_counter()
    parts = None
    n_bin_showers = None  # bins given by the caller
    if bins is None:
        n_bin_showers = min(n_ref, opts.bin_showers)
        say(f"fitting the E_long / E_radial bins on the reference ({min(n_ref, opts.bin_showers)} "
            "showers)")
        bins, parts = _fit_bins(reference, ref_rows, geo, opts, rng_ref)
    say(f"projecting the reference ({n_ref} showers) onto {geo.n_cells_x} x {geo.n_cells_y} cells")
    ref = _read_sample(reference, ref_rows, geo, bins, radial_edges, opts, "--reference",
                       rng_ref, parts)
    del parts
    samples: dict[str, _Sample] = {}
    for lab, path, rows, rng in zip(labels, generated, gen_rows, rng_gen):
        say(f"projecting {lab} ({len(rows)} showers)")
        samples[lab] = _read_sample(path, rows, geo, bins, radial_edges, opts, "--generated", rng)
        _check_energies(ref.obs.incident_energies, samples[lab].obs.incident_energies,
                        f"--generated {path}", lab, warnings)
    timings["projection_s"] = time.perf_counter() - t

    for row, s in [("reference", ref), *samples.items()]:
        if s.lost_fraction > opts.max_lost_fraction:
            warnings.append(
                f"{row}: {100 * s.lost_fraction:.1f}% of the point energy lies outside the "
                f"{geo.n_cells_x} x {geo.n_cells_y}-cell window or the {geo.n_layers} layers and "
                "is not scored; use a larger window (--geometry ild-ecal:N)")

    # random halves of the reference (a sorted file gives alike halves all the same)
    perm = rng_ref.permutation(n_ref)
    half_a, half_b = perm[:n_cmp], perm[n_cmp:2 * n_cmp]
    ref_a, ref_b = ref.subset(half_a), ref.subset(half_b)
    say(f"reference floor (half A vs half B, {n_cmp} showers each)")
    t = time.perf_counter()
    details: dict[str, Any] = {}
    floor, details[FLOOR] = _scores(ref_b, ref_a, bins, opts)
    timings["floor_s"] = time.perf_counter() - t
    models: dict[str, dict[str, Metric]] = {}
    observables: dict[str, PointCloudObservables] = {"reference": ref_b}
    for lab, rng in zip(labels, rng_gen):
        s = samples[lab]
        if len(s) < n_cmp:
            warnings.append(f"{lab}: {len(s)} showers, fewer than the {n_cmp} of each reference "
                            "half; its statistical noise is larger than the floor's")
        # shuffled: nothing downstream may see the file's order
        gen = s.subset(rng.permutation(len(s)))
        observables[lab] = gen
        say(f"scores of {lab}")
        t = time.perf_counter()
        models[lab], details[lab] = _scores(ref_b, gen, bins, opts)
        timings[f"{lab}_s"] = time.perf_counter() - t
    for row, ms in [(FLOOR, floor), *models.items()]:
        for key, m in ms.items():
            if m.value is None and not (m.note or "").startswith("classifier not run"):
                warnings.append(f"{row}: {key} not computed: {m.note}")
    timings["total_s"] = time.perf_counter() - t0

    profiles = {"radial_edges_mm": radial_edges,
                "rows": {row: {"layer": s.layer_sum / len(s), "radial": s.radial_sum / len(s)}
                         for row, s in [("reference", ref), *samples.items()]}}
    meta = {
        "kind": "point_clouds",
        "reference": os.path.abspath(reference),
        "generated": {lab: os.path.abspath(p) for lab, p in zip(labels, generated)},
        "geometry": f"{geo.name} ({geo.n_cells_x} x {geo.n_cells_y} cells of {geo.cell_mm:g} mm, "
                    f"{geo.n_layers} layers)",
        "threshold_mev": float(opts.threshold_mev),
        "n_reference_file": n_ref_file, "n_reference": n_ref, "n_per_half": n_cmp,
        "n_generated_file": dict(zip(labels, gen_files)),
        "n_compared": {lab: len(samples[lab]) for lab in labels},
        "n_bin_showers": n_bin_showers,
        "lost_energy_fraction": {row: s.lost_fraction
                                 for row, s in [("reference", ref), *samples.items()]},
        "subsampling": (f"random rows without replacement, seed {opts.seed}; never the first "
                        "rows of a file; random halves of the reference"),
        "w1_unit": POINT_CLOUD_METRIC_INFO["w1/n_hits"]["unit"]
                   + " (the units of CaloClouds II Tab. 1)",
        "classifier": opts.classifier,
        "options": dict(vars(opts)),
        "timings": timings,
    }
    return PointCloudEvaluationResult(labels, floor, models, details, bins, geo, warnings, meta,
                                      observables, profiles)


# ------------------------------------------------------------------------------- table
def _fmt(m: Metric) -> str:
    if m.value is None:
        return "n/a*"
    s = f"{m.value:.3f}" if abs(m.value) < 10 else f"{m.value:.4g}"
    if m.error is not None:
        s += f" ± {m.error:.2g}"
    return s


def _cell(result: PointCloudEvaluationResult, col: str, key: str) -> str:
    if col == FLOOR:
        return _fmt(result.floor[key])
    m = result.models[col][key]
    return _fmt(m) + format_vs_floor(key, m, result.floor[key])


def _header(result: PointCloudEvaluationResult) -> list[str]:
    meta = result.meta
    return [
        f"point clouds: {meta['geometry']}, cells >= {meta['threshold_mev']:g} MeV",
        f"W1 x100: Wasserstein-1 distance of each observable standardised with the mean and "
        f"std of reference half B, times 100 (the units of CaloClouds II Tab. 1, whose header "
        f"says x10^-3); mean ± std over {meta['options']['n_subsamples']} subsamples. "
        "E_long / E_radial: mean over their 10 bins, error sqrt(sum of squared bin stds).",
    ]


_READING_NOTES = (
    "better: lower = 0 is ideal (W1, JSD); 0.5 ideal = the classifier cannot tell the "
    "model from the reference (AUC).",
    "(xR): the model's value divided by the reference floor (1 = as close to the reference "
    "as the reference is to itself); (+D) for AUC: the model's AUC minus the floor's.",
)


def _classifier_line(result: PointCloudEvaluationResult) -> str:
    o = result.meta["options"]
    if o["classifier"] == "none":
        return "classifier: not run (--classifier none)"
    runs = 1 if o["classifier"] == "cpu" else o["official_runs"]
    return (f"classifier: CaloClouds II high-level network, hidden {'-'.join(map(str, CLASSIFIER_HIDDEN))}, "
            f"{o['classifier_epochs']} epochs, {runs} training(s)"
            + (" (AUC mean ± std over the runs)" if runs > 1 else ""))


def _showers_used(result: PointCloudEvaluationResult) -> list[str]:
    out = []
    for row, ms in [(FLOOR, result.floor), *result.models.items()]:
        w = ms["w1/n_hits"].n
        parts = [f"W1 {w[0]} vs {w[1]} showers (E_cell: {result.meta['options']['n_subsamples']} subsamples "
                 f"of {result.details[row]['e_cell_hits_per_subsample']} cell hits)"]
        c = ms["cls_high/auc"].n
        if c is not None:
            parts.append(f"classifier {c[0]} vs {c[1]} (60/20/20 split)")
        out.append(f"  {row}: " + "; ".join(parts))
    return out


def format_point_cloud_table(result: PointCloudEvaluationResult) -> str:
    """Plain-text table: one row per score, which direction is better, then one column per
    sample (floor first); model cells say how far they are from the floor."""
    cols = [FLOOR, *result.labels]
    rows = [[label, POINT_CLOUD_METRIC_INFO[key]["better"], *(_cell(result, c, key) for c in cols)]
            for key, label in POINT_CLOUD_METRICS]
    header = ["metric", "better", *cols]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [*_header(result), _classifier_line(result), "",
           line(header), "  ".join("-" * w for w in widths), *map(line, rows), "",
           *_READING_NOTES]
    if any(m.value is None for ms in [result.floor, *result.models.values()] for m in ms.values()):
        out.append("* n/a: not computed; see the warnings")
    out += ["", "showers used (reference side vs generated side; random subsets, seed "
            f"{result.meta['options']['seed']}):", *_showers_used(result)]
    if result.warnings:
        out.append("")
        out.extend(f"WARNING: {w}" for w in result.warnings)
    return "\n".join(out)


# ------------------------------------------------------------------------------- plots
def make_point_cloud_plots(result: PointCloudEvaluationResult) -> tuple[list[tuple[str, str]],
                                                                       list[str]]:
    """Histograms of the observables (reference half B vs each model, with ratios) and the
    mean longitudinal and radial profiles, as base64 PNGs.

    Needs the ``plot`` extra; without it, or when a plot fails, the plots are skipped and
    the reason comes back as a warning, so the report is still written.

    Returns:
        (plots, warnings): plots as ``[(title, base64 png)]``.
    """
    try:
        from . import plots as P
    except Exception as exc:  # noqa: BLE001 - any failure to import plotting is reported
        return [], [f"plots skipped: plotting unavailable ({type(exc).__name__}: {exc})"]
    plots: list[tuple[str, str]] = []
    warnings: list[str] = []
    ref = result.observables["reference"]
    gens = {lab: result.observables[lab] for lab in result.labels}

    def png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return base64.b64encode(buf.getvalue()).decode()

    def attempt(title: str, draw) -> None:
        try:
            with P.plot_style():
                plots.append((title, png(draw())))
        except Exception as exc:  # noqa: BLE001 - a failed plot must not lose the report
            warnings.append(f"plot {title!r} failed: {type(exc).__name__}: {exc}")

    def finite(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x[np.isfinite(x)]

    hists = [
        ("N_hits", lambda o: o.n_hits, 40, "N_hits (cells above threshold)", False, False),
        ("E_vis / E_inc", lambda o: o.e_vis_over_e_inc, 40, "E_vis / E_inc", False, False),
        ("E_cell", lambda o: o.e_cell, 50, "cell energy [MeV]", True, True),
        ("centroid x", lambda o: finite(o.cog_x), 40, "m1,X [mm]", False, False),
        ("centroid y", lambda o: finite(o.cog_y), 40, "m1,Y [mm]", False, False),
        ("centroid depth", lambda o: finite(o.cog_z), 40, "m1,Z [mm]", False, False),
    ]
    for title, get, nbins, xlabel, logx, logy in hists:
        def draw(get=get, nbins=nbins, xlabel=xlabel, logx=logx, logy=logy):
            fig, axes = P.figure_grid(1, ratio=True, panel_size=(5.0, 3.6))
            P.hist_with_ratio(get(ref), {k: get(v) for k, v in gens.items()}, nbins,
                              ax_main=axes[0][0], ax_ratio=axes[0][1], xlabel=xlabel, logx=logx,
                              logy=logy, ref_label="reference (half B)")
            return fig
        attempt(title, draw)
    prof = result.profiles["rows"]

    def longitudinal():
        fig, axes = P.figure_grid(1, panel_size=(5.0, 3.6))
        P.plot_layer_profile(prof["reference"]["layer"],
                             {k: prof[k]["layer"] for k in result.labels}, ax=axes[0],
                             ylabel="mean energy per shower [MeV]")
        return fig

    def radial():
        fig, axes = P.figure_grid(1, panel_size=(5.0, 3.6))
        P.plot_layer_profile(prof["reference"]["radial"],
                             {k: prof[k]["radial"] for k in result.labels}, ax=axes[0],
                             edges=result.profiles["radial_edges_mm"], xlabel="radius [mm]",
                             ylabel="mean energy per shower [MeV]")
        return fig

    attempt("longitudinal profile", longitudinal)
    attempt("radial profile", radial)
    return plots, warnings


# ------------------------------------------------------------------------------ report
def write_point_cloud_report(result: PointCloudEvaluationResult, out_dir: str | os.PathLike, *,
                             plots: bool = True) -> dict[str, str]:
    """Write ``metrics.json``, ``report.html`` and, with ``plots``, the plots as PNG files
    (``plots/NN-title.png``) into ``out_dir``; every file is written atomically.

    Returns:
        ``{"json": path, "html": path, "plots": directory}``.
    """
    out_dir = os.fspath(out_dir)
    figs, plot_warnings = make_point_cloud_plots(result) if plots else ([], [])
    warnings = [*result.warnings, *plot_warnings]
    json_path, plot_dir = write_metrics_and_plots(result.to_json(), warnings, figs, out_dir,
                                                  plot_prefix="pc-")
    with atomic_path(os.path.join(out_dir, "report.html")) as tmp, open(tmp, "w") as fh:
        fh.write(_html(result, warnings, figs, plots))
    return {"json": json_path, "html": os.path.join(out_dir, "report.html"), "plots": plot_dir}


def _html(result: PointCloudEvaluationResult, warnings: list[str],
          figs: list[tuple[str, str]], plots: bool) -> str:
    esc = html.escape
    cols = [FLOOR, *result.labels]

    def cell(col: str, key: str) -> str:
        m = result.floor[key] if col == FLOOR else result.models[col][key]
        if m.value is None:
            return f'<td class="na" title="{esc(m.note or "")}">n/a*</td>'
        return f"<td>{esc(_cell(result, col, key))}</td>"

    rows = "\n".join(
        f"<tr><th>{esc(label)}</th><td>{esc(POINT_CLOUD_METRIC_INFO[key]['better'])}</td>"
        + "".join(cell(c, key) for c in cols) + "</tr>" for key, label in POINT_CLOUD_METRICS)
    meta = result.meta
    warn = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    b = result.bins
    bins_from = ("given by the caller" if meta["n_bin_showers"] is None
                 else f"fitted on {meta['n_bin_showers']} reference showers")
    fig_html = "\n".join(
        f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(t)}">'
        f"<figcaption>{esc(t)}</figcaption></figure>" for t, b64 in figs)
    if not fig_html:
        fig_html = "<p>no plots" + (" (--no-plots)" if not plots else " (see warnings)") + "</p>"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>caloforge point-cloud evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ text-align: left; }}
td.na {{ background: #fde8e8; }}
.warn {{ background: #fff4d6; border: 1px solid #e0b040; padding: 0.5em 1em; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 520px; }}
</style></head><body>
<h1>caloforge point-cloud evaluation</h1>
<p>Reference: <code>{esc(meta['reference'])}</code> ({meta['n_reference']} of
{meta['n_reference_file']} showers). The reference floor compares two random halves of it
({meta['n_per_half']} showers each); every model is compared with half B using at most as
many showers.</p>
<p>{'<br>'.join(esc(x) for x in [*_header(result), _classifier_line(result)])}</p>
{'<div class="warn"><b>Warnings</b><ul>' + warn + '</ul></div>' if warnings else ''}
<h2>Scores</h2>
<table><tr><th>metric</th><th>better</th>{''.join(f'<th>{esc(c)}</th>' for c in cols)}</tr>
{rows}
</table>
<p>{'<br>'.join(esc(n) for n in _READING_NOTES)}</p>
<p>n/a*: not computed (hover for the reason; also listed in the warnings).</p>
<h3>Showers used</h3>
<pre>{esc(chr(10).join(_showers_used(result)))}</pre>
<p>{esc(meta['subsampling'])}.</p>
<h3>Bins ({bins_from})</h3>
<p>E_long layer edges: {esc(str(list(b.long_edges)))}<br>
E_radial edges [mm]: {esc(', '.join(f'{r:.4g}' for r in b.radial_edges))}</p>
<h2>Plots</h2>
{fig_html}
</body></html>
"""
