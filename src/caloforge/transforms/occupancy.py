"""Occupancy calibration: a fitted cut on decoded energy fractions.

A softmax decoder gives every voxel a non-zero fraction. After a short training the
smallest fractions are not small enough, and a shower of 100 GeV spreads tens of keV into
voxels that the data leaves empty: generated showers are far less sparse than the data,
and that diffuse floor also shifts energy into the tails of the shower. The calibration
removes it in the spirit of CaloClouds II's post-diffusion calibrations: per bin of
incident energy it fits the fraction ``c`` below which decoded voxels are set to zero, so
that the mean number of voxels above the readout threshold equals the data's. The cut is
interpolated in ``log E_inc`` between bins; the pipeline renormalises the surviving
fractions, so the shower's R (its energy) is kept exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["OccupancyCalibration"]

#: log10 of the cut used where the model is already as sparse as the data (no cut).
_NO_CUT = -30.0


@register_transform("occupancy_calibration")
class OccupancyCalibration(Transform):
    """Energy-dependent cut on fractions (N, V), fitted to match the data's occupancy.

    Args:
        n_bins: bins of incident energy, with equal numbers of training showers.

    ``forward(fractions, energy=E_inc)`` returns the boolean mask of voxels kept (N, V);
    the largest fraction of each shower is always kept. The cut is not invertible.
    """

    stat_names = ("log_energy_knots", "log_cut")

    def __init__(self, n_bins: int = 10) -> None:
        if n_bins < 1:
            raise ConfigError(f"occupancy calibration needs at least one bin, got {n_bins}")
        self.n_bins = int(n_bins)
        self.log_energy_knots: torch.Tensor | None = None
        self.log_cut: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins}

    def fit(self, fractions: Any, *, energy: Any, eligible: Any,  # type: ignore[override]
            target_counts: Any) -> OccupancyCalibration:
        """Fit on decoded (reconstructed) training showers.

        Args:
            fractions: decoded fractions (N, V).
            energy: incident energies (N,) MeV.
            eligible: (N, V) bool, voxels that would pass the readout threshold
                (fraction times R above it): only these count as occupied.
            target_counts: (N,) occupied voxels of the same showers in the data.
        """
        f = np.asarray(torch.as_tensor(fractions).detach().cpu(), dtype=np.float64)
        ok = np.asarray(torch.as_tensor(eligible).cpu(), dtype=bool)
        e = np.log(np.asarray(torch.as_tensor(energy).cpu(), dtype=np.float64).reshape(-1))
        target = np.asarray(torch.as_tensor(target_counts).cpu(), dtype=np.float64).reshape(-1)
        if not (f.shape == ok.shape and f.shape[0] == len(e) == len(target)):
            raise ValueError(
                f"fractions {f.shape}, eligible {ok.shape}, energy {e.shape} and target "
                f"counts {target.shape} do not describe the same showers"
            )
        n_bins = max(1, min(self.n_bins, len(e) // 20))
        edges = np.quantile(e, np.linspace(0.0, 1.0, n_bins + 1))
        which = np.clip(np.searchsorted(edges, e, side="right") - 1, 0, n_bins - 1)
        knots, cuts = [], []
        for b in range(n_bins):
            rows = which == b
            if not rows.any():
                continue
            values = f[rows][ok[rows]]
            k = int(round(target[rows].sum()))
            if k >= len(values) or k <= 0:
                cut = _NO_CUT if k > 0 else 0.0
            else:
                # the k-th largest eligible fraction: keeping fractions >= it leaves k voxels
                cut = float(np.log10(max(np.partition(values, len(values) - k)[len(values) - k],
                                         1e-30)))
            knots.append(float(np.median(e[rows])))
            cuts.append(cut)
        self.log_energy_knots = torch.tensor(knots, dtype=torch.float64)
        self.log_cut = torch.tensor(cuts, dtype=torch.float64)
        return self

    def cut(self, energy: torch.Tensor) -> torch.Tensor:
        """The fraction cut (N,) for incident energies (N,) MeV."""
        self._check_fitted()
        x = torch.log(torch.as_tensor(energy, dtype=torch.float64).cpu()).numpy()
        c = np.interp(x, self.log_energy_knots.numpy(), self.log_cut.numpy())
        return torch.from_numpy(10.0 ** c)

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        if "energy" not in cond:
            raise TypeError("OccupancyCalibration needs energy=incident energies (N,) MeV")
        c = self.cut(cond["energy"]).to(device=x.device, dtype=x.dtype)
        keep = x >= c[:, None]
        return keep | (x == x.amax(dim=-1, keepdim=True))

    def _inverse(self, y: torch.Tensor, **cond: Any) -> Any:
        raise TypeError("the occupancy cut removes voxels and cannot be inverted")
