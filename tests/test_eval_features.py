"""Features of hand-built showers against hand computation (ds2 and ds1 geometries)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caloforge.evaluation import (
    DS1_THRESHOLD_MEV,
    DS23_THRESHOLD_MEV,
    ShowerFeatures,
    apply_threshold,
    compute_features,
    default_threshold,
    high_level_vector,
    toy_showers,
)
from caloforge.geometry import get_geometry
from caloforge.io import ShowerData, ShowerFile, write_showers


def _alpha_centre(a: int, n_alpha: int) -> float:
    edges = np.linspace(-math.pi, math.pi, n_alpha + 1)
    return 0.5 * (edges[a] + edges[a + 1])


def test_default_thresholds():
    # the official definition, 0.5 keV in silicon / sampling fraction 0.033, exactly the
    # constant the simulator cuts its ds2/ds3 voxels at
    from caloforge.simulation import DS23_THRESHOLD_MEV as SIMULATOR_THRESHOLD

    assert default_threshold(get_geometry("ds2")) == DS23_THRESHOLD_MEV == 0.5e-3 / 0.033
    assert DS23_THRESHOLD_MEV == pytest.approx(0.0151515151515, rel=1e-9)
    assert SIMULATOR_THRESHOLD is DS23_THRESHOLD_MEV
    assert default_threshold(get_geometry("ds3")) == DS23_THRESHOLD_MEV
    assert default_threshold(get_geometry("ds1-photons")) == DS1_THRESHOLD_MEV == 1.0
    assert default_threshold(get_geometry("ds1-pions")) == 1.0


def test_threshold_zeroes_small_voxels():
    s = np.array([[0.01, 0.02, 5.0]], dtype=np.float32)
    out = apply_threshold(s, 0.01515)
    np.testing.assert_array_equal(out, np.array([[0.0, 0.02, 5.0]], np.float32))
    assert s[0, 0] == pytest.approx(0.01)  # input untouched


def test_ds2_two_voxels_hand_computed():
    g = get_geometry("ds2")  # 45 layers, 16 alpha bins, 9 radial bins
    s = np.zeros((1, g.n_voxels), np.float32)
    r_edges = np.asarray(g.r_edges[0])
    r_mid = 0.5 * (r_edges[1:] + r_edges[:-1])
    # layer 7: 3 MeV at (alpha 2, r 1) and 1 MeV at (alpha 10, r 4); layer 20: 2 MeV at (0, 0)
    s[0, g.voxel_index(7, 2, 1)] = 3.0
    s[0, g.voxel_index(7, 10, 4)] = 1.0
    s[0, g.voxel_index(20, 0, 0)] = 2.0
    s[0, g.voxel_index(30, 0, 0)] = 0.01  # below the 15.15 keV threshold
    f = compute_features(ShowerData(np.array([100.0]), s, g))
    assert f.e_tot[0] == pytest.approx(6.0)
    assert f.response[0] == pytest.approx(0.06)
    assert f.e_layer[0, 7] == pytest.approx(4.0) and f.e_layer[0, 20] == pytest.approx(2.0)
    assert f.e_layer[0, 30] == 0.0
    x1 = r_mid[1] * math.cos(_alpha_centre(2, 16))
    x2 = r_mid[4] * math.cos(_alpha_centre(10, 16))
    c = (3 * x1 + x2) / 4
    w = math.sqrt((3 * x1 ** 2 + x2 ** 2) / 4 - c ** 2)
    assert f.ec_eta[0, 7] == pytest.approx(c, rel=1e-9)
    assert f.width_eta[0, 7] == pytest.approx(w, rel=1e-6)
    y1 = r_mid[1] * math.sin(_alpha_centre(2, 16))
    y2 = r_mid[4] * math.sin(_alpha_centre(10, 16))
    assert f.ec_phi[0, 7] == pytest.approx((3 * y1 + y2) / 4, rel=1e-9)
    assert f.ec_r[0, 7] == pytest.approx((3 * r_mid[1] + r_mid[4]) / 4)
    rw = math.sqrt((3 * r_mid[1] ** 2 + r_mid[4] ** 2) / 4 - ((3 * r_mid[1] + r_mid[4]) / 4) ** 2)
    assert f.width_r[0, 7] == pytest.approx(rw, rel=1e-6)
    # single voxel: width exactly 0 (clipped), centre at the cell
    assert f.width_r[0, 20] == 0.0 and f.width_eta[0, 20] == 0.0
    assert f.ec_r[0, 20] == pytest.approx(r_mid[0])
    # empty layer: centre and width 0, sparsity 1
    assert f.ec_eta[0, 3] == 0.0 and f.sparsity[0, 3] == 1.0
    assert f.sparsity[0, 7] == pytest.approx(1 - 2 / 144)
    # shower depth per radial slice: slice 1 only layer 7, slice 0 only layer 20, slice 4 layer 7
    assert f.shower_depth[0, 1] == pytest.approx(7.0)
    assert f.shower_depth[0, 0] == pytest.approx(20.0)
    assert f.shower_depth[0, 2] == 0.0
    assert f.voxel_counts.sum() == 3


def test_shower_depth_mixture():
    g = get_geometry("ds2")
    s = np.zeros((1, g.n_voxels), np.float32)
    s[0, g.voxel_index(2, 3, 5)] = 1.0
    s[0, g.voxel_index(10, 7, 5)] = 3.0
    f = compute_features(ShowerData(np.array([10.0]), s, g))
    assert f.shower_depth[0, 5] == pytest.approx((2 * 1 + 10 * 3) / 4)


def test_ds1_photons_hand_computed():
    g = get_geometry("ds1-photons")
    s = np.zeros((1, g.n_voxels), np.float32)
    # layer 0 has no angular binning: alpha centre 0, so eta = r and phi = 0
    s[0, g.voxel_index(0, 0, 2)] = 10.0  # r bin (10, 30) mm
    s[0, g.voxel_index(1, 5, 3)] = 4.0   # layer 1: 10 alpha bins, r bin (6, 8)
    s[0, g.voxel_index(12, 0, 0)] = 0.5  # below the 1 MeV threshold
    f = compute_features(ShowerData(np.array([1000.0]), s, g))
    assert f.e_tot[0] == pytest.approx(14.0)
    assert f.ec_r[0, 0] == pytest.approx(20.0)
    assert f.ec_eta[0, 0] == pytest.approx(20.0)
    assert f.ec_r[0, 1] == pytest.approx(7.0)
    assert f.ec_eta[0, 1] == pytest.approx(7.0 * math.cos(_alpha_centre(5, 10)))
    assert f.ec_phi[0, 1] == pytest.approx(7.0 * math.sin(_alpha_centre(5, 10)))
    assert f.e_layer[0, 12] == 0.0
    assert f.sparsity[0, 1] == pytest.approx(1 - 1 / (16 * 10))
    hl = high_level_vector(f, g)
    n_act, n_ab = len(g.active_layers), len(g.alpha_binned_layers)
    assert hl.shape == (1, 1 + n_act + 4 * n_ab + 1 + 3 * n_act)
    assert hl[0, 0] == pytest.approx(3.0)


def test_chunking_and_file_give_same_features(tmp_path):
    g = get_geometry("ds2")
    data = toy_showers(g, 60, rng=5)
    whole = compute_features(data)
    chunked = compute_features(data, chunk_size=7)
    path = tmp_path / "s.h5"
    write_showers(path, data)
    with ShowerFile(path) as fh:
        from_file = compute_features(fh, chunk_size=13)
    for name, arr in whole.to_arrays().items():
        np.testing.assert_allclose(chunked.to_arrays()[name], arr, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(from_file.to_arrays()[name], arr, rtol=1e-6, err_msg=name)
    assert whole.voxel_counts.sum() == int((apply_threshold(data.showers, whole.threshold) > 0).sum())
    hl = high_level_vector(whole, g)
    assert hl.shape == (60, 1 + 45 + 4 * 45 + 1 + 45 + 90)
    sub = whole.subset(np.arange(0, 60, 2))
    assert len(sub) == 30 and sub.voxel_hist.shape[0] == 30
    rt = ShowerFeatures.from_arrays(whole.to_arrays())
    np.testing.assert_array_equal(rt.e_layer, whole.e_layer)


def test_max_showers_and_custom_threshold():
    g = get_geometry("ds2")
    data = toy_showers(g, 20, rng=1)
    f = compute_features(data, max_showers=8, threshold=1.0)
    assert len(f) == 8 and f.threshold == 1.0
    assert f.e_tot[0] == pytest.approx(float(data.showers[0][data.showers[0] >= 1.0].sum()), rel=1e-5)
