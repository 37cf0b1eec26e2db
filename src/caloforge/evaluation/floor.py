"""The reference-vs-reference floor: how well the reference agrees with itself.

The reference is split into two independent halves by row parity (even rows: half A,
odd rows: half B). Parity rather than first/second half keeps both halves alike even when
a file is sorted (e.g. by incident energy), and lets a contiguous read of the first 2k
rows give k showers of each half. Every model is compared with half B using at most as
many showers as half A holds, so the floor row (A vs B) and every model row are computed
with the same statistics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HALF_A", "HALF_B", "split_halves"]


#: The halves as slices (even rows, odd rows): indexing with them makes views, not copies.
HALF_A, HALF_B = slice(0, None, 2), slice(1, None, 2)


def split_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two halves of ``n`` reference showers: (even rows, odd rows), the
    rows of :data:`HALF_A` and :data:`HALF_B`."""
    idx = np.arange(int(n))
    return idx[HALF_A], idx[HALF_B]
