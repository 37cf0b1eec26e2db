"""Point clouds as the PointWise Net sees them, and training batches read from disk.

:class:`PointNormaliser` maps (x mm, y mm, z layer units, E MeV) to the network's space:
x and y linearly from the geometry's window to [-1, 1], z from [0, n_layers] to [-1, 1],
E in MeV unchanged (the reference code's choice: no log, no scale); and back, exactly.
Conditions: E' = 2 E_inc / e_max - 1 and N' = 2 N / max_points - 1.

:class:`PointCloudShowers` serves training batches from a showerdata file without loading
it: each batch reads its showers' rows from the file, pads them to the longest shower
(or draws ``points_per_shower`` random points of each), and returns
``{"points" (B, P, 4), "mask" (B, P), "cond" (B, 2)}`` in the network's space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...geometry import PlanarGeometry
from ...io import PointCloudData

__all__ = ["PointCloudShowers", "PointNormaliser", "pad_clouds", "read_showers"]

_MEV_PER_GEV = 1000.0


@dataclass(frozen=True)
class PointNormaliser:
    """Linear maps between physical points and the network's [-1, 1] space."""

    half_width_x_mm: float
    half_width_y_mm: float
    n_layers: int
    e_max_mev: float
    max_points: int

    @classmethod
    def for_geometry(cls, geometry: PlanarGeometry, e_max_mev: float,
                     max_points: int) -> PointNormaliser:
        return cls(geometry.half_width_x_mm, geometry.half_width_y_mm, geometry.n_layers,
                   float(e_max_mev), int(max_points))

    def _scale(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # value = (network value) * half + centre for x, y, z; E unchanged
        half = torch.tensor([self.half_width_x_mm, self.half_width_y_mm,
                             0.5 * self.n_layers, 1.0], dtype=like.dtype, device=like.device)
        centre = torch.tensor([0.0, 0.0, 0.5 * self.n_layers, 0.0], dtype=like.dtype,
                              device=like.device)
        return half, centre

    def encode(self, points: Tensor) -> Tensor:
        """(..., 4) physical -> network space."""
        half, centre = self._scale(points)
        return (points - centre) / half

    def decode(self, x: Tensor) -> Tensor:
        """(..., 4) network space -> physical (the true inverse, docs/caloclouds.md, A20)."""
        half, centre = self._scale(x)
        return x * half + centre

    def condition(self, incident_energy_mev: Tensor, n_points: Tensor) -> Tensor:
        """(N, 2): E' and N' in [-1, 1] over the training ranges."""
        e = incident_energy_mev.to(torch.float32).reshape(-1)
        n = n_points.to(torch.float32).reshape(-1)
        return torch.stack([2 * e / self.e_max_mev - 1, 2 * n / self.max_points - 1], dim=1)


def pad_clouds(clouds: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Stack (n_i, 4) arrays into (B, max n_i, 4) zero-padded points and a (B, P) mask."""
    width = max((len(c) for c in clouds), default=0)
    points = torch.zeros(len(clouds), width, 4)
    mask = torch.zeros(len(clouds), width, dtype=torch.bool)
    for i, c in enumerate(clouds):
        points[i, :len(c)] = torch.from_numpy(np.asarray(c, dtype=np.float32))
        mask[i, :len(c)] = True
    return points, mask


class PointCloudShowers(Dataset):
    """Rows ``indices`` of a showerdata file as padded, normalised training batches.

    Args:
        path: the point-cloud file.
        indices: the file rows this set serves (e.g. the training split).
        normaliser: the map to the network's space.
        jitter_mm: x and y of every point move by an independent uniform offset in
            [-jitter_mm / 2, jitter_mm / 2) (de-quantisation of the clustering grid,
            docs/caloclouds.md, A21); 0 = off.
        points_per_shower: draw this many points of each shower without replacement
            (all of a smaller shower); 0 = every point. The N condition is always the
            shower's true point count.
        seed: the jitter and point draws come from ``numpy.random.default_rng([seed,
            *rows])``, so a resumed run sees the same batches.

    The file is opened on first use in each process (so the dataset can be handed to
    DataLoader workers) and never read whole.
    """

    def __init__(self, path: str | os.PathLike, indices: np.ndarray,
                 normaliser: PointNormaliser, *, jitter_mm: float = 0.0,
                 points_per_shower: int = 0, seed: int = 0):
        self.path = os.fspath(path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.normaliser = normaliser
        self.jitter_mm = float(jitter_mm)
        self.points_per_shower = int(points_per_shower)
        self.seed = int(seed)
        self._file = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _open(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(self, rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        f = self._open()
        order = np.argsort(rows)
        # h5py wants increasing indices; duplicates cannot occur within one batch
        sorted_rows = rows[order]
        width = int(np.asarray(f["shape"])[2])
        flat = f["showers"][sorted_rows]
        e_gev = np.asarray(f["energies"][sorted_rows], dtype=np.float64).reshape(-1)
        clouds: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        energies = np.empty(len(rows), dtype=np.float64)
        for j, k in enumerate(order):
            pts = np.asarray(flat[j], dtype=np.float32).reshape(-1, width)[:, :4].copy()
            pts[:, 3] *= _MEV_PER_GEV
            clouds[k] = pts
            energies[k] = e_gev[j] * _MEV_PER_GEV
        return clouds, energies

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, items: Sequence[int]) -> dict[str, Tensor]:
        rows = self.indices[np.asarray(items, dtype=np.int64)]
        clouds, energies = self._read(rows)
        # the draws depend on the seed and the batch's rows only: a resumed run, which
        # replays the same batch order, sees the same jitter and subsets
        rng = np.random.default_rng([self.seed, *rows.tolist()])
        counts = np.array([len(c) for c in clouds], dtype=np.int64)
        if self.points_per_shower > 0:
            clouds = [c[rng.choice(len(c), self.points_per_shower, replace=False)]
                      if len(c) > self.points_per_shower else c for c in clouds]
        if self.jitter_mm > 0:
            for c in clouds:
                c[:, :2] += (rng.random((len(c), 2), dtype=np.float32) - 0.5) * self.jitter_mm
        points, mask = pad_clouds(clouds)
        x = self.normaliser.encode(points) * mask.unsqueeze(-1)
        cond = self.normaliser.condition(torch.from_numpy(energies), torch.from_numpy(counts))
        return {"points": x, "mask": mask, "cond": cond}


def read_showers(path: str | os.PathLike, rows: np.ndarray,
                 geometry: PlanarGeometry | None = None) -> PointCloudData:
    """Showers ``rows`` (any order, no repeats) of a point-cloud file, in that order."""
    ds = PointCloudShowers(path, np.asarray(rows, dtype=np.int64),
                           PointNormaliser(1.0, 1.0, 1, 1.0, 1))
    try:
        clouds, energies = ds._read(ds.indices)
    finally:
        ds.close()
    counts = np.array([len(c) for c in clouds], dtype=np.int64)
    points = np.concatenate(clouds) if clouds else np.zeros((0, 4), np.float32)
    return PointCloudData(energies.astype(np.float32), points, counts, geometry).validate()
