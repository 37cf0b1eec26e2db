"""Scaling of the incident energy used as the networks' condition."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["IncidentEnergyScaling"]


@register_transform("incident_energy")
class IncidentEnergyScaling(Transform):
    """Map incident energies E (N,) or (N, 1), in MeV or any fixed unit, to a condition.

    Modes:
        ``"log_minmax"``: (ln E - ln e_min) / (ln e_max - ln e_min), in [0, 1] on the fitted
            range. CaloDREAM uses e_min=1e3, e_max=1e6 MeV; CaloLatent e_min=1e3, e_max=1e5
            MeV (its c in [0, 1.5] on ds2). The base of the log cancels.
        ``"log_standardize"``: (ln E - mean) / std over the training set.
        ``"minmax"``: (E - e_min) / (e_max - e_min).

    ``e_min`` / ``e_max`` given to the constructor are fixed; otherwise ``fit`` takes them
    (or the mean and std) from the training energies.
    """

    stat_names = ("shift", "scale")

    def __init__(
        self, mode: str = "log_minmax", e_min: float | None = None, e_max: float | None = None
    ) -> None:
        if mode not in ("log_minmax", "log_standardize", "minmax"):
            raise ConfigError(
                f"incident-energy mode must be log_minmax, log_standardize or minmax, got {mode!r}"
            )
        if (e_min is None) != (e_max is None):
            raise ConfigError("give both e_min and e_max, or neither")
        if mode == "log_standardize" and e_min is not None:
            raise ConfigError("log_standardize is fitted; e_min/e_max do not apply")
        if e_min is not None and not (0 < e_min < e_max if mode != "minmax" else e_min < e_max):
            raise ConfigError(f"need 0 < e_min < e_max, got {e_min}, {e_max}")
        self.mode, self.e_min, self.e_max = mode, e_min, e_max
        self.shift: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        if e_min is not None:
            self._set_range(torch.tensor(float(e_min)), torch.tensor(float(e_max)))

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "e_min": self.e_min, "e_max": self.e_max}

    def _pre(self, e: torch.Tensor) -> torch.Tensor:
        return torch.log(e) if self.mode.startswith("log") else e

    def _set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        lo64, hi64 = self._pre(lo.to(torch.float64)), self._pre(hi.to(torch.float64))
        self.shift = lo64.reshape(())
        self.scale = (hi64 - lo64).reshape(())

    def fit(self, x: Any, **cond: Any) -> IncidentEnergyScaling:
        if self.e_min is not None:
            return self  # fixed range: nothing to learn
        e = torch.as_tensor(x).to(torch.float64).reshape(-1)
        if self.mode == "log_standardize":
            z = torch.log(e)
            self.shift = z.mean()
            std = z.std(unbiased=False)
            self.scale = std if std > 0 else torch.ones(())
        else:
            self._set_range(e.min(), e.max())
            if self.scale == 0:
                self.scale = torch.ones((), dtype=torch.float64)
        return self

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        x = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        return (self._pre(x) - self._stat("shift", x)) / self._stat("scale", x)

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        z = y * self._stat("scale", y) + self._stat("shift", y)
        return torch.exp(z) if self.mode.startswith("log") else z
