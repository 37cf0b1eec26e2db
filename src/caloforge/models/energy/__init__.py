"""Energy networks: models of the layer-energy features u given the incident energy."""

from .transfusion import TransfusionConfig, TransfusionEnergyNet

__all__ = ["TransfusionConfig", "TransfusionEnergyNet"]
