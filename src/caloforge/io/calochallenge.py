"""CaloChallenge HDF5 files: ``incident_energies`` (N, 1) and ``showers`` (N, V), in MeV.

Reading streams in chunks (:func:`iter_showers`), so files larger than memory (dataset 3:
100k x 40500 float32 voxels, 16 GB) are never loaded whole. Writing goes to a temporary
file that is renamed into place when complete (:class:`ShowerWriter`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

from ..geometry import CylindricalGeometry, GeometryError, get_geometry
from ..geometry.presets import PRESET_NAMES
from .checks import HDF5_READ_ERRORS, check_numeric, corrupt_file_error, open_hdf5
from .deflate_rows import GZIP_LEVEL, write_rows
from .errors import ShowerDataError
from .h5output import HDF5Output
from .showers import ShowerData, check_finite_nonnegative

__all__ = [
    "COMPRESSIONS",
    "DS1_THRESHOLD_MEV",
    "DS23_SAMPLING_FRACTION",
    "DS23_THRESHOLD_MEV",
    "ShowerFile",
    "ShowerWriter",
    "geometry_for_voxels",
    "iter_showers",
    "read_showers",
    "write_showers",
]

#: Sampling fraction the CaloChallenge dataset 2/3 files divide the silicon energy by.
DS23_SAMPLING_FRACTION = 0.033
#: Readout threshold of datasets 2 and 3 on stored voxel energies, the official
#: definition: 0.5 keV in silicon / 0.033 = 0.0151515... MeV. The simulator cuts its
#: ds2/ds3 voxels at this value and the evaluation thresholds at the same constant.
DS23_THRESHOLD_MEV = 0.5e-3 / DS23_SAMPLING_FRACTION
#: Evaluation threshold of dataset 1 (MeV).
DS1_THRESHOLD_MEV = 1.0

#: ShowerWriter's compression choices (None: uncompressed)
COMPRESSIONS = ("gzip", "lzf", None)

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

    def __init__(self, path: str | os.PathLike, geometry=None, *, option: str | None = None):
        self.path = os.fspath(path)
        self.option = option
        self._file = open_hdf5(self.path, option=option)
        try:
            self._check_structure(_resolve_geometry(geometry))
        except HDF5_READ_ERRORS as exc:
            self._file.close()
            if isinstance(exc, ShowerDataError):
                raise
            raise corrupt_file_error(exc, self.path, option=option) from None
        except BaseException:
            self._file.close()
            raise

    def _error(self, problem: str, dataset: str | None = None) -> ShowerDataError:
        return ShowerDataError(problem, path=self.path, dataset=dataset, option=self.option)

    def _dataset(self, key: str) -> h5py.Dataset:
        if key not in self._file:
            present = ", ".join(sorted(self._file.keys())) or "none"
            raise self._error(f"dataset missing (datasets present: {present})", key)
        ds = self._file[key]
        if not isinstance(ds, h5py.Dataset):
            raise self._error("is a group, expected a dataset", key)
        check_numeric(ds, self.path, key, option=self.option)
        return ds

    def _check_structure(self, geometry: CylindricalGeometry | None) -> None:
        e = self._dataset(ENERGY_KEY)
        s = self._dataset(SHOWER_KEY)
        if not (e.ndim == 1 or (e.ndim == 2 and e.shape[1] == 1)):
            raise self._error(f"expected shape (N, 1), got {e.shape}", ENERGY_KEY)
        if s.ndim != 2:
            raise self._error(f"expected shape (N, V), got {s.shape}", SHOWER_KEY)
        if e.shape[0] != s.shape[0]:
            raise self._error(f"{e.shape[0]} incident energies but {s.shape[0]} showers",
                              SHOWER_KEY)
        stored = None
        if _GEOMETRY_ATTR in self._file.attrs:
            try:
                stored = CylindricalGeometry.from_dict(json.loads(self._file.attrs[_GEOMETRY_ATTR]))
            except (ValueError, KeyError, TypeError, GeometryError) as exc:
                raise self._error(f"corrupt geometry attribute ({exc})") from None
        if geometry is None:
            geometry = stored or geometry_for_voxels(s.shape[1])
            if geometry is None:
                raise self._error(
                    f"{s.shape[1]} voxels per shower match no known geometry "
                    f"({', '.join(f'{n}: {get_geometry(n).n_voxels}' for n in PRESET_NAMES)}); "
                    "pass the geometry (e.g. a binning XML file)", SHOWER_KEY)
        if s.shape[1] != geometry.n_voxels:
            raise self._error(
                f"showers have {s.shape[1]} voxels but geometry {geometry.name!r} has "
                f"{geometry.n_voxels}", SHOWER_KEY)
        self.geometry = geometry
        particle = self._file.attrs.get("particle", geometry.particle)
        self.particle = particle.decode() if isinstance(particle, bytes) else str(particle)
        self._energies = e
        self._showers = s

    def __len__(self) -> int:
        return int(self._showers.shape[0])

    @property
    def attrs(self) -> dict:
        try:
            return {k: (v.decode() if isinstance(v, bytes) else v)
                    for k, v in self._file.attrs.items()}
        except HDF5_READ_ERRORS as exc:
            raise corrupt_file_error(exc, self.path, option=self.option) from None

    def check_not_empty(self) -> ShowerFile:
        """Raise :class:`ShowerDataError` when the file holds no showers; returns self."""
        if len(self) == 0:
            raise self._error("the file holds no showers (0 rows)", SHOWER_KEY)
        return self

    def _load(self, ds: h5py.Dataset, key: str, index, dtype) -> np.ndarray:
        try:
            return np.asarray(ds[index], dtype=dtype)
        except HDF5_READ_ERRORS as exc:
            raise corrupt_file_error(exc, self.path, dataset=key, option=self.option) from None

    def read_energies(self) -> np.ndarray:
        """All incident energies (MeV), shape (N,), checked."""
        e = self._load(self._energies, ENERGY_KEY, slice(None), np.float64).reshape(-1)
        self._check_values(e, None, 0)
        return e

    def _check_values(self, e: np.ndarray, s: np.ndarray | None, offset: int,
                      row_numbers: np.ndarray | None = None) -> None:
        kw = {"path": self.path, "offset": offset, "row_numbers": row_numbers}
        try:
            check_finite_nonnegative(e, "incident energies", dataset=ENERGY_KEY,
                                     strictly_positive=True, **kw)
            if s is not None:
                check_finite_nonnegative(s, "voxel energies", dataset=SHOWER_KEY, **kw)
        except ShowerDataError as exc:
            raise exc.with_option(self.option) from None

    def read(self, start: int = 0, stop: int | None = None, *, dtype=np.float32) -> ShowerData:
        """Showers ``start:stop`` as :class:`ShowerData`, checked for NaN and negatives."""
        n = len(self)
        stop = n if stop is None else min(stop, n)
        if not 0 <= start <= stop:
            raise self._error(f"bad row range {start}:{stop} for {n} showers")
        e = self._load(self._energies, ENERGY_KEY, slice(start, stop), np.float64).reshape(-1)
        s = self._load(self._showers, SHOWER_KEY, slice(start, stop), dtype)
        self._check_values(e, s, start)
        return ShowerData(e, s, self.geometry, self.particle)

    def read_rows(self, rows, *, dtype=np.float32, block: int = 256) -> ShowerData:
        """The showers of the given row numbers, in increasing row order (checked).

        Rows are read in blocks of at most ``block``: a block whose rows lie close together
        is read as one slice and picked from, a scattered one with a point selection, so a
        random subset of a large file costs about as many chunk reads as rows.

        Args:
            rows: row numbers, any order; duplicates are read once.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        n = len(self)
        if len(rows) and (rows[0] < 0 or rows[-1] >= n):
            raise self._error(f"row numbers {rows[0]}..{rows[-1]} outside 0..{n - 1}")
        e_all = np.empty(len(rows), dtype=np.float64)
        s_all = np.empty((len(rows), self.geometry.n_voxels), dtype=dtype)
        for lo in range(0, len(rows), block):
            r = rows[lo:lo + block]
            a, b = int(r[0]), int(r[-1]) + 1
            if b - a <= 2 * len(r):
                e = self._load(self._energies, ENERGY_KEY, slice(a, b), np.float64).reshape(-1)[r - a]
                s = self._load(self._showers, SHOWER_KEY, slice(a, b), dtype)[r - a]
            else:
                e = self._load(self._energies, ENERGY_KEY, r, np.float64).reshape(-1)
                s = self._load(self._showers, SHOWER_KEY, r, dtype)
            self._check_values(e, s, 0, r)
            e_all[lo:lo + len(r)] = e
            s_all[lo:lo + len(r)] = s
        return ShowerData(e_all, s_all, self.geometry, self.particle)

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
    interrupted write (exception, SIGINT, SIGTERM, full disk) leaves no file behind and
    never clobbers an existing one. A failure of the machine (full disk, permissions) is
    one :class:`~caloforge.errors.OutputError`.

    ``compression``: ``"gzip"`` (the default; what the CaloChallenge files use and every
    HDF5 reader understands; its chunks are compressed with zlib on ``compress_threads``
    threads outside h5py's lock, see :mod:`caloforge.io.deflate_rows`), ``"lzf"``
    (faster, about twice the size; needs h5py's lzf filter to read) or ``None``/
    ``"none"`` (no compression; largest files, fastest writes). The stored values are the
    same whichever is chosen.

    Example::

        with ShowerWriter("out.h5", get_geometry("ds2")) as w:
            for chunk in chunks:
                w.write(chunk)
    """

    def __init__(self, path: str | os.PathLike, geometry: CylindricalGeometry, *,
                 particle: str | None = None, compression: str | None = "gzip",
                 attrs: dict | None = None, dtype=np.float32, compress_threads: int = 1):
        self.path = os.fspath(path)
        compression = None if compression in (None, "none") else compression
        if compression not in COMPRESSIONS:
            raise ShowerDataError(f"compression must be one of gzip, lzf, none; got "
                                  f"{compression!r}", path=self.path)
        if compress_threads < 1:
            raise ShowerDataError(f"compress_threads must be >= 1, got {compress_threads}",
                                  path=self.path)
        self.geometry = _resolve_geometry(geometry)
        self.particle = particle or self.geometry.particle
        self.n_written = 0
        self._closed = False
        self._packing = 4 if compression else 1
        self._pool = (ThreadPoolExecutor(compress_threads, thread_name_prefix="caloforge-zlib")
                      if compression == "gzip" and compress_threads > 1 else None)
        self._out = HDF5Output(self.path)
        try:
            self._out.call(self._create, compression, attrs, dtype)
        except BaseException:
            self._closed = True
            self._shutdown_pool()
            self._out.discard()
            raise

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _create(self, compression, attrs, dtype) -> None:
        f = self._out.file
        v = self.geometry.n_voxels
        # chunks of about 1 MiB: large enough for fast (de)compression, small enough
        # that reading a few showers does not inflate much more than it needs
        chunk_rows = max(1, min(1000, (1 << 20) // (4 * v)))
        opts = GZIP_LEVEL if compression == "gzip" else None
        self._e = f.create_dataset(ENERGY_KEY, shape=(0, 1), maxshape=(None, 1),
                                   dtype=np.float32, chunks=(max(chunk_rows, 1024), 1),
                                   compression=compression, compression_opts=opts)
        self._s = f.create_dataset(SHOWER_KEY, shape=(0, v), maxshape=(None, v),
                                   dtype=dtype, chunks=(chunk_rows, v),
                                   compression=compression, compression_opts=opts)
        f.attrs[_GEOMETRY_ATTR] = json.dumps(self.geometry.to_dict())
        f.attrs["particle"] = self.particle
        for k, val in (attrs or {}).items():
            f.attrs[k] = val

    def write(self, data: ShowerData) -> None:
        """Append a chunk; checks geometry and values before touching the file."""
        if self._closed:
            raise ShowerDataError("write after the writer was closed", path=self.path)
        if not data.geometry.same_binning(self.geometry):
            raise ShowerDataError(
                f"chunk has geometry {data.geometry.name!r}, file is {self.geometry.name!r}",
                path=self.path,
            )
        data.validate()
        # a rough bound of what the chunk takes on disk (sparse showers compress well over
        # 4x); should it be exceeded, the failed write still ends cleanly
        self._out.ensure_space((data.showers.nbytes + 4 * len(data)) // self._packing)
        self._out.call(self._append, data)
        self.n_written += len(data)

    def _append(self, data: ShowerData) -> None:
        n = len(data)
        lo = self.n_written
        self._e.resize(lo + n, axis=0)
        self._s.resize(lo + n, axis=0)
        self._e[lo:] = data.incident_energies.reshape(-1, 1).astype(np.float32)
        write_rows(self._s, lo, data.showers, pool=self._pool)

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._closed:
            return
        self._closed = True
        self._shutdown_pool()
        self._out.commit()

    def abort(self) -> None:
        """Discard everything written; the target path is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._shutdown_pool()
        self._out.discard()

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
