"""CaloDREAM's fitted preprocessing, stored in its checkpoint (§2, Eq. 2-3).

Energies: layer energies E_l and E_inc -> u (Eq. 2, f = 2.85) -> logit (alpha 1e-6) ->
per-feature standardisation. The energy network generates u in this space and the shape
network is conditioned on it in the same space (docs/calodream.md, A3), so no conversion
sits between them.

Voxels: showers -> fractions of their layer (each layer sums to 1 or is empty). Full
space: fractions -> logit -> per-voxel standardisation. Latent space: the VAE reads the
fractions themselves (§2: "no additional preprocessing", which a Bernoulli likelihood
needs). Generation inverts the chain and renormalises every layer to the energy the
energy network gave it, so energy conservation comes from the u's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...errors import CheckpointError
from ...geometry import CylindricalGeometry
from ...transforms import (
    IncidentEnergyScaling,
    LayerEnergyRatios,
    LayerFractions,
    Logit,
    Standardize,
    transform_from_state,
)
from .config import CaloDREAMConfig

__all__ = ["CaloDREAMTransforms"]

_NAMES = ("energy", "ratios", "u_logit", "u_std", "fractions", "voxel_logit", "voxel_std")


@dataclass
class CaloDREAMTransforms:
    """The fitted transforms of one CaloDREAM model."""

    energy: IncidentEnergyScaling
    ratios: LayerEnergyRatios
    u_logit: Logit
    u_std: Standardize
    fractions: LayerFractions
    voxel_logit: Logit
    voxel_std: Standardize

    @classmethod
    def new(cls, config: CaloDREAMConfig, geometry: CylindricalGeometry) -> CaloDREAMTransforms:
        lo, hi = config.energy_range
        return cls(
            energy=IncidentEnergyScaling("log_minmax", e_min=lo, e_max=hi),
            ratios=LayerEnergyRatios(u0_scale=config.u0_scale),
            u_logit=Logit(config.logit_alpha),
            u_std=Standardize(per_feature=True),
            fractions=LayerFractions.from_geometry(geometry, cut=config.normalised_cut),
            voxel_logit=Logit(config.logit_alpha),
            voxel_std=Standardize(per_feature=True),
        )

    # ----------------------------------------------------------------- fitting
    def fit(self, showers: Tensor, energies: Tensor, *, full_space: bool,
            chunk: int = 4096) -> CaloDREAMTransforms:
        """Fit on training showers (N, V) and incident energies (N,), both MeV."""
        fractions, layers = self.fractions(showers.double())
        self.u_std.fit(self.u_logit(self.ratios(layers, incident_energy=energies.double())))
        if full_space:
            # per-voxel mean and std of logit(fractions), accumulated in chunks (float64)
            n = len(fractions)
            s1 = torch.zeros(fractions.shape[1], dtype=torch.float64)
            s2 = torch.zeros_like(s1)
            for lo in range(0, n, chunk):
                z = self.voxel_logit(fractions[lo:lo + chunk])
                s1 += z.sum(0)
                s2 += (z * z).sum(0)
            mean = s1 / n
            std = (s2 / n - mean * mean).clamp_min(0).sqrt()
            self.voxel_std.mean = mean
            self.voxel_std.std = torch.where(std > 0, std, torch.ones_like(std))
        return self

    # ----------------------------------------------------------------- forward
    def condition(self, energies: Tensor) -> Tensor:
        """Incident energies (N,) MeV -> scaled condition (N, 1) float32."""
        return self.energy(energies.double()).reshape(-1, 1).to(torch.float32)

    def u_features(self, showers: Tensor, energies: Tensor) -> Tensor:
        """Showers (N, V) MeV -> standardised logit(u) (N, L) float32."""
        _, layers = self.fractions(showers.double())
        u = self.ratios(layers, incident_energy=energies.double())
        return self.u_std(self.u_logit(u)).to(torch.float32)

    def layer_fractions(self, showers: Tensor) -> Tensor:
        """Showers (N, V) -> fractions of their layer (N, V) float32."""
        return self.fractions(showers.double())[0].to(torch.float32)

    def voxel_features(self, showers: Tensor) -> Tensor:
        """Showers (N, V) -> standardised logit(fraction) (N, V) float32 (full space)."""
        return self.voxel_std(self.voxel_logit(self.fractions(showers.double())[0])).to(
            torch.float32)

    # ----------------------------------------------------------------- inverse
    def layer_energies(self, u_features: Tensor, energies: Tensor) -> Tensor:
        """Generated u features (N, L) -> layer energies (N, L) MeV, float64 (u clipped
        to [0, 1] before inverting, docs/calodream.md, A1)."""
        u = self.u_logit.inverse(self.u_std.inverse(u_features.double()))
        return self.ratios.inverse(u, incident_energy=energies.double())

    def fractions_from_voxel_features(self, x: Tensor) -> Tensor:
        """Full space: generated features (N, V) -> non-negative fractions (N, V) float64
        (not yet renormalised)."""
        f = self.voxel_logit.inverse(self.voxel_std.inverse(x.double()))
        return f.clamp_min(0.0)

    def showers(self, fractions: Tensor, layer_energies: Tensor, cut: float) -> Tensor:
        """Normalised cut, per-layer renormalisation, times the layer energies -> (N, V)."""
        return self.fractions.inverse(fractions.double(), layer_energies, cut=cut)

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in _NAMES}

    @classmethod
    def from_state(cls, states: dict[str, Any]) -> CaloDREAMTransforms:
        missing = set(_NAMES) - set(states or {})
        if missing:
            raise CheckpointError(f"checkpoint lacks the CaloDREAM transforms {sorted(missing)}")
        return cls(**{k: transform_from_state(states[k]) for k in _NAMES})
