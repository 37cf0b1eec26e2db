"""Fitted, invertible preprocessing whose state is stored in checkpoints as JSON.

Every transform has ``fit(x)``, ``forward(x)`` / ``__call__``, ``inverse(y)``,
``state_dict()`` and ``load_state_dict()``; :func:`transform_from_state` rebuilds any
registered transform from its state.
"""

from .base import (
    STATE_VERSION,
    NotFittedError,
    Transform,
    list_transforms,
    register_transform,
    transform_from_state,
)
from .compose import Compose
from .energy import IncidentEnergyScaling
from .layer_fractions import LayerFractions
from .layer_hits import LayerHitCountMap, fit_layer_hit_count_map
from .log import LogTransform
from .logit import Logit
from .normalize import ShowerNormalization, layer_energies
from .occupancy import OccupancyCalibration
from .ratios import LayerEnergyRatios
from .scale import MinMaxScale, Standardize
from .tokens import DigitTokenizer
from .voxel_quantiles import VoxelQuantileCalibration, fit_voxel_quantile_calibration

__all__ = [
    "Compose",
    "DigitTokenizer",
    "IncidentEnergyScaling",
    "LayerEnergyRatios",
    "LayerFractions",
    "LayerHitCountMap",
    "LogTransform",
    "Logit",
    "MinMaxScale",
    "NotFittedError",
    "OccupancyCalibration",
    "STATE_VERSION",
    "ShowerNormalization",
    "Standardize",
    "Transform",
    "VoxelQuantileCalibration",
    "fit_layer_hit_count_map",
    "fit_voxel_quantile_calibration",
    "layer_energies",
    "list_transforms",
    "register_transform",
    "transform_from_state",
]
