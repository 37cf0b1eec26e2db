"""Evaluate generated CaloChallenge files against a reference: metrics, table, report.

:func:`evaluate` computes, for every generated file and for the reference floor (one half
of the reference against the other, see :mod:`.floor`), the same fixed set of metrics
(:data:`METRIC_KEYS`); :func:`format_table` prints them side by side and
:func:`write_report` writes ``metrics.json`` and ``report.html`` (plots embedded as PNG).
A metric that cannot be computed (too few showers, classifier switched off, a failing
plot) keeps its row, has value ``None`` and a note saying why, and the report marks it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import CaloforgeError
from ..geometry import CylindricalGeometry
from ..io import ShowerFile, atomic_path
from .binning import CONVENTIONS
from .cache import cached_features
from .classifier import ClassifierResult, LowLevelInputs, classifier_test
from .features import ShowerFeatures, default_threshold, high_level_vector
from .floor import HALF_A, HALF_B
from .fpd_kpd import (
    InsufficientDataError,
    fpd,
    fpd_official,
    kpd,
    kpd_error_note,
    scale_by_reference,
)
from .prdc import log_voxels, prdc
from .separation import separation_powers

__all__ = [
    "EvaluationOptions",
    "EvaluationResult",
    "FEATURE_NAMES",
    "METRIC_INFO",
    "METRIC_KEYS",
    "METRICS",
    "Metric",
    "compare",
    "evaluate",
    "format_table",
    "make_plots",
    "voxel_sample_size",
    "vs_floor",
    "write_report",
]

_SEP_FEATURES = ("response", "e_tot", "e_layer", "ec_eta", "ec_phi", "width_eta", "width_phi",
                 "ec_r", "width_r", "sparsity", "voxel_energy", "shower_depth")
_W1_FEATURES = ("response", "e_layer", "ec_eta", "ec_phi", "width_eta", "width_phi", "ec_r",
                "width_r", "sparsity", "shower_depth")

#: Features in words, for the table a physicist reads (keys stay short in metrics.json).
FEATURE_NAMES = {
    "response": "E_tot / E_inc (response)",
    "e_tot": "E_tot (deposited energy)",
    "e_layer": "E_layer (energy per layer)",
    "ec_eta": "centre in eta",
    "ec_phi": "centre in phi",
    "width_eta": "width in eta",
    "width_phi": "width in phi",
    "ec_r": "centre in r",
    "width_r": "width in r",
    "sparsity": "sparsity (fraction of empty voxels)",
    "voxel_energy": "voxel energy",
    "shower_depth": "shower depth",
}

#: Every metric reported, in table order: (key, label).
METRICS = (
    *((f"sep/{f}", f"separation power: {FEATURE_NAMES[f]}") for f in _SEP_FEATURES),
    *((f"w1/{f}", f"W1 (standardised): {FEATURE_NAMES[f]}") for f in _W1_FEATURES),
    ("fpd", "FPD x1e3 (Fréchet physics distance)"),
    ("fpd_bias_corrected", "FPD x1e3, bias-corrected (caloforge estimator; not in published tables)"),
    ("kpd", "KPD x1e3 (kernel physics distance)"),
    ("prdc/precision", "precision (k=5)"),
    ("prdc/recall", "recall (k=5)"),
    ("prdc/density", "density (k=5)"),
    ("prdc/coverage", "coverage (k=5)"),
    ("cls_low/auc", "classifier low-level AUC"),
    ("cls_low/jsd", "classifier low-level JSD"),
    ("cls_high/auc", "classifier high-level AUC"),
    ("cls_high/jsd", "classifier high-level JSD"),
)


def _ideal(key: str) -> float:
    """The value of a perfect model: 0 for distances, 0.5 for a classifier's AUC (it
    cannot tell the samples apart), 1 for PRDC on samples of one distribution."""
    if key.endswith("/auc"):
        return 0.5
    if key.startswith("prdc/"):
        return 1.0
    return 0.0


def _better(key: str) -> str:
    ideal = _ideal(key)
    if ideal == 0.0:
        return "lower"
    if key.endswith("/auc"):
        return "0.5 ideal"
    return "1 ideal"


def vs_floor(key: str, value: float | None, floor: float | None) -> float | None:
    """How far a model's value is from the reference floor, as value / floor.

    Defined for the metrics whose ideal is 0 or 1 (distances, separation powers, JSD,
    PRDC) where the floor is positive: 1 means as close to the reference as the reference
    is to itself, 5 means five times the floor. For AUC, whose ideal is 0.5, the ratio
    of the distances from 0.5 would divide by noise near 0.5, so None (the table shows
    the difference instead, see :func:`format_table`).
    """
    if value is None or floor is None or key.endswith("/auc") or not floor > 0:
        return None
    return float(value) / float(floor)


#: ``{key: {"name": words, "better": "lower" | "0.5 ideal" | "1 ideal", "ideal": x}}``
METRIC_INFO = {k: {"name": label, "better": _better(k), "ideal": _ideal(k)}
               for k, label in METRICS}
METRIC_KEYS = tuple(k for k, _ in METRICS)


@dataclass
class Metric:
    """One number of the report: value (None when not computed), error, a note, and the
    showers it used.

    Attributes:
        value: the metric, or None when it could not be computed (``note`` says why).
        error: its uncertainty, or None when the method gives none or its estimate would
            mean nothing at these sample sizes (``note`` then says why).
        note: why the value or the error is missing.
        n: showers used, ``(reference side, generated side)``.
    """

    value: float | None
    error: float | None = None
    note: str | None = None
    n: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "note": self.note,
                "n": None if self.n is None else [int(self.n[0]), int(self.n[1])]}


@dataclass
class EvaluationOptions:
    """What to compute and with how many showers.

    Attributes:
        classifier: ``"none"``, ``"cpu"`` or ``"official"`` (classifier preset).
        classifier_epochs: overrides the preset's number of epochs.
        max_lowlevel: showers per class for the low-level classifier (also capped by
            ``voxel_memory_bytes``).
        max_prdc: showers per side for precision/recall/density/coverage (the kNN
            distances cost O(n^2 V); 5000 keeps ds2 near 10 s per comparison).
        prdc_k: neighbours for PRDC.
        fpd_min_samples: smallest FPD batch (the issue asks for at least 10k).
        fpd_sizes, fpd_batches: FPD sample sizes and batches per size (10 and 20).
        kpd_batch_size, kpd_batches: KPD batches.
        w1_subsamples: subsamples of the W1 error.
        voxel_memory_bytes: bound on the voxels held at once when a classifier runs: the
            three samples read as voxels (two reference halves, one model) and the
            classifier's training matrix; fewer showers are used where it binds (ds3:
            about 1 200 per class for 1 GB), and the report says so.
        prdc_memory_bytes: the same bound without a classifier (voxels for PRDC only):
            small, so the peak memory of an evaluation does not grow with the files.
        seed: seeds every random choice.
        convention: ``"official"`` (the default: the CaloChallenge evaluation's sampling
            and binning, so that values stand beside published tables: FPD from
            ``official_fpd_samples`` batches drawn with replacement, KPD on 10 batches of
            ``official_kpd_batch_size`` with replacement, 39 E_layer bins, out-of-range
            entries dropped) or ``"caloforge"`` (bias-corrected FPD extrapolated from
            batches drawn without replacement, KPD on batches of ``kpd_batch_size``, 40
            E_layer bins with under- and overflow). The bias-corrected FPD is reported
            under both, as ``fpd_bias_corrected`` under the official convention.
        official_fpd_samples: (smallest, largest) FPD batch of the official convention.
        official_kpd_batch_size: KPD batch of the official convention.
        device: torch device of the classifier tests (default: CUDA when available).
    """

    classifier: str = "cpu"
    classifier_epochs: int | None = None
    max_lowlevel: int = 50_000
    max_prdc: int = 5_000
    prdc_k: int = 5
    fpd_min_samples: int = 10_000
    fpd_sizes: int = 10
    fpd_batches: int = 20
    kpd_batch_size: int = 10_000
    kpd_batches: int = 10
    w1_subsamples: int = 10
    voxel_memory_bytes: int = 1_000_000_000
    prdc_memory_bytes: int = 250_000_000
    seed: int = 0
    convention: str = "official"
    official_fpd_samples: tuple[int, int] = (20_000, 50_000)
    official_kpd_batch_size: int = 5_000
    device: str | None = None

    def __post_init__(self):
        if self.classifier not in ("none", "cpu", "official"):
            raise CaloforgeError(f"classifier must be none, cpu or official, not {self.classifier!r}")
        if self.convention not in CONVENTIONS:
            raise CaloforgeError(f"convention must be one of {', '.join(CONVENTIONS)}, "
                                 f"not {self.convention!r}")
        for name in ("max_lowlevel", "max_prdc", "prdc_k", "fpd_min_samples", "fpd_sizes",
                     "fpd_batches", "kpd_batch_size", "kpd_batches", "w1_subsamples",
                     "voxel_memory_bytes", "prdc_memory_bytes", "official_kpd_batch_size"):
            if int(getattr(self, name)) < 1:
                raise CaloforgeError(f"{name} must be >= 1, got {getattr(self, name)}")
        lo, hi = self.official_fpd_samples
        if not 2 <= lo <= hi:
            raise CaloforgeError(f"official_fpd_samples must be 2 <= min <= max, got {lo}, {hi}")


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` found.

    Attributes:
        labels: generated sample labels, in order.
        floor: metrics of reference half A vs half B.
        models: ``{label: metrics}`` of each generated sample vs reference half B.
        details: per-layer separation powers etc., ``{"floor" | label: {...}}``.
        warnings: human-readable warnings (also marked in the report).
        meta: files, sizes, geometry, threshold, timings.
        classifier_results: ``{row: {"cls_low" | "cls_high": ClassifierResult}}``.
        type_one: high-level classifier between generated samples, ``{"A vs B": metrics}``.
        features: ``{"reference" | label: ShowerFeatures}`` (for plots).
    """

    labels: list[str]
    floor: dict[str, Metric]
    models: dict[str, dict[str, Metric]]
    details: dict
    warnings: list[str]
    meta: dict
    geometry: CylindricalGeometry
    classifier_results: dict = field(default_factory=dict, repr=False)
    type_one: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {
            "metric_keys": list(METRIC_KEYS),
            "metric_info": METRIC_INFO,
            "vs_floor": {lab: {k: vs_floor(k, m.value, self.floor[k].value)
                               for k, m in ms.items() if k in self.floor}
                         for lab, ms in self.models.items()},
            "floor": {k: m.to_dict() for k, m in self.floor.items()},
            "models": {lab: {k: m.to_dict() for k, m in ms.items()} for lab, ms in self.models.items()},
            "type_one": {k: {kk: m.to_dict() for kk, m in v.items()} for k, v in self.type_one.items()},
            "details": self.details,
            "warnings": self.warnings,
            "meta": self.meta,
        }


# ------------------------------------------------------------------- metrics
def _finite_or_note(value: float, error: float | None = None, why: str = "undefined") -> Metric:
    if value is None or not np.isfinite(value):
        return Metric(None, None, why)
    if error is not None and not np.isfinite(error):
        error = None
    return Metric(float(value), None if error is None else float(error))


def _w1_metrics(ref: ShowerFeatures, gen: ShowerFeatures, geometry, opts) -> dict[str, Metric]:
    from .wasserstein import w1_with_error

    out = {}
    cols = {"e_layer": geometry.active_layers, "sparsity": geometry.active_layers,
            "ec_r": geometry.active_layers, "width_r": geometry.active_layers,
            "ec_eta": geometry.alpha_binned_layers, "ec_phi": geometry.alpha_binned_layers,
            "width_eta": geometry.alpha_binned_layers, "width_phi": geometry.alpha_binned_layers,
            "shower_depth": range(ref.shower_depth.shape[1])}
    n = min(len(ref), len(gen))
    sub = max(1, n // opts.w1_subsamples)
    for feat in _W1_FEATURES:
        if feat == "response":
            pairs = [(ref.response, gen.response)]
        else:
            a, b = getattr(ref, feat), getattr(gen, feat)
            pairs = [(a[:, c], b[:, c]) for c in cols[feat]]
        if not pairs:
            out[f"w1/{feat}"] = Metric(None, None, "no layers with this feature")
            continue
        vals = [w1_with_error(x, y, n_subsamples=opts.w1_subsamples, subsample_size=sub,
                              rng=opts.seed) for x, y in pairs]
        m = float(np.mean([v for v, _ in vals]))
        e = float(np.sqrt(np.sum([s ** 2 for _, s in vals])) / len(vals))
        out[f"w1/{feat}"] = _finite_or_note(m, e)
    return out


_SAME_AS_FPD = "the FPD row is the bias-corrected one under the caloforge convention"


def compare(ref: ShowerFeatures, gen: ShowerFeatures, geometry: CylindricalGeometry, *,
            ref_voxels: tuple[np.ndarray, np.ndarray] | None = None,
            gen_voxels: tuple[np.ndarray, np.ndarray] | None = None,
            options: EvaluationOptions | None = None) -> tuple[dict[str, Metric], dict, dict]:
    """All metrics of ``gen`` against ``ref``.

    Args:
        ref, gen: features of the two samples.
        ref_voxels, gen_voxels: ``(e_inc (n,), thresholded showers (n, V))`` for the
            low-level metrics (PRDC, low-level classifier); None marks them not computed.
        options: :class:`EvaluationOptions`.

    Returns:
        (metrics, details, classifier_results): ``metrics`` has exactly the keys
        :data:`METRIC_KEYS`, whatever was computed.
    """
    opts = options or EvaluationOptions()
    metrics: dict[str, Metric] = {}
    details: dict = {}
    official = opts.convention == "official"
    sp = separation_powers(ref, gen, geometry, convention=opts.convention)
    for feat in _SEP_FEATURES:
        metrics[f"sep/{feat}"] = _finite_or_note(sp[feat]["mean"], why="no entries in the binning range")
    details["separation_power"] = sp
    try:
        metrics.update(_w1_metrics(ref, gen, geometry, opts))
    except (CaloforgeError, ImportError, ValueError) as exc:
        for feat in _W1_FEATURES:
            metrics[f"w1/{feat}"] = Metric(None, None, f"W1 failed: {exc}")
    # scaled float32 copies only; the unscaled vectors are rebuilt if the classifier runs
    s_ref, s_gen = scale_by_reference(high_level_vector(ref, geometry),
                                      high_level_vector(gen, geometry))
    try:
        v, e = fpd(s_ref, s_gen, min_samples=opts.fpd_min_samples, n_sizes=opts.fpd_sizes,
                   n_batches=opts.fpd_batches, rng=opts.seed)
        corrected = _finite_or_note(v * 1e3, e * 1e3)
    except InsufficientDataError as exc:
        corrected = Metric(None, None, str(exc))
    if official:
        try:
            lo, hi = opts.official_fpd_samples
            v, e = fpd_official(s_ref, s_gen, min_samples=lo, max_samples=hi, rng=opts.seed)
            metrics["fpd"] = _finite_or_note(v * 1e3, e * 1e3)
        except InsufficientDataError as exc:
            metrics["fpd"] = Metric(None, None, str(exc))
        metrics["fpd_bias_corrected"] = corrected
    else:
        metrics["fpd"] = corrected
        metrics["fpd_bias_corrected"] = Metric(None, None, _SAME_AS_FPD)
    try:
        if official:
            v, e = kpd(s_ref, s_gen, batch_size=opts.official_kpd_batch_size, n_batches=10,
                       rng=opts.seed, replace=True, quantiles=(16.275, 83.725))
        else:
            v, e = kpd(s_ref, s_gen, batch_size=opts.kpd_batch_size,
                       n_batches=opts.kpd_batches, rng=opts.seed)
        metrics["kpd"] = _finite_or_note(v * 1e3, None if e is None else e * 1e3)
        if metrics["kpd"].value is not None and e is None:
            metrics["kpd"].note = kpd_error_note(len(s_ref), len(s_gen), opts.kpd_batch_size)
    except InsufficientDataError as exc:
        metrics["kpd"] = Metric(None, None, str(exc))
    del s_ref, s_gen  # not held through PRDC and the classifiers
    if ref_voxels is not None and gen_voxels is not None:
        n = min(opts.max_prdc, len(ref_voxels[1]), len(gen_voxels[1]))
        try:
            r = prdc(ref_voxels[1][:n], gen_voxels[1][:n], k=opts.prdc_k, transform=log_voxels)
            for name in ("precision", "recall", "density", "coverage"):
                metrics[f"prdc/{name}"] = Metric(r[name], None, None, (n, n))
            details["prdc_n"] = n
        except InsufficientDataError as exc:
            for name in ("precision", "recall", "density", "coverage"):
                metrics[f"prdc/{name}"] = Metric(None, None, str(exc))
    else:
        for name in ("precision", "recall", "density", "coverage"):
            metrics[f"prdc/{name}"] = Metric(None, None, "voxels not provided")
    cls_results: dict[str, ClassifierResult] = {}
    runs = {"cls_high": lambda: (high_level_vector(ref, geometry), high_level_vector(gen, geometry))}
    if ref_voxels is not None and gen_voxels is not None:
        runs["cls_low"] = lambda: (LowLevelInputs(*ref_voxels), LowLevelInputs(*gen_voxels))
    for kind in ("cls_low", "cls_high"):
        if opts.classifier == "none":
            note = "classifier not run (--classifier none)"
        elif kind not in runs:
            note = "voxels not provided"
        else:
            try:
                res = classifier_test(*runs[kind](), preset=opts.classifier, seed=opts.seed,
                                      epochs=opts.classifier_epochs, device=opts.device)
                cls_results[kind] = res
                metrics[f"{kind}/auc"] = _finite_or_note(res.auc)
                metrics[f"{kind}/jsd"] = _finite_or_note(res.jsd)
                for name in ("auc", "jsd"):
                    metrics[f"{kind}/{name}"].n = (res.n_per_class, res.n_per_class)
                details[kind] = {"n_per_class": res.n_per_class, "best_epoch": res.best_epoch,
                                 "test_accuracy": res.test_accuracy, "preset": res.preset,
                                 "hidden": list(res.hidden)}
                continue
            except InsufficientDataError as exc:
                note = str(exc)
        metrics[f"{kind}/auc"] = Metric(None, None, note)
        metrics[f"{kind}/jsd"] = Metric(None, None, note)
    n_feat = (len(ref), len(gen))
    for key, m in metrics.items():
        if m.n is None and m.value is not None:
            m.n = n_feat if not key.startswith(("prdc/", "cls_")) else m.n
    return {k: metrics[k] for k in METRIC_KEYS}, details, cls_results


# ------------------------------------------------------------------ evaluate
# float32 copies of one sample's voxels held at once: the two reference halves and the
# model's sample (PRDC transforms them block by block), plus, with a classifier, its
# (2n, 1 + V) training matrix (LowLevelInputs fills it without another full copy)
_COPIES_PRDC = 3
_COPIES_CLASSIFIER = 5


def voxel_sample_size(n_voxels: int, n_available: int, options: EvaluationOptions) -> int:
    """Showers per sample read as voxels for PRDC and the low-level classifier.

    The memory budget (``prdc_memory_bytes`` without a classifier, ``voxel_memory_bytes``
    with one) bounds the voxels held at once, so peak memory does not grow with the files.
    """
    per_shower = 4 * int(n_voxels)
    if options.classifier == "none":
        cap = options.prdc_memory_bytes // (_COPIES_PRDC * per_shower)
        want = options.max_prdc
    else:
        cap = options.voxel_memory_bytes // (_COPIES_CLASSIFIER * per_shower)
        want = max(options.max_lowlevel, options.max_prdc)
    return int(max(1, min(want, cap, n_available)))


def _read_voxels(f: ShowerFile, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The showers of ``rows`` (increasing) of a file, thresholded, as (e_inc, float32)."""
    n = len(rows)
    e = np.empty(n, dtype=np.float64)
    s = np.empty((n, f.geometry.n_voxels), dtype=np.float32)  # filled in place: no 2x peak
    step = max(1, int(1e7 // f.geometry.n_voxels))  # 40 MB of float32 a read
    for lo in range(0, n, step):
        chunk = f.read_rows(rows[lo:lo + step])
        hi = lo + len(chunk)
        e[lo:hi] = chunk.incident_energies
        s[lo:hi] = chunk.showers
        block = s[lo:hi]
        block[block < threshold] = 0.0
    return e, s


def _random_rows(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """``k`` of the row numbers ``0..n-1`` drawn without replacement, increasing
    (all of them when ``k`` is None or at least ``n``)."""
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=int(k), replace=False)).astype(np.int64)


def _subsample(rows: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``rows`` drawn without replacement, in increasing order."""
    return rows[_random_rows(len(rows), k, rng)]


def _check_energies(ref_e: np.ndarray, gen_e: np.ndarray, label: str, warnings: list[str]) -> None:
    from scipy.stats import ks_2samp

    lo, hi = max(ref_e.min(), gen_e.min()), min(ref_e.max(), gen_e.max())
    if lo > hi:
        raise CaloforgeError(
            f"incident energies of {label!r} ({gen_e.min():.4g}..{gen_e.max():.4g} MeV) do not "
            f"overlap those of the reference ({ref_e.min():.4g}..{ref_e.max():.4g} MeV); "
            "the samples cannot be compared")
    ks = ks_2samp(ref_e, gen_e)
    if ks.pvalue < 1e-3:
        warnings.append(
            f"{label}: incident-energy spectrum differs from the reference's (KS statistic "
            f"{ks.statistic:.3f}, p = {ks.pvalue:.1e}); shower metrics then mix generator "
            "quality with the different spectrum")


def evaluate(reference: str | os.PathLike, generated: list[str | os.PathLike],
             labels: list[str] | None = None, *, options: EvaluationOptions | None = None,
             threshold: float | None = None, max_showers: int | None = None,
             cache_dir: str | os.PathLike | None = None, geometry=None,
             log=None) -> EvaluationResult:
    """Evaluate generated CaloChallenge files against a reference file.

    Args:
        reference: reference file (e.g. Geant4 or the reference simulator).
        generated: generated files, same geometry.
        labels: one per generated file (default: file names).
        options: :class:`EvaluationOptions`.
        threshold: voxel threshold in MeV (default: the dataset's).
        max_showers: use at most this many showers of each file, a seeded random subset
            (never the first rows: files sorted by energy or response score as shuffled).
        cache_dir: feature cache directory (None: no cache).
        geometry: geometry (object or preset name) when it cannot be detected.
        log: callable taking a progress message (default: silent).

    Raises:
        CaloforgeError: mismatched geometries, non-overlapping energy spectra, bad labels.
    """
    opts = options or EvaluationOptions()
    say = log or (lambda msg: None)
    generated = [os.fspath(p) for p in generated]
    if not generated:
        raise CaloforgeError("no generated file to evaluate")
    if labels is None:
        labels = [os.path.splitext(os.path.basename(p))[0] for p in generated]
    if len(labels) != len(generated):
        raise CaloforgeError(f"{len(labels)} labels for {len(generated)} generated files")
    if len(set(labels)) != len(labels) or "reference floor" in labels:
        raise CaloforgeError(f"labels must be distinct and not 'reference floor': {labels}")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    warnings: list[str] = []
    # every subsample is a seeded random draw, never the first rows: a file sorted by
    # energy or by response must score as its shuffled copy does
    rngs = [np.random.default_rng([opts.seed, 7919, i]) for i in range(len(generated) + 1)]
    with ShowerFile(reference, geometry, option="--reference") as rf:
        rf.check_not_empty()
        geo = rf.geometry
        n_ref_file = len(rf)
    gen_file_sizes = []
    for path in generated:
        with ShowerFile(path, geometry if geometry is not None else geo,
                        option="--generated") as gf:
            gf.check_not_empty()
            if not gf.geometry.same_binning(geo):
                raise CaloforgeError(f"--generated {path}: geometry {gf.geometry.name!r} differs "
                                     f"from the reference's {geo.name!r}")
            gen_file_sizes.append(len(gf))
    thr = default_threshold(geo) if threshold is None else float(threshold)
    if not thr >= 0:
        raise CaloforgeError(f"threshold must be >= 0 MeV, got {thr}")
    ref_rows = _random_rows(n_ref_file, max_showers, rngs[0])
    gen_rows = {lab: _random_rows(n, max_showers, rng)
                for lab, n, rng in zip(labels, gen_file_sizes, rngs[1:])}
    n_ref = len(ref_rows)
    gen_sizes = [len(gen_rows[lab]) for lab in labels]
    if n_ref < 4:
        raise CaloforgeError(f"--reference {reference}: {n_ref} showers, at least 4 are needed")
    # each model is scored on as many showers as a reference half holds (the rows of
    # half A, HALF_A of the reference's rows): draw them now, so that features are
    # computed for those showers only and the memory held does not grow with the file
    n_cmp = len(range(n_ref)[HALF_A])
    for lab, rng in zip(labels, rngs[1:]):
        if len(gen_rows[lab]) < n_cmp:
            warnings.append(f"{lab}: {len(gen_rows[lab])} showers, fewer than the {n_cmp} of "
                            "each reference half; its statistical noise is larger than the floor's")
        gen_rows[lab] = _subsample(gen_rows[lab], n_cmp, rng)

    say("features of the reference")
    t = time.perf_counter()

    def rows_arg(rows: np.ndarray, n_file: int) -> np.ndarray | None:
        return None if len(rows) == n_file else rows  # None: all rows (a shorter cache key)

    ref_f, hit = cached_features(reference, cache_dir=cache_dir, threshold=thr, geometry=geo,
                                 rows=rows_arg(ref_rows, n_ref_file), option="--reference")
    gen_f = {}
    hits = {"reference": hit}
    for lab, path, n_file in zip(labels, generated, gen_file_sizes):
        say(f"features of {lab}")
        gen_f[lab], hits[lab] = cached_features(path, cache_dir=cache_dir, threshold=thr,
                                                geometry=geo, option="--generated",
                                                rows=rows_arg(gen_rows[lab], n_file))
    timings["features_s"] = time.perf_counter() - t
    for lab in labels:
        _check_energies(ref_f.e_inc, gen_f[lab].e_inc, lab, warnings)

    # the halves of split_halves (even and odd rows) as strided views: no copy of the
    # reference's features
    idx_a, idx_b = HALF_A, HALF_B
    ref_a, ref_b = ref_f.subset(idx_a), ref_f.subset(idx_b)

    # voxels for PRDC and the low-level classifier: random rows of each reference half and
    # of the showers each model is scored on
    k = voxel_sample_size(geo.n_voxels, n_cmp, opts)
    if opts.classifier != "none" and k < min(opts.max_lowlevel, n_cmp):
        warnings.append(f"low-level classifier uses {k} showers per class, not "
                        f"{min(opts.max_lowlevel, n_cmp)}: the voxels it holds are bounded "
                        f"by a memory budget of {opts.voxel_memory_bytes / 1e9:.2f} GB "
                        "(EvaluationOptions.voxel_memory_bytes, --voxel-memory)")
    t = time.perf_counter()
    with ShowerFile(reference, geo, option="--reference") as rf:
        vox_a = _read_voxels(rf, _subsample(ref_rows[idx_a], k, rngs[0]), thr)
        vox_b = _read_voxels(rf, _subsample(ref_rows[idx_b], k, rngs[0]), thr)
    timings["read_voxels_s"] = time.perf_counter() - t

    details: dict = {}
    cls_all: dict = {}
    say("reference floor (half A vs half B)")
    t = time.perf_counter()
    floor, details["reference floor"], cls_all["reference floor"] = compare(
        ref_a, ref_b, geo, ref_voxels=vox_b, gen_voxels=vox_a, options=opts)
    timings["floor_s"] = time.perf_counter() - t
    models = {}
    for lab, path, rng_g in zip(labels, generated, rngs[1:]):
        say(f"metrics of {lab}")
        t = time.perf_counter()
        with ShowerFile(path, geo, option="--generated") as gf:
            vox_g = _read_voxels(gf, _subsample(gen_rows[lab], k, rng_g), thr)
        models[lab], details[lab], cls_all[lab] = compare(
            ref_b, gen_f[lab], geo, ref_voxels=vox_b, gen_voxels=vox_g, options=opts)
        del vox_g
        timings[f"{lab}_s"] = time.perf_counter() - t
    type_one = {}
    if opts.classifier != "none" and len(labels) > 1:
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                say(f"type-I classifier {a} vs {b}")
                try:
                    r = classifier_test(high_level_vector(gen_f[a], geo),
                                        high_level_vector(gen_f[b], geo),
                                        preset=opts.classifier, seed=opts.seed,
                                        epochs=opts.classifier_epochs, device=opts.device)
                    type_one[f"{a} vs {b}"] = {"cls_high/auc": Metric(r.auc),
                                               "cls_high/jsd": Metric(r.jsd)}
                except InsufficientDataError as exc:
                    type_one[f"{a} vs {b}"] = {"cls_high/auc": Metric(None, None, str(exc)),
                                               "cls_high/jsd": Metric(None, None, str(exc))}
    for lab, ms in models.items():
        warnings.extend(_prdc_caveat(lab, ms))
    for row, ms in [("reference floor", floor), *models.items()]:
        for key, m in ms.items():
            if m.value is None and not (m.note or "").startswith(("classifier not run",
                                                                  _SAME_AS_FPD)):
                warnings.append(f"{row}: {key} not computed: {m.note}")
    timings["total_s"] = time.perf_counter() - t0
    meta = {
        "reference": os.path.abspath(os.fspath(reference)),
        "generated": {lab: os.path.abspath(p) for lab, p in zip(labels, generated)},
        "geometry": geo.name, "threshold_mev": thr,
        "n_reference": n_ref, "n_per_half": n_cmp,
        "n_reference_file": n_ref_file,
        "n_generated": dict(zip(labels, gen_sizes)),
        "n_generated_file": dict(zip(labels, gen_file_sizes)),
        "n_compared": {lab: len(gen_f[lab]) for lab in labels},
        "subsampling": (f"random rows without replacement, seed {opts.seed}; never the "
                        "first rows of a file"),
        "n_voxel_showers": k, "classifier": opts.classifier,
        "options": {k_: v for k_, v in vars(opts).items()},
        "cache_hits": hits, "timings": timings,
        "machine": _machine(),
    }
    return EvaluationResult(labels=list(labels), floor=floor, models=models, details=details,
                            warnings=warnings, meta=meta, geometry=geo,
                            classifier_results=cls_all, type_one=type_one,
                            features={"reference": ref_f, **gen_f})


def _prdc_caveat(label: str, ms: dict[str, Metric]) -> list[str]:
    """A warning where PRDC misleads: a sample of little diversity near the mean shower.

    In thousands of voxel dimensions the mean shower lies inside the k-NN balls of many
    reference showers (hubness), so a collapsed generator scores recall ~0 yet coverage
    and density far above a faithful one's (a known answer, see tests).
    """
    r, c, d = (ms[f"prdc/{k}"].value for k in ("recall", "coverage", "density"))
    if r is None or c is None or d is None:
        return []
    if (r < 0.1 and c > 2 * r + 0.05) or d > 2.0:
        return [f"{label}: PRDC recall {r:.3f} with coverage {c:.3f} and density {d:.3g}: "
                "a sample of little diversity near the mean shower lies inside many "
                "reference neighbourhoods, so coverage and density overstate it; read recall "
                "and the classifier AUC instead"]
    return []


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --------------------------------------------------------------------- table
def _fmt(m: Metric) -> str:
    if m.value is None:
        return "n/a*"
    v = m.value
    s = f"{v:.4f}" if abs(v) < 100 else f"{v:.4g}"
    if m.error is not None:
        s += f" ± {m.error:.2g}"
    elif m.note:
        s += " ± n/a†"  # an error the method would give, but not at these sample sizes
    return s


def format_vs_floor(key: str, m: Metric, floor: Metric) -> str:
    """``(x3.2)``: the value over the floor; ``(+0.12)`` for AUC: the difference."""
    if m.value is None or floor.value is None:
        return ""
    if key.endswith("/auc"):
        return f" ({m.value - floor.value:+.2g})"
    r = vs_floor(key, m.value, floor.value)
    if r is None:
        return ""
    return f" (x{r:.2g})" if r < 100 else f" (x{r:.3g})"


def _cell(result: EvaluationResult, col: str, key: str) -> str:
    """A table cell: the value ± error, and for a model how far it is from the floor."""
    if col == "reference floor":
        return _fmt(result.floor[key])
    m = result.models[col][key]
    return _fmt(m) + format_vs_floor(key, m, result.floor[key])


_READING_NOTES = (
    "better: lower = 0 is ideal (separation powers, W1, FPD, KPD, JSD); 0.5 ideal = the "
    "classifier cannot tell model from reference (AUC); 1 ideal = PRDC of two samples of "
    "one distribution.",
    "(xR): the model's value divided by the reference floor (1 = as close to the "
    "reference as the reference is to itself); (+D) for AUC: the model's AUC minus the "
    "floor's.",
)


def _showers_used(result: EvaluationResult) -> list[str]:
    """One line per row: how many showers each group of metrics used."""
    groups = (("features (separation, W1, FPD, KPD)", "sep/response"),
              ("PRDC", "prdc/precision"), ("classifier low-level", "cls_low/auc"),
              ("classifier high-level", "cls_high/auc"))
    out = []
    for row, ms in [("reference floor", result.floor), *result.models.items()]:
        parts = [f"{name} {ms[key].n[0]} vs {ms[key].n[1]}" for name, key in groups
                 if ms[key].n is not None]
        out.append(f"  {row}: " + ("; ".join(parts) or "none"))
    return out


def _error_notes(result: EvaluationResult) -> list[str]:
    notes = []
    for row, ms in [("reference floor", result.floor), *result.models.items()]:
        for key, m in ms.items():
            if m.value is not None and m.error is None and m.note:
                notes.append(f"† {row}, {key}: {m.note}")
    return notes


_CONVENTION_TEXT = {
    "caloforge": "caloforge (FPD extrapolated to infinite samples, bias removed; "
                 "E_layer 40 bins with under/overflow); not comparable with published tables",
    "official": "official (CaloChallenge sampling and binning: FPD/KPD batches drawn with "
                "replacement, FPD keeps the finite-sample bias; E_layer 39 bins)",
}


def format_table(result: EvaluationResult) -> str:
    """Plain-text table: one row per metric in words, which direction is better, then one
    column per sample (floor first); model cells say how far they are from the floor."""
    cols = ["reference floor", *result.labels]
    rows = [[label, METRIC_INFO[key]["better"], *(_cell(result, c, key) for c in cols)]
            for key, label in METRICS]
    header = ["metric", "better", *cols]
    convention = result.meta.get("options", {}).get("convention", "caloforge")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    out = [f"convention: {_CONVENTION_TEXT[convention]}", "",
           line(header), "  ".join("-" * w for w in widths), *map(line, rows), "",
           *_READING_NOTES]
    if result.type_one:
        out.append("")
        out.append("type-I classifier (generated vs generated, high-level):")
        for pair, ms in result.type_one.items():
            out.append(f"  {pair}: AUC {_fmt(ms['cls_high/auc'])}, JSD {_fmt(ms['cls_high/jsd'])}")
    if any(m.value is None for ms in [result.floor, *result.models.values()] for m in ms.values()):
        out.append("* n/a: not computed; see the warnings")
    out.extend(_error_notes(result))
    out.append("")
    out.append("showers used (reference side vs generated side; random subsets, seed "
               f"{result.meta.get('options', {}).get('seed', '?')}):")
    out.extend(_showers_used(result))
    if result.warnings:
        out.append("")
        out.extend(f"WARNING: {w}" for w in result.warnings)
    return "\n".join(out)


# --------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def make_plots(result: EvaluationResult) -> tuple[list[tuple[str, str]], list[str]]:
    """CaloChallenge-style plots of a result as base64 PNGs.

    Each plot is made independently; one that fails (plotting extra missing, a plotting
    error) is skipped and reported as a warning, so the report is still written.

    Returns:
        (plots, warnings): plots as ``[(title, base64 png)]``.
    """
    plots: list[tuple[str, str]] = []
    warnings: list[str] = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import plots as P
    except Exception as exc:  # noqa: BLE001 - any failure to import plotting is reported
        return [], [f"plots skipped: plotting unavailable ({type(exc).__name__}: {exc})"]
    geo = result.geometry
    ref = result.features["reference"]
    gens = {lab: result.features[lab] for lab in result.labels}

    def ratio_fig():
        return plt.subplots(2, 1, figsize=(6, 5), sharex=True,
                            gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})

    def attempt(title, fn):
        try:
            fig = fn()
            plots.append((title, _png(fig)))
        except Exception as exc:  # noqa: BLE001 - a failed plot must not lose the report
            plt.close("all")
            warnings.append(f"plot {title!r} failed: {type(exc).__name__}: {exc}")

    from .binning import feature_bins

    def hist(title, getter, bins, xlabel, logx=False, logy=False):
        def fn():
            fig, (a1, a2) = ratio_fig()
            P.hist_with_ratio(getter(ref), {k: getter(v) for k, v in gens.items()}, bins,
                              ax_main=a1, ax_ratio=a2, xlabel=xlabel, logx=logx, logy=logy)
            return fig
        attempt(title, fn)

    hist("E_tot / E_inc", lambda f: f.response, feature_bins("response", geo), "E_tot / E_inc")
    hist("E_tot", lambda f: f.e_tot, feature_bins("e_tot", geo, reference=ref.e_tot),
         "E_tot [MeV]", logx=True, logy=True)
    act = list(geo.active_layers)
    for lay in act[:: max(1, len(act) // 4)][:5]:
        hist(f"energy in layer {lay}", lambda f, lay=lay: f.e_layer[:, lay],
             feature_bins("e_layer", geo, reference=ref.e_layer[:, lay], threshold=ref.threshold),
             f"E layer {lay} [MeV]", logx=True, logy=True)
        hist(f"centre r, layer {lay}", lambda f, lay=lay: f.ec_r[:, lay],
             feature_bins("ec_r", geo, layer=lay), f"<r> layer {lay} [mm]")
        hist(f"sparsity, layer {lay}", lambda f, lay=lay: f.sparsity[:, lay],
             feature_bins("sparsity", geo), f"sparsity layer {lay}")
    if geo.alpha_binned_layers:
        lay = geo.alpha_binned_layers[len(geo.alpha_binned_layers) // 2]
        hist(f"centre eta, layer {lay}", lambda f: f.ec_eta[:, lay],
             feature_bins("ec_eta", geo, layer=lay), f"<eta> layer {lay} [mm]")
        hist(f"width phi, layer {lay}", lambda f: f.width_phi[:, lay],
             feature_bins("width_phi", geo, layer=lay), f"width phi layer {lay} [mm]")

    def profile():
        fig, ax = plt.subplots(figsize=(6, 4))
        P.plot_layer_profile(ref.e_layer.mean(axis=0),
                             {k: v.e_layer.mean(axis=0) for k, v in gens.items()}, ax=ax)
        return fig
    attempt("mean energy per layer", profile)

    def response_bins():
        fig, axes = plt.subplots(2, 3, figsize=(12, 6))
        P.plot_response_per_energy_bin(ref.e_inc, ref.response,
                                       {k: (v.e_inc, v.response) for k, v in gens.items()},
                                       axes=axes.ravel())
        return fig
    attempt("E_tot / E_inc per incident-energy bin", response_bins)

    def images():
        # rows: reference then each model; columns: three layers along the shower
        lays = act[:: max(1, len(act) // 3)][:3]
        samples = {"reference": ref, **gens}
        fig, axes = plt.subplots(len(samples), len(lays), figsize=(4.8 * len(lays), 3.8 * len(samples)),
                                 squeeze=False)
        for row, (name, f) in zip(axes, samples.items()):
            for ax, lay in zip(row, lays):
                P.plot_average_layer_image(f.mean_shower, geo, lay, ax=ax)
                ax.set_title(f"{name}, layer {lay}", fontsize=9)
        return fig
    attempt("average shower, selected layers", images)

    for row, res in result.classifier_results.items():
        for kind, r in res.items():
            def wfig(r=r):
                fig, ax = plt.subplots(figsize=(6, 4))
                P.plot_classifier_weights(r.weights_ref, r.weights_gen, ax=ax)
                return fig
            attempt(f"classifier weights, {row}, {kind}", wfig)
    return plots, warnings


# -------------------------------------------------------------------- report
def _html_cell(m: Metric, key: str | None = None, floor: Metric | None = None) -> str:
    if m.value is None:
        return f'<td class="na" title="{html.escape(m.note or "")}">n/a*</td>'
    extra = format_vs_floor(key, m, floor) if key is not None and floor is not None else ""
    return f"<td>{html.escape(_fmt(m) + extra)}</td>"


def write_report(result: EvaluationResult, out_dir: str | os.PathLike, *,
                 plots: bool = True) -> dict[str, str]:
    """Write ``metrics.json``, ``report.html`` and the plots as PNG files
    (``plots/NN-title.png``) into ``out_dir``; every file is written atomically.

    Returns:
        ``{"json": path, "html": path, "plots": directory}``.
    """
    figs, plot_warnings = make_plots(result) if plots else ([], [])
    warnings = [*result.warnings, *plot_warnings]
    json_path, plot_dir = write_metrics_and_plots(result.to_json(), warnings, figs, out_dir)
    cols = ["reference floor", *result.labels]
    all_rows = {"reference floor": result.floor, **result.models}
    rows = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(METRIC_INFO[key]['better'])}</td>"
        + "".join(_html_cell(all_rows[c][key], key, None if c == "reference floor"
                             else result.floor[key]) for c in cols) + "</tr>"
        for key, label in METRICS)
    warn_html = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    fig_html = "\n".join(
        f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(t)}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, b64 in figs)
    meta = result.meta
    type_one = "".join(
        f"<li>{html.escape(p)}: AUC {html.escape(_fmt(m['cls_high/auc']))}, "
        f"JSD {html.escape(_fmt(m['cls_high/jsd']))}</li>" for p, m in result.type_one.items())
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>caloforge evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ text-align: left; }}
td.na {{ background: #fde8e8; }}
.warn {{ background: #fff4d6; border: 1px solid #e0b040; padding: 0.5em 1em; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 560px; }}
</style></head><body>
<h1>caloforge evaluation</h1>
<p>Reference: <code>{html.escape(meta['reference'])}</code> ({meta['n_reference']} showers,
geometry <code>{html.escape(meta['geometry'])}</code>, threshold {meta['threshold_mev']:.6g} MeV).
The reference floor compares the two halves of the reference (even vs odd rows,
{meta['n_per_half']} showers each); every model is compared with the odd half using as many
showers. Convention: {html.escape(_CONVENTION_TEXT[meta['options'].get('convention', 'caloforge')])}.
Low-level metrics use {meta['n_voxel_showers']} showers per side (PRDC at most
{meta['options']['max_prdc']}). Classifier preset: {html.escape(meta['classifier'])}.</p>
{'<div class="warn"><b>Warnings</b><ul>' + warn_html + '</ul></div>' if warnings else ''}
<h2>Metrics</h2>
<table><tr><th>metric</th><th>better</th>{''.join(f'<th>{html.escape(c)}</th>' for c in cols)}</tr>
{rows}
</table>
<p>{'<br>'.join(html.escape(n) for n in _READING_NOTES)}</p>
<p>n/a*: not computed (hover for the reason; also listed in the warnings).
± n/a†: the method's error estimate means nothing at these sample sizes.</p>
{('<ul>' + ''.join(f'<li>{html.escape(n)}</li>' for n in _error_notes(result)) + '</ul>') if _error_notes(result) else ''}
<h3>Showers used</h3>
<pre>{html.escape(chr(10).join(_showers_used(result)))}</pre>
<p>Every subsample is a seeded random draw without replacement ({html.escape(str(meta.get('subsampling', '')))}).</p>
{'<h3>Type-I classifier (generated vs generated)</h3><ul>' + type_one + '</ul>' if type_one else ''}
<h2>Plots</h2>
{fig_html or '<p class="warn">no plots (see warnings)</p>'}
</body></html>
"""
    html_path = os.path.join(out_dir, "report.html")
    with atomic_path(html_path) as tmp, open(tmp, "w") as fh:
        fh.write(doc)
    return {"json": json_path, "html": html_path, "plots": plot_dir}


def write_metrics_and_plots(data: dict, warnings: list[str], figs: list[tuple[str, str]],
                            out_dir: str | os.PathLike, plot_prefix: str = "") -> tuple[str, str]:
    """The part every report shares: ``metrics.json`` (NaN/inf as null, the warnings
    added) and each figure as ``plots/<prefix>NN-title.png``, every file atomically.
    Returns (json path, plot directory)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    data = _sanitise(data)
    data["warnings"] = list(warnings)
    json_path = os.path.join(out_dir, "metrics.json")
    with atomic_path(json_path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=_json_default, allow_nan=False)
    plot_dir = os.path.join(out_dir, "plots")
    if figs:
        os.makedirs(plot_dir, exist_ok=True)
    for i, (title, b64) in enumerate(figs):
        slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
        with atomic_path(os.path.join(plot_dir, f"{plot_prefix}{i:02d}-{slug[:60]}.png")) as tmp, \
                open(tmp, "wb") as fh:
            fh.write(base64.b64decode(b64))
    return json_path, plot_dir


def _sanitise(o):
    """NaN/inf -> None recursively (JSON has no NaN), numpy values -> Python."""
    if isinstance(o, dict):
        return {str(k): _sanitise(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_sanitise(v) for v in o]
    if isinstance(o, np.ndarray):
        return _sanitise(o.tolist())
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o)}")
