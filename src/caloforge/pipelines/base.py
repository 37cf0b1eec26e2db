"""What every seed system is to its users: a :class:`ShowerGenerator`.

A pipeline turns incident energies into showers on a geometry. Pipelines register
themselves under a name (``@register_pipeline("calovq")``) so that a checkpoint directory,
whose ``checkpoint.json`` names its pipeline, can be loaded without knowing its class.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ..errors import CheckpointError
from ..geometry import CylindricalGeometry

__all__ = [
    "ShowerGenerator",
    "register_pipeline",
    "pipeline_class",
    "registered_pipelines",
]


@runtime_checkable
class ShowerGenerator(Protocol):
    """A trained fast simulator.

    ``sample`` takes incident energies in MeV, shape (N,), and returns voxel energies in
    MeV, shape (N, V) with V = ``geometry.n_voxels``.
    """

    geometry: CylindricalGeometry

    def sample(self, incident_energy: torch.Tensor, *, batch_size: int = 1000,
               generator: torch.Generator | None = None) -> torch.Tensor: ...

    def save(self, path: str | os.PathLike) -> None: ...

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
             ) -> ShowerGenerator: ...


_PIPELINES: dict[str, type] = {}


def register_pipeline(name: str) -> Callable[[type], type]:
    """Class decorator registering a pipeline under ``name`` (stored in checkpoints)."""

    def deco(cls: type) -> type:
        if name in _PIPELINES and _PIPELINES[name] is not cls:
            raise ValueError(f"pipeline {name!r} registered twice")
        _PIPELINES[name] = cls
        cls.pipeline_name = name
        return cls

    return deco


def registered_pipelines() -> tuple[str, ...]:
    return tuple(sorted(_PIPELINES))


def pipeline_class(name: str) -> type:
    """The pipeline class registered under ``name``."""
    if name not in _PIPELINES:
        raise CheckpointError(
            f"unknown pipeline {name!r}; known pipelines: {', '.join(registered_pipelines()) or 'none'}"
        )
    return _PIPELINES[name]
