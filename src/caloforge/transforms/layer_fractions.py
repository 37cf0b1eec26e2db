"""CaloDREAM's voxel representation: per-layer energy fractions and layer energies (§2).

Forward: each voxel is divided by the energy of its layer,
x_v = E_v / (E_layer + eps), so the voxels of a layer sum to 1 (an all-zero layer gives
all-zero fractions). The layer energies are returned beside the fractions; CaloDREAM
models them separately through the ratios u (:class:`LayerEnergyRatios`).

Inverse (the postprocessing of generated fractions, CaloDREAM §2 and Tab. 4):

1. normalised cut: fractions <= ``cut`` are set to 0 (Tab. 4 uses 1e-6 for the VAE,
   whose sigmoid never outputs an exact 0); this also removes negative values;
2. each layer is renormalised to sum 1 — a layer left all zero stays zero, never NaN;
3. each layer is multiplied by its target energy.

So every layer that keeps at least one voxel above the cut carries exactly its target
energy. A layer whose voxels all fall below the cut comes back empty, as in the paper's
postprocessing: there is no voxel to put its energy into.

``eps`` (CaloDREAM uses 1e-10, in MeV) only softens the forward division; the inverse's
renormalisation removes its bias, so the round trip is exact either way. ``eps = 0``
divides exactly and maps empty layers to 0 by masking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import Transform, register_transform
from .normalize import _layer_index
from .normalize import layer_energies as _sum_per_layer

__all__ = ["LayerFractions"]


def _safe_div(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """num / (den + eps); with eps = 0, 0 where den == 0 (no NaN, not even in gradients)."""
    if eps > 0:
        return num / (den + eps)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)


@register_transform("layer_fractions")
class LayerFractions(Transform):
    """Showers (N, V) <-> (fractions (N, V), layer energies (N, n_active_layers)). Stateless.

    Args:
        layer_sizes: voxels per layer in the flat order (``geometry.layer_sizes``); layers
            of size 0 have no energy entry, as in :class:`ShowerNormalization`.
        eps: added to the layer energy in the forward division (CaloDREAM: 1e-10).
        cut: default normalised cut of :meth:`inverse` (0 = only non-positive values go;
            CaloDREAM's VAE path: 1e-6).
    """

    def __init__(self, layer_sizes: Sequence[int], eps: float = 1e-10, cut: float = 0.0) -> None:
        sizes = [int(s) for s in layer_sizes]
        if not sizes or any(s < 0 for s in sizes) or sum(sizes) == 0:
            raise ConfigError(f"layer_sizes must be counts >= 0, not all 0; got {sizes}")
        if not eps >= 0 or not cut >= 0:
            raise ConfigError(f"need eps >= 0 and cut >= 0, got eps={eps}, cut={cut}")
        self.layer_sizes, self.eps, self.cut = sizes, float(eps), float(cut)

    @classmethod
    def from_geometry(cls, geometry: Any, eps: float = 1e-10, cut: float = 0.0) -> LayerFractions:
        """Build from a geometry with ``layer_sizes`` (e.g. CylindricalGeometry)."""
        return cls([int(s) for s in np.asarray(geometry.layer_sizes)], eps, cut)

    def config(self) -> dict[str, Any]:
        return {"layer_sizes": self.layer_sizes, "eps": self.eps, "cut": self.cut}

    @property
    def n_layers(self) -> int:
        """Layer energies per shower (layers with voxels)."""
        return sum(1 for s in self.layer_sizes if s > 0)

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != sum(self.layer_sizes):
            raise ValueError(
                f"showers have {x.shape[-1]} voxels, the geometry has {sum(self.layer_sizes)}"
            )

    def _per_voxel(self, e: torch.Tensor) -> torch.Tensor:
        """(N, n_layers) -> (N, V): each voxel gets its layer's value."""
        return e.index_select(-1, _layer_index(self.layer_sizes, e.device))

    def _forward(self, x: torch.Tensor, **cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        e = _sum_per_layer(x, self.layer_sizes)
        return _safe_div(x, self._per_voxel(e), self.eps), e

    def _inverse(self, y: torch.Tensor, **cond: Any) -> Any:
        raise TypeError("use inverse(fractions, layer_energies)")

    def renormalise(self, fractions: torch.Tensor, cut: float | None = None) -> torch.Tensor:
        """Steps 1-2 of the inverse: cut, then each layer sums to 1 or is all zero. (N, V)."""
        cut = self.cut if cut is None else float(cut)
        if not cut >= 0:
            raise ConfigError(f"cut must be >= 0, got {cut}")
        self._check(fractions)
        f = torch.where(fractions > cut, fractions, torch.zeros_like(fractions))
        sums = self._per_voxel(_sum_per_layer(f, self.layer_sizes))
        return _safe_div(f, sums, 0.0)

    def inverse(  # type: ignore[override]
        self, fractions: Any, layer_energies: Any = None, cut: float | None = None
    ) -> Any:
        """Showers (N, V) from fractions (N, V) and layer energies (N, n_layers).

        ``cut`` overrides the constructor's normalised cut for this call.
        """
        if layer_energies is None:
            raise TypeError("LayerFractions.inverse needs the fractions and the layer energies")
        was_np = isinstance(fractions, np.ndarray)
        f = torch.as_tensor(fractions)
        e = torch.as_tensor(layer_energies, dtype=f.dtype, device=f.device)
        if e.shape[-1] != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layer energies, got {e.shape[-1]}")
        out = self.renormalise(f, cut) * self._per_voxel(e)
        return out.numpy() if was_np else out
