"""Appending rows to a gzip-compressed HDF5 dataset with the compression outside h5py.

h5py holds Python's global lock while HDF5 compresses a chunk, so a write of a few
thousand gzip-compressed showers (about 0.3 ms each) stops every other Python thread,
generation included. :func:`write_rows` compresses whole HDF5 chunks with :mod:`zlib`
instead (which releases the lock), on ``threads`` threads, and stores them with
``write_direct_chunk``; only the raw chunk writes hold the lock. The chunks are the ones
HDF5's deflate filter writes (the same zlib stream at the same level), so any HDF5 reader
reads the file as before. Rows that do not fill a whole chunk go through h5py as usual.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

__all__ = ["GZIP_LEVEL", "write_rows"]

#: deflate level of gzip datasets: h5py's default, a good balance of size and time
GZIP_LEVEL = 4


def _is_plain_gzip(ds: h5py.Dataset) -> bool:
    """Deflate alone at :data:`GZIP_LEVEL`, row-chunked: chunks we can compress ourselves."""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    return (len(filters) == 1 and filters[0][0] == h5py.h5z.FILTER_DEFLATE
            and tuple(filters[0][2]) == (GZIP_LEVEL,)
            and ds.chunks is not None and ds.chunks[1:] == ds.shape[1:])


def write_rows(ds: h5py.Dataset, lo: int, rows: np.ndarray, *,
               pool: ThreadPoolExecutor | None = None) -> None:
    """Write ``rows`` into ``ds[lo:lo + len(rows)]`` (the dataset already has the room).

    On a gzip dataset (:func:`_is_plain_gzip`) the chunks lying wholly inside the rows are
    compressed with zlib, on ``pool`` when given, and written directly; everything else
    (a partial first or last chunk, other filters) is an ordinary h5py write.
    """
    rows = np.ascontiguousarray(rows, dtype=ds.dtype)
    hi = lo + len(rows)
    if not _is_plain_gzip(ds):
        ds[lo:hi] = rows
        return
    step = ds.chunks[0]
    first = -(-lo // step) * step           # first chunk boundary at or after lo
    last = max(first, (hi // step) * step)  # last boundary at or before hi
    if first > lo:
        ds[lo:min(first, hi)] = rows[:min(first, hi) - lo]
    if last > first:
        starts = range(first, last, step)
        blocks = [rows[s - lo:s - lo + step].tobytes() for s in starts]
        packed = (pool.map(zlib.compress, blocks, [GZIP_LEVEL] * len(blocks)) if pool
                  else (zlib.compress(b, GZIP_LEVEL) for b in blocks))
        tail = (0,) * (ds.ndim - 1)
        for s, data in zip(starts, packed):
            ds.id.write_direct_chunk((s,) + tail, data, 0)
    if hi > last:
        ds[last:hi] = rows[last - lo:]
