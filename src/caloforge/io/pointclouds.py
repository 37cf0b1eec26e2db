"""Point-cloud files in the layout of the ``showerdata`` package.

The layout (``showerdata`` >= 0.7): a variable-length float32 dataset ``showers`` holding
each shower's points flattened as (x, y, z, E), plus ``energies`` (N, 1), ``directions``
(N, 3), ``pdg`` (N,), ``shower_ids`` (N,), ``num_points`` (N,) and ``shape`` =
(N, max_points, 4). Following ``showerdata``'s conventions, energies in the file are in
GeV and z is in layer units; caloforge holds MeV in memory and converts at the boundary.
Files written here are read by ``showerdata.load`` and vice versa.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import h5py
import numpy as np

from ..geometry import PlanarGeometry
from .checks import HDF5_READ_ERRORS, corrupt_file_error, open_hdf5
from .errors import ShowerDataError
from .h5output import HDF5Output
from .showers import PointCloudData

__all__ = ["PointCloudWriter", "read_point_clouds", "iter_point_clouds", "write_point_clouds",
           "point_cloud_file_length", "is_point_cloud_file"]

_MEV_PER_GEV = 1000.0
_REQUIRED = ("showers", "energies", "num_points", "shape")


def _open_checked(path: str, option: str | None = None) -> h5py.File:
    f = open_hdf5(path, option=option)
    try:
        for key in _REQUIRED:
            if key not in f:
                raise ShowerDataError("dataset missing: not a point-cloud (showerdata) file",
                                      path=path, dataset=key, option=option)
        n = f["energies"].shape[0]
        if f["showers"].shape[0] != n or f["num_points"].shape[0] != n:
            raise ShowerDataError(
                f"energies, showers and num_points disagree on the number of showers "
                f"({n}, {f['showers'].shape[0]}, {f['num_points'].shape[0]})", path=path,
                option=option,
            )
    except ShowerDataError:
        f.close()
        raise
    except HDF5_READ_ERRORS as exc:
        f.close()
        raise corrupt_file_error(exc, path, option=option) from None
    return f


def is_point_cloud_file(path: str | os.PathLike, *, option: str | None = None) -> bool:
    """Whether an HDF5 file is in the ``showerdata`` point-cloud layout.

    The layout is recognised by what a CaloChallenge file never has: a ``num_points``
    dataset beside a one-dimensional (variable-length) ``showers`` dataset (CaloChallenge
    showers are 2-D, one row of voxels per shower). The other datasets (``energies``,
    ``shape``) are checked when the file is read, so a damaged point-cloud file is
    reported as a point-cloud file with a missing dataset, not as a bad voxel file.

    Args:
        path: the file.
        option: the command-line option the file came from, named in errors.

    Raises:
        ShowerDataError: the file is missing, not HDF5, or cannot be read (see
            :func:`~caloforge.io.open_hdf5`).
    """
    path = os.fspath(path)
    with open_hdf5(path, option=option) as f:
        try:
            showers, counts = f.get("showers"), f.get("num_points")
            return (isinstance(showers, h5py.Dataset) and isinstance(counts, h5py.Dataset)
                    and showers.ndim == 1)
        except HDF5_READ_ERRORS as exc:
            raise corrupt_file_error(exc, path, option=option) from None


def point_cloud_file_length(path: str | os.PathLike) -> int:
    with _open_checked(os.fspath(path)) as f:
        return int(f["energies"].shape[0])


def read_point_clouds(path: str | os.PathLike, start: int = 0, stop: int | None = None,
                      geometry: PlanarGeometry | None = None) -> PointCloudData:
    """Read showers ``start:stop`` of a point-cloud file (energies returned in MeV)."""
    path = os.fspath(path)
    with _open_checked(path) as f:
        try:
            return _read_open(f, path, start, stop, geometry)
        except HDF5_READ_ERRORS as exc:
            if isinstance(exc, ShowerDataError):
                raise
            raise corrupt_file_error(exc, path) from None


def _read_open(f: h5py.File, path: str, start: int, stop: int | None,
               geometry: PlanarGeometry | None) -> PointCloudData:
    n = f["energies"].shape[0]
    stop = n if stop is None else min(stop, n)
    width = int(np.asarray(f["shape"])[2])
    if width not in (4, 5):
        raise ShowerDataError(f"points have {width} features, expected 4 or 5", path=path,
                              dataset="shape")
    flat = f["showers"][start:stop]
    counts = np.asarray(f["num_points"][start:stop], dtype=np.int64)
    pts = [np.asarray(p, dtype=np.float32).reshape(-1, width)[:, :4] for p in flat]
    if any(len(p) != c for p, c in zip(pts, counts)):
        raise ShowerDataError("num_points disagrees with the stored points", path=path,
                              dataset="num_points")
    points = np.concatenate(pts) if pts else np.zeros((0, 4), np.float32)
    points[:, 3] *= _MEV_PER_GEV
    energies = np.asarray(f["energies"][start:stop], dtype=np.float32).reshape(-1) * _MEV_PER_GEV
    pdg = int(f["pdg"][start]) if "pdg" in f and stop > start else 22
    try:
        data = PointCloudData(energies, points, counts, geometry, pdg)
    except ShowerDataError as exc:
        raise ShowerDataError(exc.problem, path=path) from None
    try:
        return data.validate()
    except ShowerDataError as exc:
        raise ShowerDataError(exc.problem, path=path) from None


def iter_point_clouds(path, chunk_size: int = 10_000,
                      geometry: PlanarGeometry | None = None) -> Iterator[PointCloudData]:
    n = point_cloud_file_length(path)
    for lo in range(0, n, chunk_size):
        yield read_point_clouds(path, lo, min(lo + chunk_size, n), geometry)


class PointCloudWriter:
    """Stream point-cloud showers into a showerdata-layout file, atomically.

    ``n_showers`` must be known up front (the layout has fixed-length datasets); the
    file is renamed into place only when all of them were written.
    """

    def __init__(self, path: str | os.PathLike, n_showers: int, *, pdg: int = 22):
        import showerdata

        self.path = os.fspath(path)
        self.n_showers = int(n_showers)
        self.pdg = pdg
        self.n_written = 0
        self._max_points = 0
        self._closed = False
        self._out = HDF5Output(self.path, mode="a", prepare=lambda tmp: showerdata.create_empty_file(
            tmp, (self.n_showers, 0, 4), overwrite=True))

    def write(self, data: PointCloudData) -> None:
        if self._closed:
            raise ShowerDataError("write after the writer was closed", path=self.path)
        data.validate()
        lo, n = self.n_written, len(data)
        if lo + n > self.n_showers:
            raise ShowerDataError(
                f"writing {lo + n} showers into a file made for {self.n_showers}", path=self.path
            )
        # HDF5 crashes on a failed variable-length write, so a chunk that cannot fit is
        # refused before it is written (float32 points plus per-shower rows)
        self._out.ensure_space(2 * (data.points.nbytes + 64 * n))
        self._out.call(self._append, data)
        self._max_points = max(self._max_points, int(data.n_points.max(initial=0)))
        self.n_written += n

    def _append(self, data: PointCloudData) -> None:
        lo, n = self.n_written, len(data)
        pts = data.points.copy()
        pts[:, 3] /= _MEV_PER_GEV
        o = data.offsets
        flat = np.empty(n, dtype=object)
        for i in range(n):
            flat[i] = pts[o[i]:o[i + 1]].reshape(-1)
        f = self._out.file
        f["showers"][lo:lo + n] = flat
        f["energies"][lo:lo + n] = (data.incident_energies / _MEV_PER_GEV).reshape(-1, 1)
        dirs = np.zeros((n, 3), np.float32)
        dirs[:, 2] = 1.0
        f["directions"][lo:lo + n] = dirs
        f["pdg"][lo:lo + n] = data.pdg
        f["shower_ids"][lo:lo + n] = np.arange(lo, lo + n)
        f["num_points"][lo:lo + n] = data.n_points

    def _finish_shape(self) -> None:
        self._out.file["shape"][...] = (self.n_showers, self._max_points, 4)

    def close(self) -> None:
        if self._closed:
            return
        if self.n_written != self.n_showers:
            self.abort()
            raise ShowerDataError(
                f"only {self.n_written} of {self.n_showers} showers were written; file discarded",
                path=self.path,
            )
        self._out.call(self._finish_shape)
        self._closed = True
        self._out.commit()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.discard()

    def __enter__(self) -> PointCloudWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_point_clouds(path, data: PointCloudData) -> None:
    """Write a whole :class:`PointCloudData` (atomic)."""
    with PointCloudWriter(path, len(data), pdg=data.pdg) as w:
        w.write(data)
