"""On-disk cache of the features of a shower file, so a second evaluation is fast.

A cache entry is an ``.npz`` file named by a hash of the file's absolute path, size and
modification time and of everything that changes the features (threshold, number of
showers, feature version). A file that changes on disk therefore gets a new entry; stale
entries are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from .features import ShowerFeatures, compute_features

__all__ = ["FEATURE_VERSION", "cache_key", "cached_features"]

#: Bump when the feature definitions change, so old cache entries are ignored.
FEATURE_VERSION = 2


def cache_key(path: str | os.PathLike, *, threshold: float | None, max_showers: int | None) -> str:
    """Hex digest identifying the features of ``path`` computed with these options."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    desc = json.dumps({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "threshold": threshold, "max_showers": max_showers,
                       "version": FEATURE_VERSION}, sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()[:24]


def cached_features(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None,
                    threshold: float | None = None, max_showers: int | None = None,
                    geometry=None) -> tuple[ShowerFeatures, bool]:
    """Features of a CaloChallenge file, from the cache when present.

    Args:
        path: the shower file.
        cache_dir: directory of the cache; ``None`` disables caching.
        threshold, max_showers, geometry: as for :func:`compute_features`.

    Returns:
        (features, hit): ``hit`` is True when the features came from the cache.
    """
    if cache_dir is None:
        return compute_features(path, geometry=geometry, threshold=threshold,
                                max_showers=max_showers), False
    cache_dir = os.fspath(cache_dir)
    entry = os.path.join(cache_dir, f"features-{cache_key(path, threshold=threshold, max_showers=max_showers)}.npz")
    if os.path.exists(entry):
        try:
            with np.load(entry) as z:
                return ShowerFeatures.from_arrays(z), True
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry (e.g. interrupted by a crash): recompute and replace it
    feats = compute_features(path, geometry=geometry, threshold=threshold, max_showers=max_showers)
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **feats.to_arrays())
        os.replace(tmp, entry)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return feats, False
