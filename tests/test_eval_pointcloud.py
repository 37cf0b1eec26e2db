"""Point-cloud observables: projection, threshold, bins, centroids, W1 scores, features."""

import json
import sys
import types

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.evaluation.pointcloud import (
    CellHits,
    ObservableBins,
    evaluate_point_clouds,
    fit_observable_bins,
    high_level_features,
    point_cloud_observables,
    project_to_cells,
)
from caloforge.geometry import PlanarGeometry, ild_ecal
from caloforge.io import PointCloudData

# 12 layers, 4 x 4 cells of 10 mm: x/y edges -20, -10, 0, 10, 20; centres -15, -5, 5, 15.
GEOM = PlanarGeometry("toy", absorber_mm=(1.0,) * 12, si_mm=0.5, cell_mm=10.0,
                      n_cells_x=4, n_cells_y=4)


def _cloud(showers, e_inc, geometry=GEOM):
    pts = np.concatenate([np.asarray(s, np.float32).reshape(-1, 4) for s in showers])
    return PointCloudData(np.asarray(e_inc, np.float32), pts, [len(s) for s in showers], geometry)


def hand_built():
    shower0 = [
        (1.0, 1.0, 0.2, 0.06),   # these two share cell (ix 2, iy 2) of layer 0: 0.12 MeV
        (2.0, 3.0, 0.7, 0.06),
        (-12.0, 5.0, 3.5, 0.05),  # alone in its cell: below the 0.1 MeV threshold
        (100.0, 0.0, 2.0, 0.8),   # outside the window: lost
        (-5.0, -5.0, 11.9, 1.0),  # layer 11, cell (ix 1, iy 1)
    ]
    shower1 = [(0.0, 0.0, 1.0, 0.04), (5.0, 5.0, 1.5, 0.05)]  # same cell, 0.09 MeV: no hit
    return _cloud([shower0, shower1], [100.0, 50.0])


def test_projection_known_cells():
    hits = project_to_cells(hand_built())
    assert hits.n_showers == 2
    np.testing.assert_array_equal(hits.shower, [0, 0])
    order = np.argsort(hits.layer)
    np.testing.assert_array_equal(hits.layer[order], [0, 11])
    np.testing.assert_array_equal(hits.ix[order], [2, 1])
    np.testing.assert_array_equal(hits.iy[order], [2, 1])
    np.testing.assert_allclose(hits.energy[order], [0.12, 1.0], rtol=1e-6)
    np.testing.assert_allclose(hits.x_mm[order], [5.0, -5.0])
    np.testing.assert_allclose(hits.y_mm[order], [5.0, -5.0])
    np.testing.assert_allclose(hits.z_mm[order], GEOM.layer_centre_mm[[0, 11]])
    assert hits.lost_energy_fraction == pytest.approx(0.8 / (0.12 + 0.05 + 0.8 + 1.0 + 0.09),
                                                      rel=1e-6)


def test_threshold_is_configurable():
    hits = project_to_cells(hand_built(), threshold_mev=0.0)
    assert len(hits.energy) == 4  # the 0.05 MeV cell of shower 0 and shower 1's 0.09 MeV cell
    assert sorted(np.round(hits.energy, 6)) == [0.05, 0.09, 0.12, 1.0]
    hits = project_to_cells(hand_built(), threshold_mev=0.5)
    np.testing.assert_allclose(hits.energy, [1.0])


def test_observables_of_hand_built_showers():
    hits = project_to_cells(hand_built())
    bins = ObservableBins([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12],
                          [0, 2, 4, 6, 7.5, 8, 10, 12, 14, 16, 40])
    obs = point_cloud_observables(hits, bins)
    np.testing.assert_array_equal(obs.n_hits, [2, 0])
    np.testing.assert_allclose(obs.e_vis, [1.12, 0.0], rtol=1e-6)
    np.testing.assert_allclose(obs.e_vis_over_e_inc, [0.0112, 0.0], rtol=1e-6)
    # Both hits are at radius sqrt(50) = 7.07 mm: ring [6, 7.5), index 3.
    np.testing.assert_allclose(obs.e_radial[0], np.eye(10)[3] * 1.12, rtol=1e-6)
    # Layer 0 -> group 0; layer 11 -> group 9 ([11, 12)).
    np.testing.assert_allclose(obs.e_long[0], [0.12] + [0] * 8 + [1.0], rtol=1e-6)
    assert obs.e_long[1].sum() == 0 and obs.e_radial[1].sum() == 0
    np.testing.assert_allclose(obs.cog_x[0], (0.12 * 5 - 1.0 * 5) / 1.12, rtol=1e-6)
    np.testing.assert_allclose(obs.cog_y[0], (0.12 * 5 - 1.0 * 5) / 1.12, rtol=1e-6)
    z = GEOM.layer_centre_mm
    np.testing.assert_allclose(obs.cog_z[0], (0.12 * z[0] + 1.0 * z[11]) / 1.12, rtol=1e-6)
    assert np.isnan(obs.cog_x[1]) and np.isnan(obs.cog_z[1])
    np.testing.assert_allclose(sorted(obs.e_cell), [0.12, 1.0], rtol=1e-6)


def test_calo_clouds_long_groups():
    bins = ObservableBins([0, 8, 11, 13, 15, 16, 18, 19, 21, 24, 30], list(range(11)))
    groups = bins.long_bin(np.arange(30))
    # Paper, 1-based: 1-8, 9-11, 12-13, 14-15, 16, 17-18, 19, 20-21, 22-24, 25-30.
    sizes = np.bincount(groups)
    np.testing.assert_array_equal(sizes, [8, 3, 2, 2, 1, 2, 1, 2, 3, 6])


def _hits(layer, ix, iy, geometry):
    n = len(layer)
    return CellHits(np.zeros(n, np.int64), np.asarray(layer), np.asarray(ix), np.asarray(iy),
                    np.ones(n), np.array([1.0]), geometry, 0.1)


def test_fitted_bins_equal_statistics_and_roundtrip():
    g = ild_ecal(n_cells=40)
    rng = np.random.default_rng(0)
    layer = np.repeat(np.arange(30), 100)  # equal counts per layer: groups of 3 layers
    ix = rng.integers(0, 40, layer.size)
    iy = rng.integers(0, 40, layer.size)
    bins = fit_observable_bins(_hits(layer, ix, iy, g))
    assert bins.long_edges == (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30)
    hits = _hits(layer, ix, iy, g)
    counts = np.bincount(bins.radial_bin(hits.radius_mm()), minlength=10)
    # Cells sit on a grid, so the counts are equal up to the ties at one radius.
    assert counts.min() > 0.5 * layer.size / 10
    assert counts.max() < 1.5 * layer.size / 10
    assert bins.radial_edges[-1] == pytest.approx(np.hypot(100, 100))
    back = ObservableBins.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert back == bins


def test_fitted_bins_need_enough_distinct_values():
    with pytest.raises(CaloforgeError, match="distinct layer"):
        fit_observable_bins(_hits([0, 1, 2, 3] * 5, [0] * 20, [0] * 20, ild_ecal()))
    with pytest.raises(CaloforgeError, match="unknown"):
        ObservableBins.from_dict({"long_edges": [0, 1], "radial_edges": [0, 1], "x": 1})
    with pytest.raises(CaloforgeError, match="strictly"):
        ObservableBins([0, 2, 2, 3], [0, 1, 2, 3])


def toy_showers(n, seed, *, e_scale=1.0, y_shift=0.0, geometry=None):
    """Electromagnetic-like toy clouds: points with a gamma-shaped depth profile and a
    Gaussian transverse spread; the number of points grows with the incident energy."""
    rng = np.random.default_rng(seed)
    e_inc = rng.uniform(10_000, 90_000, n)
    n_pts = rng.poisson(e_inc / 300).astype(int)
    total = n_pts.sum()
    depth = np.minimum(rng.gamma(4.0, 3.0, total), 29.99)
    x = rng.normal(0, 12, total)
    y = rng.normal(y_shift, 12, total)
    e = rng.exponential(0.5, total) * e_scale
    pts = np.stack([x, y, depth, e], axis=1)
    return PointCloudData(e_inc, pts, n_pts, geometry or ild_ecal(n_cells=60))


@pytest.fixture(scope="module")
def toy_scores():
    ref = toy_showers(400, 1)
    same = toy_showers(400, 2)
    distorted = toy_showers(400, 2, e_scale=1.3, y_shift=4.0)
    kw = dict(classifier=False, e_cell_subsample=5000)
    return evaluate_point_clouds(ref, same, **kw), evaluate_point_clouds(ref, distorted, **kw)


def test_distorted_sample_scores_worse(toy_scores):
    same, distorted = toy_scores
    for name in ("e_vis_over_e_inc", "e_cell", "cog_y"):
        assert distorted["w1"][name]["mean"] > 3 * same["w1"][name]["mean"], name
    for name in ("n_hits", "e_long", "e_radial", "cog_x", "cog_z"):
        assert same["w1"][name]["mean"] < 0.3, name
    assert set(same["w1"]) == {"n_hits", "e_vis_over_e_inc", "e_cell", "e_long", "e_radial",
                               "cog_x", "cog_y", "cog_z"}
    assert len(same["w1"]["e_long"]["per_bin"]) == 10
    assert same["classifier"] is None
    assert same["n_ref"] == 400 and same["n_ref_empty"] == 0
    json.dumps(same)  # the result is JSON-serialisable


def test_stored_bins_are_reused(toy_scores):
    same, _ = toy_scores
    bins = ObservableBins.from_dict(same["bins"])
    again = evaluate_point_clouds(toy_showers(400, 1), toy_showers(400, 2), bins=bins,
                                  classifier=False, e_cell_subsample=5000)
    assert again["bins"] == same["bins"]
    assert again["w1"]["e_radial"]["mean"] == pytest.approx(same["w1"]["e_radial"]["mean"])


def test_high_level_features_layout():
    ref = toy_showers(200, 3)
    hits = project_to_cells(ref)
    obs = point_cloud_observables(hits, fit_observable_bins(hits))
    x, (mean, std) = high_level_features(obs)
    assert x.shape == (200, 25) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-3)
    np.testing.assert_allclose(x[:, 0] * std[0] + mean[0], obs.e_radial[:, 0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(x[:, 10] * std[10] + mean[10], obs.e_long[:, 0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(x[:, 22] * std[22] + mean[22], obs.cog_z, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(x[:, 23] * std[23] + mean[23], obs.n_hits, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(x[:, 24] * std[24] + mean[24], obs.e_vis_over_e_inc, rtol=1e-4, atol=1e-3)
    # A generated sample is standardised with the reference's statistics.
    y, stats = high_level_features(obs, (mean + std, std))
    np.testing.assert_allclose(y, x - 1, atol=1e-4)


def test_classifier_called_with_features(monkeypatch):
    calls = {}

    def fake_classifier_test(x_ref, x_gen, *, preset, hidden):
        calls.update(shape_ref=x_ref.shape, shape_gen=x_gen.shape, preset=preset, hidden=hidden)
        return {"auc": 0.5}

    import caloforge.evaluation  # noqa: F401  (parent package of the fake module)

    fake = types.ModuleType("caloforge.evaluation.classifier")
    fake.classifier_test = fake_classifier_test
    monkeypatch.setitem(sys.modules, "caloforge.evaluation.classifier", fake)
    res = evaluate_point_clouds(toy_showers(100, 4), toy_showers(120, 5),
                                e_cell_subsample=1000)
    assert res["classifier"] == {"auc": 0.5}
    assert calls == {"shape_ref": (100, 25), "shape_gen": (120, 25), "preset": "cpu",
                     "hidden": (32, 16, 8)}


def test_errors():
    with pytest.raises(CaloforgeError, match="geometry"):
        project_to_cells(_cloud([[(0, 0, 0, 1.0)]], [1.0], geometry=None))
    with pytest.raises(CaloforgeError, match="showers"):
        evaluate_point_clouds(toy_showers(10, 1), toy_showers(10, 2), classifier=False)


def test_high_level_classifier_sees_distortion():
    pytest.importorskip("caloforge.evaluation.classifier")
    ref = toy_showers(600, 1)
    kw = dict(e_cell_subsample=5000)
    same = evaluate_point_clouds(ref, toy_showers(600, 2), **kw)["classifier"]
    bad = evaluate_point_clouds(ref, toy_showers(600, 2, e_scale=1.3, y_shift=4.0), **kw)["classifier"]
    assert bad["auc"] > same["auc"] + 0.15
    assert same["hidden"] == [32, 16, 8]
    json.dumps(bad)


def test_file_projection_in_chunks_equals_in_memory(tmp_path):
    from caloforge.evaluation.pointcloud import CellHits, project_file_to_cells
    from caloforge.io import write_point_clouds

    data = toy_showers(30, 7, geometry=ild_ecal(n_cells=10))  # small window: some energy lost
    path = tmp_path / "pc.h5"
    write_point_clouds(path, data)
    whole = project_to_cells(data)
    chunked = project_file_to_cells(path, data.geometry, chunk_size=7)
    assert chunked.n_showers == 30
    for name in ("shower", "layer", "ix", "iy"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    np.testing.assert_allclose(chunked.energy, whole.energy, rtol=1e-5)
    assert 0 < whole.lost_energy_fraction < 1
    assert chunked.lost_energy_fraction == pytest.approx(whole.lost_energy_fraction, rel=1e-5)
    res = evaluate_point_clouds(chunked, toy_showers(30, 8, geometry=ild_ecal(n_cells=10)),
                                n_subsamples=3, classifier=False, e_cell_subsample=None)
    assert res["n_ref"] == 30 and res["lost_energy_fraction"]["ref"] > 0
    with pytest.raises(CaloforgeError, match="threshold"):
        evaluate_point_clouds(chunked, data, threshold_mev=0.2, n_subsamples=3, classifier=False)
    with pytest.raises(CaloforgeError):
        CellHits.concatenate([chunked, project_to_cells(data, threshold_mev=0.3)])
