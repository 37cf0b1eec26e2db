"""CaloChallenge HDF5 files: ``incident_energies`` (N, 1) and ``showers`` (N, V), in MeV.

Reading streams in chunks (:func:`iter_showers`), so files larger than memory (dataset 3:
100k x 40500 float32 voxels, 16 GB) are never loaded whole. Writing goes to a temporary
file that is renamed into place when complete (:class:`ShowerWriter`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import h5py
import numpy as np

from ..geometry import CylindricalGeometry, GeometryError, get_geometry
from ..geometry.presets import PRESET_NAMES
from .atomic import atomic_path
from .errors import ShowerDataError
from .showers import ShowerData, check_finite_nonnegative

__all__ = [
    "ShowerFile",
    "ShowerWriter",
    "geometry_for_voxels",
    "iter_showers",
    "read_showers",
    "write_showers",
]

ENERGY_KEY = "incident_energies"
SHOWER_KEY = "showers"
_GEOMETRY_ATTR = "caloforge_geometry"


def geometry_for_voxels(n_voxels: int) -> CylindricalGeometry | None:
    """The built-in geometry with ``n_voxels`` voxels, or None."""
    for name in PRESET_NAMES:
        g = get_geometry(name)
        if g.n_voxels == n_voxels:
            return g
    return None


def _resolve_geometry(geometry) -> CylindricalGeometry | None:
    if geometry is None or isinstance(geometry, CylindricalGeometry):
        return geometry
    if isinstance(geometry, str):
        return get_geometry(geometry)
    raise TypeError(f"geometry must be a CylindricalGeometry or a preset name, not {type(geometry)}")


class ShowerFile:
    """A CaloChallenge HDF5 file opened lazily for reading, with its checks done up front.

    Structural checks (file is HDF5, both datasets exist, shapes agree with each other and
    with the geometry) run on open; value checks (NaN/inf, negative energies) run on every
    chunk read, so they cost no extra pass over a large file.

    Args:
        path: file to read.
        geometry: expected geometry (object or preset name). ``None`` takes the geometry
            stored by caloforge in the file, else the built-in geometry with as many voxels.
    """

    def __init__(self, path: str | os.PathLike, geometry=None):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise ShowerDataError("file does not exist", path=self.path)
        if not h5py.is_hdf5(self.path):
            raise ShowerDataError("not an HDF5 file", path=self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise ShowerDataError(f"cannot open HDF5 file ({exc})", path=self.path) from None
        try:
            self._check_structure(_resolve_geometry(geometry))
        except BaseException:
            self._file.close()
            raise

    def _dataset(self, key: str) -> h5py.Dataset:
        if key not in self._file:
            present = ", ".join(sorted(self._file.keys())) or "none"
            raise ShowerDataError(
                f"dataset missing (datasets present: {present})", path=self.path, dataset=key
            )
        ds = self._file[key]
        if not isinstance(ds, h5py.Dataset):
            raise ShowerDataError("is a group, expected a dataset", path=self.path, dataset=key)
        return ds

    def _check_structure(self, geometry: CylindricalGeometry | None) -> None:
        e = self._dataset(ENERGY_KEY)
        s = self._dataset(SHOWER_KEY)
        if not (e.ndim == 1 or (e.ndim == 2 and e.shape[1] == 1)):
            raise ShowerDataError(f"expected shape (N, 1), got {e.shape}", path=self.path,
                                  dataset=ENERGY_KEY)
        if s.ndim != 2:
            raise ShowerDataError(f"expected shape (N, V), got {s.shape}", path=self.path,
                                  dataset=SHOWER_KEY)
        if e.shape[0] != s.shape[0]:
            raise ShowerDataError(
                f"{e.shape[0]} incident energies but {s.shape[0]} showers", path=self.path,
                dataset=SHOWER_KEY,
            )
        stored = None
        if _GEOMETRY_ATTR in self._file.attrs:
            try:
                stored = CylindricalGeometry.from_dict(json.loads(self._file.attrs[_GEOMETRY_ATTR]))
            except (ValueError, KeyError, GeometryError) as exc:
                raise ShowerDataError(f"corrupt geometry attribute ({exc})", path=self.path) from None
        if geometry is None:
            geometry = stored or geometry_for_voxels(s.shape[1])
            if geometry is None:
                raise ShowerDataError(
                    f"{s.shape[1]} voxels per shower match no known geometry "
                    f"({', '.join(f'{n}: {get_geometry(n).n_voxels}' for n in PRESET_NAMES)}); "
                    "pass the geometry (e.g. a binning XML file)",
                    path=self.path, dataset=SHOWER_KEY,
                )
        if s.shape[1] != geometry.n_voxels:
            raise ShowerDataError(
                f"showers have {s.shape[1]} voxels but geometry {geometry.name!r} has "
                f"{geometry.n_voxels}", path=self.path, dataset=SHOWER_KEY,
            )
        self.geometry = geometry
        self.particle = str(self._file.attrs.get("particle", geometry.particle))
        self._energies = e
        self._showers = s

    def __len__(self) -> int:
        return int(self._showers.shape[0])

    @property
    def attrs(self) -> dict:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._file.attrs.items()}

    def read_energies(self) -> np.ndarray:
        """All incident energies (MeV), shape (N,), checked."""
        e = np.asarray(self._energies[...], dtype=np.float64).reshape(-1)
        check_finite_nonnegative(e, "incident energies", path=self.path, dataset=ENERGY_KEY,
                                 strictly_positive=True)
        return e

    def read(self, start: int = 0, stop: int | None = None, *, dtype=np.float32) -> ShowerData:
        """Showers ``start:stop`` as :class:`ShowerData`, checked for NaN and negatives."""
        n = len(self)
        stop = n if stop is None else min(stop, n)
        if not 0 <= start <= stop:
            raise ShowerDataError(f"bad row range {start}:{stop} for {n} showers", path=self.path)
        e = np.asarray(self._energies[start:stop], dtype=np.float64).reshape(-1)
        s = np.asarray(self._showers[start:stop], dtype=dtype)
        check_finite_nonnegative(e, "incident energies", path=self.path, dataset=ENERGY_KEY,
                                 strictly_positive=True, offset=start)
        check_finite_nonnegative(s, "voxel energies", path=self.path, dataset=SHOWER_KEY,
                                 offset=start)
        return ShowerData(e, s, self.geometry, self.particle)

    def iter_chunks(self, chunk_size: int = 10_000, start: int = 0,
                    stop: int | None = None) -> Iterator[ShowerData]:
        """Yield consecutive chunks of at most ``chunk_size`` showers."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, chunk_size):
            yield self.read(lo, min(lo + chunk_size, stop))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShowerFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShowerFile({self.path!r}, n={len(self)}, geometry={self.geometry.name!r})"


def read_showers(path, geometry=None, start: int = 0, stop: int | None = None) -> ShowerData:
    """Read showers ``start:stop`` of a CaloChallenge file into memory (checked)."""
    with ShowerFile(path, geometry) as f:
        return f.read(start, stop)


def iter_showers(path, geometry=None, chunk_size: int = 10_000) -> Iterator[ShowerData]:
    """Stream a CaloChallenge file in chunks of ``chunk_size`` showers."""
    with ShowerFile(path, geometry) as f:
        yield from f.iter_chunks(chunk_size)


class ShowerWriter:
    """Write showers chunk by chunk into a CaloChallenge file, atomically.

    The file appears under its final name only when the writer closes without error; an
    interrupted write leaves no file behind (and never clobbers an existing one).

    Example::

        with ShowerWriter("out.h5", get_geometry("ds2")) as w:
            for chunk in chunks:
                w.write(chunk)
    """

    def __init__(self, path: str | os.PathLike, geometry: CylindricalGeometry, *,
                 particle: str | None = None, compression: str | None = "gzip",
                 attrs: dict | None = None, dtype=np.float32):
        self.path = os.fspath(path)
        self.geometry = _resolve_geometry(geometry)
        self.particle = particle or self.geometry.particle
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._tmp = self._ctx.__enter__()
        self._file = h5py.File(self._tmp, "w")
        v = self.geometry.n_voxels
        chunk_rows = max(1, min(1000, (1 << 20) // (4 * v)))
        self._e = self._file.create_dataset(ENERGY_KEY, shape=(0, 1), maxshape=(None, 1),
                                            dtype=np.float32, chunks=(max(chunk_rows, 1024), 1),
                                            compression=compression)
        self._s = self._file.create_dataset(SHOWER_KEY, shape=(0, v), maxshape=(None, v),
                                            dtype=dtype, chunks=(chunk_rows, v),
                                            compression=compression)
        self._file.attrs[_GEOMETRY_ATTR] = json.dumps(self.geometry.to_dict())
        self._file.attrs["particle"] = self.particle
        for k, val in (attrs or {}).items():
            self._file.attrs[k] = val
        self.n_written = 0
        self._closed = False

    def write(self, data: ShowerData) -> None:
        """Append a chunk; checks geometry and values before touching the file."""
        if not data.geometry.same_binning(self.geometry):
            raise ShowerDataError(
                f"chunk has geometry {data.geometry.name!r}, file is {self.geometry.name!r}",
                path=self.path,
            )
        data.validate()
        n = len(data)
        lo = self.n_written
        self._e.resize(lo + n, axis=0)
        self._s.resize(lo + n, axis=0)
        self._e[lo:] = data.incident_energies.reshape(-1, 1).astype(np.float32)
        self._s[lo:] = data.showers
        self.n_written += n

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard everything written; the target path is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_showers(path, data: ShowerData, *, compression: str | None = "gzip",
                  attrs: dict | None = None) -> None:
    """Write a whole :class:`ShowerData` to a CaloChallenge file (atomic)."""
    with ShowerWriter(path, data.geometry, particle=data.particle, compression=compression,
                      attrs=attrs) as w:
        w.write(data)
