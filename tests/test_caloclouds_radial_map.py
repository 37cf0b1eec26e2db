"""The radial map of CaloClouds II (docs/caloclouds.md, 'The radial map'): known answers on
clouds whose radial distributions are known, per-cell fitting, identity where nothing can
be fitted, padding, storage and bad knots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from caloforge.errors import ConfigError
from caloforge.io import PointCloudData
from caloforge.pipelines.caloclouds.radial_map import (
    MIN_POINTS_PER_CELL,
    RadialMap,
    fit_radial_map,
    weighted_radius_knots,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _clouds(rng, n_showers, points_per_shower, sigma_of, energies=(1e4, 9e4), layers=(0,),
            weights=None):
    """Showers with Rayleigh(sigma_of(layer, E)) radii about (0, 0), uniform azimuth."""
    e = rng.uniform(*energies, size=n_showers) if len(energies) == 2 else np.asarray(energies)
    e_pt = np.repeat(e, points_per_shower)
    layer = rng.choice(np.asarray(layers), size=len(e_pt))
    sigma = np.array([sigma_of(lay, en) for lay, en in zip(layer, e_pt)])
    r = sigma * np.sqrt(-2 * np.log(rng.random(len(e_pt))))
    phi = rng.uniform(0, 2 * np.pi, len(e_pt))
    w = np.ones(len(e_pt)) if weights is None else weights(r)
    pts = np.stack([r * np.cos(phi), r * np.sin(phi), layer + 0.5, w], 1)
    return PointCloudData(e, pts, np.full(n_showers, points_per_shower))


def _radii(c):
    return np.hypot(c.points[:, 0], c.points[:, 1])


def test_a_wide_model_is_mapped_onto_the_data_and_keeps_azimuth_z_and_energy():
    rng = np.random.default_rng(0)
    model = _clouds(rng, 200, 100, lambda lay, e: 2.0)
    data = _clouds(rng, 200, 100, lambda lay, e: 1.0)
    rmap = fit_radial_map(model, data, n_layers=1, n_bins=1, n_quantiles=64)
    test = _clouds(rng, 100, 100, lambda lay, e: 2.0)
    mapped = rmap.apply_to_clouds(test)
    rayleigh1 = stats.rayleigh(scale=1.0).cdf
    assert stats.kstest(_radii(mapped), rayleigh1).pvalue > 0.01
    assert stats.kstest(_radii(test), rayleigh1).pvalue < 1e-6  # the check can fail
    np.testing.assert_allclose(np.arctan2(mapped.points[:, 1], mapped.points[:, 0]),
                               np.arctan2(test.points[:, 1], test.points[:, 0]), atol=1e-5)
    np.testing.assert_array_equal(mapped.points[:, 2:], test.points[:, 2:])
    np.testing.assert_array_equal(mapped.n_points, test.n_points)


def test_the_map_matches_the_energy_weighted_distribution():
    # points far out carry little energy: the map must match the weighted radii, which
    # differ from the point-count ones
    rng = np.random.default_rng(1)

    def weight(r):
        return np.exp(-r)
    model = _clouds(rng, 300, 100, lambda lay, e: 3.0, weights=weight)
    data = _clouds(rng, 300, 100, lambda lay, e: 1.5, weights=weight)
    rmap = fit_radial_map(model, data, n_layers=1, n_bins=1, n_quantiles=128)
    mapped = rmap.apply_to_clouds(_clouds(rng, 300, 100, lambda lay, e: 3.0, weights=weight))
    want = weighted_radius_knots(_radii(data), data.points[:, 3], 16)
    got = weighted_radius_knots(_radii(mapped), mapped.points[:, 3], 16)
    np.testing.assert_allclose(got[1:], want[1:], rtol=0.08)


def test_each_layer_and_energy_bin_gets_its_own_map():
    rng = np.random.default_rng(2)

    def model_sigma(lay, e):
        return 2.0 + lay + (e > 5e4)

    def data_sigma(lay, e):
        return 0.5 * (1 + lay) * (1 + (e > 5e4))
    def two_ranges():  # half the showers below 3e4 MeV, half above 7e4: the median between
        return np.r_[rng.uniform(1e4, 3e4, 200), rng.uniform(7e4, 9e4, 200)]
    model = _clouds(rng, 400, 100, model_sigma, energies=two_ranges(), layers=(0, 1))
    data = _clouds(rng, 400, 100, data_sigma, energies=two_ranges(), layers=(0, 1))
    rmap = fit_radial_map(model, data, n_layers=2, n_bins=2, n_quantiles=64)
    assert rmap.model_knots.shape == (2, 2, 65)
    assert 3e4 < float(rmap.e_edges[0]) < 7e4
    test = _clouds(rng, 400, 100, model_sigma, energies=two_ranges(), layers=(0, 1))
    mapped = rmap.apply_to_clouds(test)
    e_pt = np.repeat(test.incident_energies, test.n_points)
    lay = np.floor(test.points[:, 2]).astype(int)
    for layer in (0, 1):
        for high in (False, True):
            sel = (lay == layer) & ((e_pt > 5e4) == high)
            want = data_sigma(layer, 9e4 if high else 1e4)
            assert stats.kstest(_radii(mapped)[sel], stats.rayleigh(scale=want).cdf).pvalue > 1e-3


def test_the_same_distribution_on_both_sides_is_nearly_the_identity():
    rng = np.random.default_rng(3)
    a = _clouds(rng, 300, 100, lambda lay, e: 1.0)
    rmap = fit_radial_map(a, a, n_layers=1, n_bins=1, n_quantiles=64)
    mapped = rmap.apply_to_clouds(a)
    np.testing.assert_allclose(mapped.points, a.points, atol=1e-5)


def test_cells_without_enough_points_keep_their_radii_exactly():
    rng = np.random.default_rng(4)
    model = _clouds(rng, 200, 100, lambda lay, e: 2.0, layers=(0,))
    sparse = _clouds(rng, 1, MIN_POINTS_PER_CELL - 1, lambda lay, e: 2.0, layers=(1,))
    data = _clouds(rng, 200, 100, lambda lay, e: 1.0, layers=(0, 1))
    both = PointCloudData(np.r_[model.incident_energies, sparse.incident_energies],
                          np.r_[model.points, sparse.points], np.r_[model.n_points, sparse.n_points])
    rmap = fit_radial_map(both, data, n_layers=3, n_bins=1, n_quantiles=16)
    # layer 1 has too few model points, layer 2 none on either side: identity, bit for bit
    probe = _clouds(rng, 5, 50, lambda lay, e: 3.0, layers=(1, 2))
    np.testing.assert_array_equal(rmap.apply_to_clouds(probe).points, probe.points)
    # layer 0 is mapped
    probe0 = _clouds(rng, 5, 50, lambda lay, e: 3.0, layers=(0,))
    assert np.abs(rmap.apply_to_clouds(probe0).points - probe0.points).max() > 0.1


def test_padding_is_left_alone_and_radii_beyond_the_knots_scale():
    rng = np.random.default_rng(5)
    model = _clouds(rng, 100, 100, lambda lay, e: 2.0)
    data = _clouds(rng, 100, 100, lambda lay, e: 1.0)
    rmap = fit_radial_map(model, data, n_layers=1, n_bins=1, n_quantiles=32)
    far = float(rmap.model_knots[0, 0, -1]) * 3
    pts = torch.tensor([[[far, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 2.0], [7.0, 7.0, 7.0, 7.0]]])
    valid = torch.tensor([[True, True, False]])
    out = rmap.apply(pts, valid, torch.tensor([5e4]))
    ratio = float(rmap.data_knots[0, 0, -1] / rmap.model_knots[0, 0, -1])
    assert out[0, 0, 0].item() == pytest.approx(far * ratio, rel=1e-5)
    assert torch.equal(out[0, 1], pts[0, 1])  # a point on the axis stays there
    assert torch.equal(out[0, 2], pts[0, 2])  # padding


def test_state_round_trips_and_bad_knots_are_refused():
    rng = np.random.default_rng(6)
    c = _clouds(rng, 50, 100, lambda lay, e: 1.0)
    rmap = fit_radial_map(c, c, n_layers=1, n_bins=2, n_quantiles=8, axis_xy=(1.0, -2.0))
    back = RadialMap.from_state(rmap.state())
    assert back.axis_xy == (1.0, -2.0)
    assert torch.equal(back.model_knots, rmap.model_knots)
    decreasing = rmap.data_knots.clone()
    decreasing[0, 0, 3] = -1.0
    with pytest.raises(ConfigError, match="never decrease"):
        RadialMap(rmap.e_edges, rmap.model_knots, decreasing)
    nan = rmap.data_knots.clone()
    nan[0, 0, 2] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        RadialMap(rmap.e_edges, rmap.model_knots, nan)
    with pytest.raises(ConfigError, match="energy bins"):
        RadialMap(torch.zeros(3), rmap.model_knots, rmap.data_knots)
