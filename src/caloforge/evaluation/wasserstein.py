"""Wasserstein-1 distance between 1-D samples, with an uncertainty from subsamples.

CaloClouds II reports W1 of standardised observables as the mean and standard deviation
of 10 scores, each computed on an independent pair of equal-size subsets of the reference
and the generated sample. :func:`w1_with_error` does exactly that for one observable.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from ..errors import CaloforgeError

__all__ = ["w1_with_error", "standardisation"]


class _SampleError(CaloforgeError, ValueError):
    pass


def _as_1d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise _SampleError(f"W1: the {what} sample is empty")
    if not np.isfinite(x).all():
        raise _SampleError(f"W1: the {what} sample contains NaN or infinite values")
    return x


def standardisation(x_ref: np.ndarray) -> tuple[float, float]:
    """(mean, std) used to standardise an observable; std 0 becomes 1.

    A constant reference observable (e.g. an empty energy ring) would otherwise divide by
    zero; with std 1 its W1 stays in the observable's own unit instead of becoming inf.
    """
    x = _as_1d(x_ref, "reference")
    mean, std = float(x.mean()), float(x.std())
    return mean, (std if std > 0 else 1.0)


def w1_with_error(
    x_ref: np.ndarray,
    x_gen: np.ndarray,
    *,
    n_subsamples: int = 10,
    subsample_size: int | None = None,
    standardise_with: tuple[float, float] | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, float]:
    """W1 between two 1-D samples after standardisation, as mean and std over subsamples.

    Both samples are standardised with the reference's mean and standard deviation (or
    with ``standardise_with = (mean, std)``, e.g. statistics of a larger reference set),
    so the score is in units of the reference's spread: a pure shift by ``delta`` scores
    ``delta / std``.

    Subsamples: both samples are shuffled, then ``n_subsamples`` pairs of disjoint chunks
    of ``subsample_size`` entries are compared (CaloClouds II: 10 x 50k). By default the
    chunk size is ``min(len(x_ref), len(x_gen)) // n_subsamples``, so the chunks cover the
    smaller sample once. When the requested chunks do not fit disjointly into a sample,
    each chunk is drawn from it without replacement independently of the others.

    Args:
        x_ref: reference sample, any shape (flattened), finite.
        x_gen: generated sample, any shape (flattened), finite.
        n_subsamples: number of scores averaged (>= 1).
        subsample_size: entries per chunk; ``None`` as described above.
        standardise_with: (mean, std) to standardise with instead of the reference's.
        rng: generator or seed of the shuffles; ``None`` means seed 0, so that a metric
            gives the same number on every call.

    Returns:
        (mean, std) of the ``n_subsamples`` W1 values (std with ddof 0; 0 for one subsample).
    """
    ref = _as_1d(x_ref, "reference")
    gen = _as_1d(x_gen, "generated")
    if n_subsamples < 1:
        raise _SampleError(f"W1: n_subsamples must be >= 1, got {n_subsamples}")
    if standardise_with is None:
        mean, std = standardisation(ref)
    else:
        mean, std = (float(v) for v in standardise_with)
        if not (np.isfinite(mean) and np.isfinite(std)) or std <= 0:
            raise _SampleError(f"W1: bad standardisation (mean={mean}, std={std})")
    ref = (ref - mean) / std
    gen = (gen - mean) / std

    if subsample_size is None:
        subsample_size = min(ref.size, gen.size) // n_subsamples
        if subsample_size < 1:
            raise _SampleError(
                f"W1: {min(ref.size, gen.size)} entries cannot make {n_subsamples} subsamples"
            )
    if subsample_size < 1:
        raise _SampleError(f"W1: subsample_size must be >= 1, got {subsample_size}")
    if subsample_size > min(ref.size, gen.size):
        raise _SampleError(
            f"W1: subsample_size {subsample_size} exceeds the sample sizes "
            f"({ref.size} reference, {gen.size} generated)"
        )
    rng = np.random.default_rng(0 if rng is None else rng)
    ref_chunks = _chunks(ref, n_subsamples, subsample_size, rng)
    gen_chunks = _chunks(gen, n_subsamples, subsample_size, rng)
    scores = np.array([wasserstein_distance(a, b) for a, b in zip(ref_chunks, gen_chunks)])
    return float(scores.mean()), float(scores.std())


def _chunks(x: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Shuffling first matters: generated files often come sorted (e.g. by energy), and
    # consecutive chunks of a sorted array are not samples of the same distribution.
    if n * size <= x.size:
        perm = rng.permutation(x.size)[: n * size]
        return list(x[perm].reshape(n, size))
    return [x[rng.choice(x.size, size, replace=False)] for _ in range(n)]
