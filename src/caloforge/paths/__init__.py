"""Probability paths shared by objectives and samplers, with conversions between the
velocity, noise and data predictions of a network trained on them; EDM's noise levels
and preconditioning (and the consistency-model variant)."""

from .base import PREDICTIONS, ProbabilityPath, broadcast_time
from .edm import ConsistencyPreconditioning, EDMPreconditioning
from .flow_matching import LinearFlowPath
from .vp_sde import VPSDEPath

__all__ = [
    "PREDICTIONS",
    "ConsistencyPreconditioning",
    "EDMPreconditioning",
    "LinearFlowPath",
    "ProbabilityPath",
    "VPSDEPath",
    "broadcast_time",
]
