"""Probability paths shared by objectives and samplers, with conversions between the
velocity, noise and data predictions of a network trained on them."""

from .base import PREDICTIONS, ProbabilityPath, broadcast_time
from .flow_matching import LinearFlowPath
from .vp_sde import VPSDEPath

__all__ = ["PREDICTIONS", "LinearFlowPath", "ProbabilityPath", "VPSDEPath", "broadcast_time"]
