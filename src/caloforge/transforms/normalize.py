"""Per-shower normalisation by R: voxel energies -> energy fractions and R (Calo-VQ Eq. 5/6).

* ``mode="global"``: R = sum of all voxels, shape (N, 1); fractions sum to 1 per shower.
* ``mode="layer"``: R_l = sum of the voxels of layer l, shape (N, n_active_layers) (layers
  without voxels, as in the irregular ds1 geometries, have no R); fractions sum to 1 within
  each non-empty layer.

An empty layer (R_l = 0) gives fractions 0 there, and the inverse ``fractions * R`` gives
zeros again (docs/calovq.md, A15); no NaN is produced, not even in gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["ShowerNormalization", "layer_energies"]


def _layer_index(layer_sizes: Sequence[int], device: torch.device) -> torch.Tensor:
    """Active-layer index of every voxel, shape (V,)."""
    active = [s for s in layer_sizes if s > 0]
    return torch.repeat_interleave(
        torch.arange(len(active), device=device), torch.tensor(active, device=device)
    )


def layer_energies(showers: torch.Tensor, layer_sizes: Sequence[int]) -> torch.Tensor:
    """Energy per non-empty layer, (N, V) -> (N, n_active_layers).

    ``layer_sizes`` are voxels per layer (``geometry.layer_sizes``); layers of size 0 are
    skipped.
    """
    idx = _layer_index(layer_sizes, showers.device)
    n_active = sum(1 for s in layer_sizes if s > 0)
    out = showers.new_zeros(showers.shape[:-1] + (n_active,))
    return out.index_add(-1, idx, showers)


@register_transform("shower_normalization")
class ShowerNormalization(Transform):
    """Split showers into energy fractions and the normalisation R.

    Args:
        mode: ``"global"`` or ``"layer"``.
        layer_sizes: voxels per layer (zeros allowed); needed for ``"layer"`` and used to
            check the voxel count. Use :meth:`from_geometry`.

    ``forward(showers (N, V)) -> (fractions (N, V), R (N, 1) or (N, n_active))``;
    ``inverse(fractions, R) -> showers (N, V)``.
    """

    def __init__(self, mode: str = "global", layer_sizes: Sequence[int] | None = None) -> None:
        if mode not in ("global", "layer"):
            raise ConfigError(f"normalisation mode must be 'global' or 'layer', got {mode!r}")
        if mode == "layer" and layer_sizes is None:
            raise ConfigError("layer-wise normalisation needs the layer sizes of the geometry")
        self.mode = mode
        self.layer_sizes = None if layer_sizes is None else [int(s) for s in layer_sizes]

    @classmethod
    def from_geometry(cls, geometry: Any, mode: str = "global") -> ShowerNormalization:
        """Build from a geometry with ``layer_sizes`` (e.g. CylindricalGeometry)."""
        return cls(mode, [int(s) for s in np.asarray(geometry.layer_sizes)])

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "layer_sizes": self.layer_sizes}

    @property
    def n_r(self) -> int:
        """Number of R values per shower."""
        if self.mode == "global":
            return 1
        return sum(1 for s in self.layer_sizes if s > 0)

    def _check(self, x: torch.Tensor) -> None:
        if self.layer_sizes is not None and x.shape[-1] != sum(self.layer_sizes):
            raise ValueError(
                f"showers have {x.shape[-1]} voxels, the normalisation expects {sum(self.layer_sizes)}"
            )

    def _expand(self, r: torch.Tensor) -> torch.Tensor:
        """R per voxel: (N, n_r) -> (N, V) (or broadcastable (N, 1) when global)."""
        if self.mode == "global":
            return r
        return r.index_select(-1, _layer_index(self.layer_sizes, r.device))

    def scale(self, showers: torch.Tensor) -> torch.Tensor:
        """R alone: (N, V) -> (N, 1) or (N, n_active_layers)."""
        if self.mode == "global":
            return showers.sum(-1, keepdim=True)
        return layer_energies(showers, self.layer_sizes)

    def group_max(self, x: torch.Tensor) -> torch.Tensor:
        """Largest value of each voxel's group (the shower, or its layer): (N, V) -> (N, V)
        (broadcastable (N, 1) when global)."""
        if self.mode == "global":
            return x.amax(dim=-1, keepdim=True)
        idx = _layer_index(self.layer_sizes, x.device).expand_as(x)
        m = x.new_full((x.shape[0], self.n_r), float("-inf"))
        return self._expand(m.scatter_reduce(-1, idx, x, "amax", include_self=True))

    def _forward(self, x: torch.Tensor, **cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        r = self.scale(x)
        rv = self._expand(r)
        # Safe denominator, then mask: division by 0 would put NaN into gradients.
        frac = torch.where(rv > 0, x / torch.where(rv > 0, rv, torch.ones_like(rv)), 0.0)
        return frac, r

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        raise TypeError("use inverse(fractions, R)")

    def inverse(self, fractions: Any, r: Any = None, **cond: Any) -> Any:  # type: ignore[override]
        """Showers (N, V) = fractions (N, V) * R expanded to the voxels."""
        if r is None:
            raise TypeError("ShowerNormalization.inverse needs the fractions and R")
        was_np = isinstance(fractions, np.ndarray)
        f = torch.as_tensor(fractions)
        rt = torch.as_tensor(r, dtype=f.dtype, device=f.device)
        self._check(f)
        out = f * self._expand(rt)
        return out.numpy() if was_np else out
