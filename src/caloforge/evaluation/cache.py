"""On-disk cache of the features of a shower file, so a second evaluation is fast.

A cache entry is an ``.npz`` file named by a hash of the file's absolute path, size and
modification time and of everything that changes the features (threshold, number of
showers or the exact rows of a random subset, feature version). A file that changes on
disk therefore gets a new entry; stale entries are never read.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..io import ShowerFile, atomic_path, check_input_path
from .features import ShowerFeatures, compute_features

__all__ = ["FEATURE_VERSION", "cache_key", "cached_features"]

#: Bump when the feature definitions change, so old cache entries are ignored.
FEATURE_VERSION = 4


def cache_key(path: str | os.PathLike, *, threshold: float | None, max_showers: int | None,
              rows: np.ndarray | None = None) -> str:
    """Hex digest identifying the features of ``path`` computed with these options."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    rows_digest = None
    if rows is not None:
        rows_digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
    desc = json.dumps({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "threshold": threshold, "max_showers": max_showers, "rows": rows_digest,
                       "version": FEATURE_VERSION}, sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()[:24]


def cached_features(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None,
                    threshold: float | None = None, max_showers: int | None = None,
                    geometry=None, rows: np.ndarray | None = None,
                    option: str | None = None) -> tuple[ShowerFeatures, bool]:
    """Features of a CaloChallenge file, from the cache when present.

    Args:
        path: the shower file.
        cache_dir: directory of the cache; ``None`` disables caching.
        threshold, max_showers, geometry, rows: as for :func:`compute_features`.
        option: the command-line option the file came from (named in errors).

    Returns:
        (features, hit): ``hit`` is True when the features came from the cache.
    """
    def compute() -> ShowerFeatures:
        with ShowerFile(path, geometry, option=option) as f:
            return compute_features(f, threshold=threshold, max_showers=max_showers, rows=rows)

    if cache_dir is None:
        return compute(), False
    check_input_path(path, option=option)  # before os.stat of the cache key
    cache_dir = os.fspath(cache_dir)
    key = cache_key(path, threshold=threshold, max_showers=max_showers, rows=rows)
    entry = os.path.join(cache_dir, f"features-{key}.npz")
    if os.path.exists(entry):
        try:
            with np.load(entry) as z:
                return ShowerFeatures.from_arrays(z), True
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry (e.g. interrupted by a crash): recompute and replace it
    feats = compute()
    with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **feats.to_arrays())
    return feats, False
