"""Normalising flows: CaloClouds II's Shower Flow (built with zuko)."""

from .shower_flow import ShowerFlow, ShowerFlowConfig

__all__ = ["ShowerFlow", "ShowerFlowConfig"]
