"""Point-cloud networks: CaloClouds II's per-point denoiser (PointWise Net)."""

from .pointwise import ConcatSquashLinear, PointWiseNet, PointWiseNetConfig

__all__ = ["ConcatSquashLinear", "PointWiseNet", "PointWiseNetConfig"]
