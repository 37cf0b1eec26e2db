"""Known-answer tests of the metrics: separation power, FPD, KPD, PRDC, binnings."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.evaluation import (
    InsufficientDataError,
    feature_bins,
    fpd,
    frechet_distance,
    kpd,
    log_voxels,
    mmd2_unbiased_poly,
    prdc,
    scale_by_reference,
    separation_power,
    separation_power_samples,
    split_halves,
)
from caloforge.geometry import get_geometry


# ----------------------------------------------------------- separation power
def test_separation_power_known_answers():
    assert separation_power([1, 2, 3, 0], [2, 4, 6, 0]) == 0.0  # same shape, other area
    assert separation_power([5, 5, 0, 0], [0, 0, 1, 3]) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): 1/2 [ (1/2)^2 / (3/2) + (1/2)^2 / (1/2) ] = 1/3
    assert separation_power([4, 0], [1, 1]) == pytest.approx(1 / 3)
    assert np.isnan(separation_power([0, 0], [1, 1]))
    with pytest.raises(ValueError):
        separation_power([1, 2], [1, 2, 3])


def test_separation_power_samples_disjoint_and_identical():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.6, 0.9, 1000)
    bins = np.linspace(0.5, 1.5, 101)
    assert separation_power_samples(x, x.copy(), bins) == 0.0
    assert separation_power_samples(x, x + 0.5, bins) == pytest.approx(1.0)
    # a sample entirely outside the binning (e.g. an emptied layer) is disjoint, not ignored
    assert separation_power_samples(x, np.zeros_like(x), bins) == pytest.approx(1.0)
    assert np.isnan(separation_power_samples(x, np.zeros_like(x), bins, flow=False))


def test_challenge_binnings():
    g2, g1 = get_geometry("ds2"), get_geometry("ds1-pions")
    b = feature_bins("response", g2)
    assert (b[0], b[-1], len(b)) == (0.5, 1.5, 101)
    assert (feature_bins("ec_eta", g2)[[0, -1]] == [-30, 30]).all()
    assert (feature_bins("ec_eta", g1, layer=1)[[0, -1]] == [-100, 100]).all()
    assert (feature_bins("ec_phi", g1, layer=12)[[0, -1]] == [-500, 500]).all()
    assert feature_bins("width_eta", g2)[-1] == 30 and feature_bins("width_eta", g1, layer=13)[-1] == 400
    assert feature_bins("ec_r", g2)[-1] == 42 and feature_bins("ec_r", g1, layer=14)[-1] == 1500
    assert feature_bins("ec_r", g1, layer=2)[-1] == 500
    assert feature_bins("width_r", g2)[-1] == 20
    s = feature_bins("sparsity", g2)
    assert len(s) == 21 and s[0] == 0 and s[-1] == 1
    e = feature_bins("e_layer", g2, reference=np.array([0.0, 5.0, 500.0]), threshold=0.01515)
    assert len(e) == 41 and e[0] == pytest.approx(0.01515) and e[-1] == pytest.approx(500.0)
    with pytest.raises(ValueError):
        feature_bins("nonsense", g2)


# ------------------------------------------------------------------ FPD / KPD
def test_frechet_distance_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(1.0 + 1.0)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 0.5 ** 2 * 3 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(np.zeros(3), a, np.full(3, 0.5), b) == pytest.approx(expected)
    # non-commuting: compare with the definition through scipy's sqrtm
    import scipy.linalg

    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = m1 @ m1.T + np.eye(4), m2 @ m2.T + np.eye(4)
    ref = np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert frechet_distance(np.zeros(4), c1, np.zeros(4), c2) == pytest.approx(ref, rel=1e-8)


def test_fpd_gaussians_analytic():
    rng = np.random.default_rng(1)
    d, n = 4, 40_000
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) * 1.5 + 0.3
    expected = d * 0.3 ** 2 + d * (1.0 - 1.5) ** 2  # 0.61
    v, e = fpd(x, y, min_samples=4000, rng=0)
    assert v == pytest.approx(expected, abs=0.05)
    assert e >= 0
    v0, e0 = fpd(x, rng.normal(size=(n, d)), min_samples=4000, rng=0)
    assert abs(v0) < 0.01  # identical distributions: extrapolated FPD ~ 0
    assert v0 < v


def test_fpd_and_kpd_need_enough_showers():
    x = np.zeros((50, 3))
    with pytest.raises(InsufficientDataError):
        fpd(x, x, min_samples=100)
    with pytest.raises(InsufficientDataError):
        kpd(x, x, batch_size=100)


def test_mmd_unbiased_and_kpd():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, 3))
    assert mmd2_unbiased_poly(x, x[::-1].copy()) == pytest.approx(
        mmd2_unbiased_poly(x, x), abs=1e-9)
    # brute-force check of the estimator on a tiny sample
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)) + 1

    def k(u, v):
        return (u @ v / 2 + 1) ** 4

    kxx = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    kyy = sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
    kxy = sum(k(a[i], b[j]) for i in range(5) for j in range(4)) / 20
    assert mmd2_unbiased_poly(a, b) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-5)
    same = kpd(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)), batch_size=1000, rng=0)
    shifted = kpd(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) + 0.5, batch_size=1000, rng=0)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert shifted[0] > 10 * max(same[1], 1e-4)


def test_scale_by_reference():
    r = np.array([[1.0, -4.0, 0.0], [0.5, 2.0, 0.0]])
    g = np.array([[2.0, 4.0, 1.0]])
    rs, gs = scale_by_reference(r, g)
    np.testing.assert_allclose(rs, [[1.0, -1.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(gs, [[2.0, 1.0, 1.0]])


# ---------------------------------------------------------------------- PRDC
def test_prdc_identical_and_disjoint():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8))
    r = prdc(x, x.copy(), k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    # every fake point sits in its own ball and those of its k neighbours: (k + 1) / k
    assert r["density"] == pytest.approx(6 / 5, abs=0.02)
    far = prdc(x, x + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    with pytest.raises(InsufficientDataError):
        prdc(x[:5], x[:5], k=5)


def test_prdc_same_distribution_high_and_shift_lower():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(800, 5)), rng.normal(size=(800, 5))
    same = prdc(a, b)
    shifted = prdc(a, b + 1.0)
    assert same["precision"] > 0.6 and same["coverage"] > 0.8
    assert shifted["precision"] < same["precision"] and shifted["coverage"] < same["coverage"]


def test_log_voxels_floor():
    out = log_voxels(np.array([[0.0, 0.05, 1.0, 100.0]]))
    np.testing.assert_allclose(out, [[-1.0, -1.0, 0.0, 2.0]], rtol=1e-6)


def test_split_halves():
    a, b = split_halves(7)
    assert list(a) == [0, 2, 4, 6] and list(b) == [1, 3, 5]


def test_fpd_refuses_a_single_batch_size():
    # samples of exactly min_samples allow one batch size only: the 1/N bias cannot be
    # extrapolated away, so no value is given
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3))
    with pytest.raises(InsufficientDataError, match="1500"):
        fpd(x, y, min_samples=1000)
    v, _ = fpd(x, y, min_samples=600)
    assert np.isfinite(v)
