"""Planar sampling-calorimeter grid for point-cloud showers (ILD-like Si-W ECAL).

Coordinates: x and y transverse (mm, shower axis at x = y = 0), z along the shower axis.
Active layer ``i`` is a silicon plane of thickness ``si_mm`` behind an absorber plate of
thickness ``absorber_mm[i]``; cells are ``cell_mm`` squares on a window of
``n_cells_x * n_cells_y`` cells centred on the axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .cylindrical import GeometryError

__all__ = ["PlanarGeometry", "ild_ecal"]


@dataclass(frozen=True, eq=False)
class PlanarGeometry:
    """Layers of square cells on a transverse grid.

    Args:
        name: identifier.
        absorber_mm: absorber thickness in front of each active layer (mm).
        si_mm: active (silicon) thickness (mm).
        cell_mm: cell pitch (mm).
        n_cells_x, n_cells_y: window size in cells, centred on the shower axis.
    """

    name: str
    absorber_mm: tuple[float, ...]
    si_mm: float = 0.5
    cell_mm: float = 5.0
    n_cells_x: int = 30
    n_cells_y: int = 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "absorber_mm", tuple(float(a) for a in self.absorber_mm))
        if not self.absorber_mm or min(self.absorber_mm) < 0:
            raise GeometryError(f"planar geometry {self.name!r}: bad absorber thicknesses")
        if self.si_mm <= 0 or self.cell_mm <= 0 or self.n_cells_x < 1 or self.n_cells_y < 1:
            raise GeometryError(f"planar geometry {self.name!r}: sizes must be positive")

    @property
    def n_layers(self) -> int:
        return len(self.absorber_mm)

    @property
    def n_cells(self) -> int:
        """Cells in the whole window, all layers."""
        return self.n_layers * self.n_cells_x * self.n_cells_y

    @cached_property
    def layer_front_mm(self) -> np.ndarray:
        """Depth of the front face of each active layer (mm), shape (n_layers,)."""
        pitch = np.asarray(self.absorber_mm) + self.si_mm
        return np.cumsum(pitch) - self.si_mm

    @cached_property
    def layer_centre_mm(self) -> np.ndarray:
        """Depth of the middle of each active layer (mm), shape (n_layers,)."""
        return self.layer_front_mm + 0.5 * self.si_mm

    @property
    def half_width_x_mm(self) -> float:
        return 0.5 * self.n_cells_x * self.cell_mm

    @property
    def half_width_y_mm(self) -> float:
        return 0.5 * self.n_cells_y * self.cell_mm

    @cached_property
    def x_edges(self) -> np.ndarray:
        return np.linspace(-self.half_width_x_mm, self.half_width_x_mm, self.n_cells_x + 1)

    @cached_property
    def y_edges(self) -> np.ndarray:
        return np.linspace(-self.half_width_y_mm, self.half_width_y_mm, self.n_cells_y + 1)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell indices (ix, iy) of transverse positions and a mask of those inside the window."""
        ix = np.floor((np.asarray(x) + self.half_width_x_mm) / self.cell_mm).astype(np.int64)
        iy = np.floor((np.asarray(y) + self.half_width_y_mm) / self.cell_mm).astype(np.int64)
        inside = (ix >= 0) & (ix < self.n_cells_x) & (iy >= 0) & (iy < self.n_cells_y)
        return ix, iy, inside

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "planar",
            "name": self.name,
            "absorber_mm": list(self.absorber_mm),
            "si_mm": self.si_mm,
            "cell_mm": self.cell_mm,
            "n_cells_x": self.n_cells_x,
            "n_cells_y": self.n_cells_y,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanarGeometry:
        d = dict(d)
        if d.pop("type", "planar") != "planar":
            raise GeometryError("not a planar geometry description")
        allowed = {"name", "absorber_mm", "si_mm", "cell_mm", "n_cells_x", "n_cells_y"}
        unknown = set(d) - allowed
        if unknown:
            raise GeometryError(f"unknown planar geometry keys: {sorted(unknown)}")
        return cls(**d)

    def same_binning(self, other: object) -> bool:
        """Same layers and cells (the name may differ)."""
        if not isinstance(other, PlanarGeometry):
            return False
        a, b = self.to_dict(), other.to_dict()
        a.pop("name")
        b.pop("name")
        return a == b

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlanarGeometry):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.absorber_mm, self.si_mm, self.cell_mm))

    def __repr__(self) -> str:
        return (
            f"PlanarGeometry(name={self.name!r}, layers={self.n_layers}, "
            f"cells={self.n_cells_x}x{self.n_cells_y} of {self.cell_mm} mm)"
        )


def ild_ecal(n_cells: int = 30) -> PlanarGeometry:
    """ILD-like Si-W ECAL of CaloClouds II: 30 active layers of 0.5 mm Si, behind 2.1 mm W
    (first 20) and 4.2 mm W (last 10), 5 x 5 mm cells, an ``n_cells`` x ``n_cells`` window."""
    return PlanarGeometry(
        "ild-ecal",
        absorber_mm=(2.1,) * 20 + (4.2,) * 10,
        si_mm=0.5,
        cell_mm=5.0,
        n_cells_x=n_cells,
        n_cells_y=n_cells,
    )
