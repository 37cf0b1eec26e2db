"""What every seed system is to its users: a :class:`ShowerGenerator`.

A pipeline turns incident energies into showers on a geometry. Pipelines register
themselves in :mod:`caloforge.pipelines.registry`, so that a checkpoint directory, whose
``checkpoint.json`` names its pipeline, can be loaded without knowing its class.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError, GenerationError
from ..geometry import CylindricalGeometry

__all__ = ["ShowerGenerator", "check_finite", "validate_energies"]


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


def validate_energies(incident_energy) -> torch.Tensor:
    """Incident energies as a float64 (N,) tensor; ConfigError unless finite and positive."""
    e = torch.as_tensor(incident_energy, dtype=torch.float64)
    if e.dim() == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.dim() != 1:
        raise ConfigError(f"incident energies must have shape (N,) or (N, 1), got {tuple(e.shape)}")
    if not torch.isfinite(e).all() or (e <= 0).any():
        raise ConfigError("incident energies must be finite and positive (MeV)")
    return e


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`GenerationError` when ``x`` holds NaN or inf; return ``x``.

    Generators call it on raw network outputs *before* any post-processing: a cut or a
    clamp would otherwise turn NaN into zeros and write empty showers without a word.
    """
    if not torch.isfinite(x).all():
        n = int((~torch.isfinite(x)).sum())
        raise GenerationError(
            f"{what} holds {n} NaN/inf value(s): the model's weights are damaged or its "
            "training diverged; nothing was written"
        )
    return x
