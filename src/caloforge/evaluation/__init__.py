"""Fidelity of generated showers: CaloChallenge features and metrics, point-cloud
observables, classifier tests, FPD/KPD, timing, plots and the evaluation report."""

from .binning import FEATURE_NAMES, feature_bins, voxel_bin_groups
from .cache import FEATURE_VERSION, cache_key, cached_features
from .classifier import (
    CLASSIFIER_PRESETS,
    ClassifierPreset,
    ClassifierResult,
    LowLevelInputs,
    classifier_test,
    low_level_inputs,
)
from .features import (
    DS1_THRESHOLD_MEV,
    DS23_THRESHOLD_MEV,
    ShowerFeatures,
    apply_threshold,
    compute_features,
    default_threshold,
    geometry_family,
    high_level_vector,
)
from .floor import split_halves
from .fpd_kpd import (
    InsufficientDataError,
    fpd,
    fpd_official,
    frechet_distance,
    kpd,
    mmd2_unbiased_poly,
    scale_by_reference,
)
from .prdc import log_voxels, prdc
from .report import (
    METRIC_KEYS,
    EvaluationOptions,
    EvaluationResult,
    Metric,
    compare,
    evaluate,
    format_table,
    make_plots,
    write_report,
)
from .separation import separation_power, separation_power_samples, separation_powers
from .toy import toy_showers

__all__ = [
    "CLASSIFIER_PRESETS",
    "ClassifierPreset",
    "ClassifierResult",
    "DS1_THRESHOLD_MEV",
    "DS23_THRESHOLD_MEV",
    "EvaluationOptions",
    "EvaluationResult",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "InsufficientDataError",
    "METRIC_KEYS",
    "Metric",
    "ShowerFeatures",
    "apply_threshold",
    "cache_key",
    "cached_features",
    "classifier_test",
    "compare",
    "compute_features",
    "default_threshold",
    "evaluate",
    "feature_bins",
    "format_table",
    "fpd",
    "fpd_official",
    "frechet_distance",
    "geometry_family",
    "high_level_vector",
    "kpd",
    "log_voxels",
    "LowLevelInputs",
    "low_level_inputs",
    "make_plots",
    "mmd2_unbiased_poly",
    "prdc",
    "scale_by_reference",
    "separation_power",
    "separation_power_samples",
    "separation_powers",
    "split_halves",
    "toy_showers",
    "voxel_bin_groups",
    "write_report",
]

# Point-cloud observables, Wasserstein helper and timing harness (written alongside; the
# plotting functions live in the optional subpackage ``caloforge.evaluation.plots``, which
# needs the ``plot`` extra and is therefore not imported here).
from .pointcloud import (  # noqa: E402
    HALF_MIP_MEV,
    N_OBSERVABLE_BINS,
    CellHits,
    ObservableBins,
    PointCloudObservables,
    evaluate_point_clouds,
    fit_observable_bins,
    high_level_features,
    point_cloud_observables,
    point_cloud_w1_scores,
    project_file_to_cells,
    project_to_cells,
)
from .timing import TimingResult, TimingRow, machine_description, time_callable, time_generator  # noqa: E402
from .wasserstein import standardisation, w1_with_error  # noqa: E402

__all__ += [
    "CellHits",
    "HALF_MIP_MEV",
    "N_OBSERVABLE_BINS",
    "ObservableBins",
    "PointCloudObservables",
    "TimingResult",
    "TimingRow",
    "evaluate_point_clouds",
    "fit_observable_bins",
    "high_level_features",
    "machine_description",
    "point_cloud_observables",
    "point_cloud_w1_scores",
    "project_file_to_cells",
    "project_to_cells",
    "standardisation",
    "time_callable",
    "time_generator",
    "w1_with_error",
]
