"""Bounded memory of the evaluation and of generation: the pieces that keep the peak
flat in the file size give the same answers as the straightforward computations."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from caloforge.evaluation import (
    EvaluationOptions,
    LowLevelInputs,
    classifier_test,
    compare,
    compute_features,
    low_level_inputs,
    split_halves,
    toy_showers,
)
from caloforge.evaluation.prdc import log_voxels, prdc
from caloforge.evaluation.report import voxel_sample_size
from caloforge.geometry import get_geometry
from caloforge.pipelines.generate import default_batch_size

# the module, not the function of the same name that caloforge.evaluation exports
prdc_module = importlib.import_module("caloforge.evaluation.prdc")


def test_prdc_in_small_blocks_equals_prdc_of_transformed_samples(monkeypatch):
    rng = np.random.default_rng(0)
    real = rng.exponential(0.5, size=(300, 40)).astype(np.float32)
    fake = (rng.exponential(0.6, size=(250, 40)) * (rng.random((250, 40)) > 0.3)).astype(np.float32)
    whole = prdc(log_voxels(real), log_voxels(fake), k=5)
    # 16-row blocks: many blocks per sample, the transform applied block by block
    monkeypatch.setattr(prdc_module, "_BLOCK_BYTES", 16 * 8 * 40)
    assert prdc_module._block_rows(40) == 16
    blocked = prdc(real, fake, k=5, transform=log_voxels)
    assert blocked == pytest.approx(whole, abs=1e-12)
    assert 0.0 < blocked["precision"] < 1.0  # a case where the answer is not trivial


def test_prdc_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="one D"):
        prdc(np.zeros((10, 3)), np.zeros((10, 4)))


def test_voxel_sample_is_bounded_by_the_budget_not_the_file():
    ds3, ds2 = get_geometry("ds3"), get_geometry("ds2")
    none = EvaluationOptions(classifier="none")
    # ds3: the same count for 5k and 20k showers per half, within the PRDC budget
    k5, k20 = (voxel_sample_size(ds3.n_voxels, n, none) for n in (2_500, 10_000))
    assert k5 == k20 and 3 * 4 * ds3.n_voxels * k20 <= none.prdc_memory_bytes
    assert voxel_sample_size(ds3.n_voxels, 100, none) == 100  # small files: all of them
    # ds2: 3 215 showers (5 000 before the budget bound every geometry)
    assert voxel_sample_size(ds2.n_voxels, 50_000, none) == 3_215
    cls = EvaluationOptions(classifier="cpu")
    k = voxel_sample_size(ds3.n_voxels, 50_000, cls)
    assert 5 * 4 * ds3.n_voxels * k <= cls.voxel_memory_bytes and k > 1000
    bigger = EvaluationOptions(classifier="cpu", voxel_memory_bytes=4_000_000_000)
    assert voxel_sample_size(ds3.n_voxels, 50_000, bigger) > k


def test_lazy_low_level_inputs_give_the_same_classifier():
    g = get_geometry("ds2")
    a, b = toy_showers(g, 300, rng=1), toy_showers(g, 300, rng=2, energy_scale=1.3)
    view = LowLevelInputs(b.incident_energies, b.showers)
    rows = np.array([5, 2, 299])
    assert np.array_equal(view[rows], low_level_inputs(b.incident_energies[rows], b.showers[rows]))
    assert view.shape == (300, g.n_voxels + 1) and len(view) == 300
    full = classifier_test(low_level_inputs(a.incident_energies, a.showers),
                           low_level_inputs(b.incident_energies, b.showers), epochs=2, device="cpu")
    lazy = classifier_test(LowLevelInputs(a.incident_energies, a.showers), view, epochs=2,
                           device="cpu")
    assert lazy.auc == full.auc and lazy.n_per_class == full.n_per_class == 300


def test_default_batch_bounds_the_showers_per_call():
    assert default_batch_size(get_geometry("ds3")) == 258
    assert default_batch_size(get_geometry("ds2")) == 1000
    assert default_batch_size(get_geometry("ds3"), "cuda") == 1000


def test_official_convention_is_the_default_and_keeps_the_bias_corrected_fpd():
    g = get_geometry("ds2")
    f = compute_features(toy_showers(g, 400, rng=3))
    a, b = split_halves(len(f))
    opts = EvaluationOptions(classifier="none", fpd_min_samples=100, fpd_sizes=3, fpd_batches=2,
                             official_fpd_samples=(200, 400), official_kpd_batch_size=100)
    assert opts.convention == "official"
    m, _, _ = compare(f.subset(a), f.subset(b), g, options=opts)
    assert m["fpd"].value is not None and m["fpd_bias_corrected"].value is not None
    assert m["fpd"].value >= 0.0  # the official fit is bounded at 0; the other is not
    assert m["fpd_bias_corrected"].value != m["fpd"].value
    own = compare(f.subset(a), f.subset(b), g,
                  options=EvaluationOptions(**{**vars(opts), "convention": "caloforge"}))[0]
    assert own["fpd"].value == pytest.approx(m["fpd_bias_corrected"].value)
    assert own["fpd_bias_corrected"].value is None


def test_bootstrap_kpd_from_counts_equals_the_expanded_batches():
    from caloforge.evaluation.fpd_kpd import kpd, mmd2_unbiased_poly

    data = np.random.default_rng(8)
    x, y = data.normal(size=(60, 4)), data.normal(0.3, 1.2, size=(50, 4))
    # the batches kpd draws, expanded row by row as the official code does
    rng = np.random.default_rng(3)
    want = [mmd2_unbiased_poly(x[rng.choice(60, 200)], y[rng.choice(50, 200)]) for _ in range(6)]
    v, e = kpd(x, y, batch_size=200, n_batches=6, rng=3, replace=True)  # 2 * 60 <= 200: counts
    assert v == pytest.approx(np.median(want), rel=1e-6)
    q = np.percentile(want, [16.0, 84.0])
    assert e == pytest.approx(0.5 * (q[1] - q[0]), rel=1e-5, abs=1e-12)


def test_constant_columns_add_their_mean_difference_to_both_fpds():
    from caloforge.evaluation.fpd_kpd import fpd, fpd_official, frechet_distance

    data = np.random.default_rng(9)
    x, y = data.normal(size=(600, 3)), data.normal(0.1, 1.1, size=(600, 3))
    # a fourth column constant in each sample (a layer no shower reaches): 2.0 vs 0.5
    xc = np.hstack([x, np.full((600, 1), 2.0)])
    yc = np.hstack([y, np.full((600, 1), 0.5)])
    kw = dict(min_samples=200, max_samples=400, n_points=4, n_batches=3)
    assert fpd_official(xc, yc, rng=1, **kw)[0] == pytest.approx(fpd_official(x, y, rng=1, **kw)[0] + 2.25,
                                                                 rel=1e-9)
    kw = dict(min_samples=200, n_sizes=4, n_batches=3)
    assert fpd(xc, yc, rng=1, **kw)[0] == pytest.approx(fpd(x, y, rng=1, **kw)[0] + 2.25, rel=1e-9)
    # the singular covariance itself is handled too (eigendecomposition path)
    s1 = np.diag([1.0, 2.0, 0.0])
    assert frechet_distance(np.zeros(3), s1, np.zeros(3), s1) == pytest.approx(0.0, abs=1e-12)


def test_block_statistics_equal_numpy_and_leave_the_sample_untouched(monkeypatch):
    from caloforge.evaluation import fpd_kpd

    monkeypatch.setattr(fpd_kpd, "_STATS_ROWS", 7)  # many blocks, a ragged last one
    data = np.random.default_rng(11)
    # a column with a small spread about a large mean: the shifted sums must not cancel
    x = np.hstack([data.normal(size=(50, 3)), 1e4 + 1e-3 * data.normal(size=(50, 1))])
    keep = x.copy()
    idx = data.choice(50, 30)  # with repeats
    mu, cov = fpd_kpd._weighted_stats(x, rows=idx)
    np.testing.assert_allclose(mu, x[idx].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[idx], rowvar=False), rtol=1e-7, atol=1e-14)
    counts = np.bincount(idx, minlength=50)
    mu_w, cov_w = fpd_kpd._weighted_stats(x, weights=counts)
    np.testing.assert_allclose(mu_w, mu, rtol=1e-12)
    np.testing.assert_allclose(cov_w, cov, rtol=1e-7, atol=1e-14)
    np.testing.assert_array_equal(x, keep)  # float64 blocks are slices: never modified
    x32 = x[:, :3].astype(np.float32)
    mu32, cov32 = fpd_kpd._weighted_stats(x32, rows=idx)
    assert mu32.dtype == np.float64 and cov32.dtype == np.float64
    np.testing.assert_allclose(cov32, np.cov(x32[idx].astype(np.float64), rowvar=False), rtol=1e-10)


def test_float32_features_score_as_float64_features():
    """The stored precision of the features changes no metric beyond its rounding."""
    from caloforge.evaluation.features import high_level_vector
    from caloforge.evaluation.fpd_kpd import fpd_official, kpd, scale_by_reference

    g = get_geometry("ds2")
    ref = compute_features(toy_showers(g, 300, rng=21))
    gen = compute_features(toy_showers(g, 300, rng=22, energy_scale=1.05))
    assert ref.e_layer.dtype == np.float32 and ref.e_tot.dtype == np.float64
    assert ref.e_layer.base is None  # its own array, not a view of the chunk's products
    h_ref, h_gen = high_level_vector(ref, g), high_level_vector(gen, g)
    assert h_ref.dtype == np.float32
    s32 = scale_by_reference(h_ref, h_gen)
    s64 = scale_by_reference(h_ref.astype(np.float64), h_gen.astype(np.float64))
    assert s32[0].dtype == np.float32 and s64[0].dtype == np.float64
    kw = dict(min_samples=200, max_samples=500, n_points=4, n_batches=3, rng=4)
    assert fpd_official(*s32, **kw)[0] == pytest.approx(fpd_official(*s64, **kw)[0], rel=1e-4)
    k32 = kpd(*s32, batch_size=100, n_batches=4, rng=2, replace=True)[0]
    k64 = kpd(*s64, batch_size=100, n_batches=4, rng=2, replace=True)[0]
    assert k32 == pytest.approx(k64, rel=1e-4, abs=1e-9)


def test_features_fill_preallocated_arrays_like_one_pass():
    g = get_geometry("ds2")
    data = toy_showers(g, 250, rng=23)
    whole = compute_features(data, chunk_size=250)
    chunked = compute_features(data, chunk_size=37)
    for name in whole.per_shower:
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    np.testing.assert_allclose(chunked.voxel_sum, whole.voxel_sum, rtol=1e-12)
    assert chunked.voxel_sum_count == 250
    rows = np.array([3, 10, 11, 200])
    picked = compute_features(data, rows=rows, chunk_size=3)
    np.testing.assert_array_equal(picked.e_layer, whole.e_layer[rows])
