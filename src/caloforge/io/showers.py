"""In-memory containers for voxelised showers and point clouds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import CylindricalGeometry, PlanarGeometry
from .errors import ShowerDataError

__all__ = ["ShowerData", "PointCloudData", "check_finite_nonnegative"]


def check_finite_nonnegative(
    values: np.ndarray, what: str, *, path: str | None = None, dataset: str | None = None,
    strictly_positive: bool = False, offset: int = 0, row_numbers: np.ndarray | None = None,
) -> None:
    """Raise :class:`ShowerDataError` for NaN/inf or negative (or non-positive) values.

    ``offset`` is added to reported row numbers (for chunked checks of large files);
    ``row_numbers`` instead maps each row of ``values`` to its row in the file (for reads
    of scattered rows).
    """
    values = np.asarray(values)

    def file_row(i: int) -> int:
        return int(row_numbers[i]) if row_numbers is not None else i + offset

    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.argwhere(~finite)[0][0])
        raise ShowerDataError(
            f"{what} contain NaN or infinite values (first at row {file_row(i)})",
            path=path, dataset=dataset,
        )
    bad = values <= 0 if strictly_positive else values < 0
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        kind = "non-positive" if strictly_positive else "negative"
        raise ShowerDataError(
            f"{what} contain {kind} values (first at row {file_row(i)}: "
            f"{values.reshape(len(values), -1)[i].min():.6g})",
            path=path, dataset=dataset,
        )


@dataclass
class ShowerData:
    """Voxelised showers on a cylindrical geometry.

    Attributes:
        incident_energies: incident energies in MeV, shape (N,).
        showers: voxel energies in MeV, shape (N, V) with V = geometry.n_voxels.
        geometry: the readout geometry.
        particle: incident particle name (``"electron"``, ``"photon"``, ``"pion"``).
    """

    incident_energies: np.ndarray
    showers: np.ndarray
    geometry: CylindricalGeometry
    particle: str | None = None

    def __post_init__(self) -> None:
        e = np.asarray(self.incident_energies)
        if e.ndim == 2 and e.shape[1] == 1:
            e = e[:, 0]
        if e.ndim != 1:
            raise ShowerDataError(
                f"incident energies must have shape (N,) or (N, 1), got {e.shape}"
            )
        s = np.asarray(self.showers)
        if s.ndim != 2:
            raise ShowerDataError(f"showers must have shape (N, V), got {s.shape}")
        if s.shape[1] != self.geometry.n_voxels:
            raise ShowerDataError(
                f"showers have {s.shape[1]} voxels but geometry {self.geometry.name!r} "
                f"has {self.geometry.n_voxels}"
            )
        if s.shape[0] != e.shape[0]:
            raise ShowerDataError(
                f"{e.shape[0]} incident energies but {s.shape[0]} showers"
            )
        self.incident_energies = e
        self.showers = s
        if self.particle is None:
            self.particle = self.geometry.particle

    def validate(self) -> ShowerData:
        """Check for NaN/inf and negative energies; returns self for chaining."""
        check_finite_nonnegative(self.incident_energies, "incident energies",
                                 dataset="incident_energies", strictly_positive=True)
        check_finite_nonnegative(self.showers, "shower voxel energies", dataset="showers")
        return self

    def __len__(self) -> int:
        return int(self.showers.shape[0])

    def __getitem__(self, index) -> ShowerData:
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        return ShowerData(self.incident_energies[index], self.showers[index], self.geometry,
                          self.particle)

    @classmethod
    def concatenate(cls, parts: list[ShowerData]) -> ShowerData:
        if not parts:
            raise ShowerDataError("nothing to concatenate")
        g = parts[0].geometry
        for p in parts[1:]:
            if not p.geometry.same_binning(g):
                raise ShowerDataError("cannot concatenate showers of different geometries")
        return cls(np.concatenate([p.incident_energies for p in parts]),
                   np.concatenate([p.showers for p in parts]), g, parts[0].particle)

    def __repr__(self) -> str:
        if len(self):
            lo, hi = self.incident_energies.min(), self.incident_energies.max()
            rng = f", E_inc={lo:.4g}..{hi:.4g} MeV"
        else:
            rng = ""
        return f"ShowerData(n={len(self)}, geometry={self.geometry.name!r}, particle={self.particle!r}{rng})"


@dataclass
class PointCloudData:
    """Point-cloud showers: a ragged list of energy spots per shower.

    Points of all showers are stored flat; ``offsets[i]:offsets[i+1]`` selects shower i.

    Attributes:
        incident_energies: MeV, shape (N,).
        points: (P, 4) columns x [mm], y [mm], z [layer units: the integer part is the
            active layer, as in the ``showerdata`` package], energy [MeV].
        n_points: points per shower, shape (N,).
        geometry: planar geometry the points live in (optional).
        pdg: PDG id of the incident particle.
    """

    incident_energies: np.ndarray
    points: np.ndarray
    n_points: np.ndarray
    geometry: PlanarGeometry | None = None
    pdg: int = 22

    def __post_init__(self) -> None:
        self.incident_energies = np.asarray(self.incident_energies, dtype=np.float32).reshape(-1)
        self.points = np.asarray(self.points, dtype=np.float32)
        self.n_points = np.asarray(self.n_points, dtype=np.int64).reshape(-1)
        if self.points.ndim != 2 or self.points.shape[1] != 4:
            raise ShowerDataError(f"points must have shape (P, 4), got {self.points.shape}")
        if len(self.n_points) != len(self.incident_energies):
            raise ShowerDataError(
                f"{len(self.incident_energies)} incident energies but point counts for "
                f"{len(self.n_points)} showers"
            )
        if (self.n_points < 0).any() or int(self.n_points.sum()) != len(self.points):
            raise ShowerDataError(
                f"point counts sum to {int(self.n_points.sum())} but there are "
                f"{len(self.points)} points"
            )

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_points)])

    def shower(self, i: int) -> np.ndarray:
        """Points of shower ``i``, shape (n_i, 4)."""
        o = self.offsets
        return self.points[o[i]:o[i + 1]]

    def shower_index(self) -> np.ndarray:
        """Shower number of every point, shape (P,)."""
        return np.repeat(np.arange(len(self)), self.n_points)

    def validate(self) -> PointCloudData:
        check_finite_nonnegative(self.incident_energies, "incident energies",
                                 strictly_positive=True)
        if not np.isfinite(self.points).all():
            raise ShowerDataError("points contain NaN or infinite values")
        if (self.points[:, 3] < 0).any():
            raise ShowerDataError("point energies contain negative values")
        return self

    def __len__(self) -> int:
        return len(self.incident_energies)

    def __getitem__(self, index) -> PointCloudData:
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        idx = np.arange(len(self))[index]
        o = self.offsets
        sel = np.concatenate([np.arange(o[i], o[i + 1]) for i in idx]) if len(idx) else np.zeros(0, int)
        return PointCloudData(self.incident_energies[idx], self.points[sel], self.n_points[idx],
                              self.geometry, self.pdg)

    def __repr__(self) -> str:
        return (f"PointCloudData(n={len(self)}, points={len(self.points)}, "
                f"geometry={getattr(self.geometry, 'name', None)!r})")
