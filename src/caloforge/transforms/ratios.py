"""Sequential layer-energy ratios u (CaloLatent / CaloScore v2, CaloDREAM Eq. 2).

For layer energies E_0..E_{L-1} (0-indexed) and incident energy E_inc::

    u_0 = (sum_l E_l) / (u0_scale * E_inc)
    u_i = E_{i-1} / sum_{k >= i-1} E_k        for i = 1 .. L-1

The last layer is the remainder and needs no ratio, so u has L entries like E. 0/0 gives
0. The inverse walks the layers: E_tot = u0_scale * u_0 * E_inc and
E_{i-1} = u_i * (energy not yet given to earlier layers). CaloLatent uses u0_scale = 2,
CaloDREAM u0_scale = 1/0.35.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["LayerEnergyRatios"]


@register_transform("layer_energy_ratios")
class LayerEnergyRatios(Transform):
    """Layer energies (N, L) and E_inc (N,) or (N, 1) <-> ratios u (N, L). Stateless.

    Args:
        u0_scale: divides E_tot / E_inc so u_0 lies in [0, 1] for the data.
        eps: added to the denominators as CaloDREAM's code does (1e-10); 0 gives exact
            ratios with 0/0 := 0.
        clip: clip u to its valid range ([0, inf) for u_0, [0, 1] otherwise) before the
            inverse, as generated values may leave it.

    Call as ``u = t(E_layers, incident_energy=E_inc)`` and
    ``E_layers = t.inverse(u, incident_energy=E_inc)``.
    """

    def __init__(self, u0_scale: float = 1.0, eps: float = 0.0, clip: bool = True) -> None:
        if u0_scale <= 0 or eps < 0:
            raise ConfigError(f"need u0_scale > 0 and eps >= 0, got {u0_scale}, {eps}")
        self.u0_scale, self.eps, self.clip = float(u0_scale), float(eps), bool(clip)

    def config(self) -> dict[str, Any]:
        return {"u0_scale": self.u0_scale, "eps": self.eps, "clip": self.clip}

    @staticmethod
    def _einc(e: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if e is None:
            raise TypeError("layer-energy ratios need incident_energy=")
        return e.to(like).reshape(-1)

    def _div(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        if self.eps > 0:
            return num / (den + self.eps)
        ok = den != 0
        return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)

    def _forward(
        self, x: torch.Tensor, incident_energy: torch.Tensor | None = None, **cond: Any
    ) -> torch.Tensor:
        if cond:
            raise TypeError(f"unexpected keywords {sorted(cond)}")
        e_inc = self._einc(incident_energy, x)
        total = x.sum(-1)
        u0 = self._div(total, self.u0_scale * e_inc)
        tails = torch.flip(torch.cumsum(torch.flip(x, [-1]), -1), [-1])  # sum_{k>=i} E_k
        rest = self._div(x[:, :-1], tails[:, :-1])
        return torch.cat([u0.unsqueeze(-1), rest], -1)

    def _inverse(
        self, y: torch.Tensor, incident_energy: torch.Tensor | None = None, **cond: Any
    ) -> torch.Tensor:
        if cond:
            raise TypeError(f"unexpected keywords {sorted(cond)}")
        e_inc = self._einc(incident_energy, y)
        u0, u = y[:, 0], y[:, 1:]
        if self.clip:
            u0, u = u0.clamp_min(0.0), u.clamp(0.0, 1.0)
        total = self.u0_scale * u0 * e_inc
        # left[:, i] = share of E_tot not yet assigned before layer i.
        left = torch.cat([torch.ones_like(u0).unsqueeze(-1), torch.cumprod(1.0 - u, -1)], -1)
        shares = torch.cat([u * left[:, :-1], left[:, -1:]], -1)
        return shares * total.unsqueeze(-1)
