"""Known answers of the subsampled, standardised W1 distance."""

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.evaluation.wasserstein import standardisation, w1_with_error


def test_shift_gives_delta_over_std():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, 200_000)
    # The same draws shifted: every subsample pair differs by exactly delta / std in the
    # limit, so only the shuffling noise of finite chunks remains.
    mean, std = w1_with_error(x, x + 1.0, rng=5)
    assert mean == pytest.approx(1.0 / x.std(), abs=0.02)
    assert std < 0.02


def test_independent_shifted_gaussians():
    rng = np.random.default_rng(2)
    ref = rng.normal(0.0, 4.0, 100_000)
    gen = rng.normal(2.0, 4.0, 100_000)
    mean, std = w1_with_error(ref, gen)
    assert mean == pytest.approx(0.5, abs=0.03)
    assert 0 < std < 0.05


def test_identical_samples_near_zero():
    rng = np.random.default_rng(3)
    x = rng.exponential(1.0, 50_000)
    mean, std = w1_with_error(x, x.copy())
    # Disjoint chunks of one distribution: O(1/sqrt(n)) noise, far below a real difference.
    assert mean < 0.03
    same_chunks, _ = w1_with_error(x, x.copy(), n_subsamples=1)
    assert same_chunks == pytest.approx(0.0, abs=1e-12)


def test_standardise_with_given_statistics():
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    gen = ref + 2.0
    mean, std = w1_with_error(ref, gen, n_subsamples=1, standardise_with=(0.0, 4.0))
    assert mean == pytest.approx(0.5)
    assert std == 0.0


def test_scale_invariance():
    rng = np.random.default_rng(4)
    ref, gen = rng.normal(0, 1, 20_000), rng.normal(0.3, 1.2, 20_000)
    a = w1_with_error(ref, gen, rng=1)
    b = w1_with_error(1000 * ref + 7, 1000 * gen + 7, rng=1)
    assert a == pytest.approx(b, rel=1e-9)


def test_deterministic_default_and_rng_changes_chunks():
    rng = np.random.default_rng(5)
    ref, gen = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert w1_with_error(ref, gen) == w1_with_error(ref, gen)
    assert w1_with_error(ref, gen, rng=1) != w1_with_error(ref, gen, rng=2)


def test_subsample_size_larger_than_disjoint_fit_draws_independently():
    rng = np.random.default_rng(6)
    ref, gen = rng.normal(0, 1, 1000), rng.normal(1, 1, 1000)
    mean, std = w1_with_error(ref, gen, n_subsamples=10, subsample_size=500)
    assert mean == pytest.approx(1.0, abs=0.2)
    assert std > 0


def test_constant_reference_does_not_divide_by_zero():
    assert standardisation(np.ones(10)) == (1.0, 1.0)
    mean, _ = w1_with_error(np.zeros(100), np.full(100, 2.0))
    assert mean == pytest.approx(2.0)


@pytest.mark.parametrize("ref,gen,kw", [
    (np.array([]), np.ones(10), {}),
    (np.array([1.0, np.nan]), np.ones(10), {}),
    (np.ones(5), np.ones(5), {"n_subsamples": 10}),
    (np.ones(50), np.ones(50), {"subsample_size": 60}),
    (np.ones(50), np.ones(50), {"n_subsamples": 0}),
    (np.ones(50), np.ones(50), {"standardise_with": (0.0, 0.0)}),
])
def test_bad_inputs_raise(ref, gen, kw):
    with pytest.raises(CaloforgeError):
        w1_with_error(ref, gen, **kw)
