"""The voxel-energy quantile map: known answers on log-normal voxels with empty fractions,
the identity when model and data agree, the layer energies it keeps, and the stage's
place in a trained pipeline."""

import numpy as np
import pytest
import torch
from scipy import stats

from caloforge.errors import ConfigError
from caloforge.geometry import CylindricalGeometry
from caloforge.transforms import VoxelQuantileCalibration, fit_voxel_quantile_calibration

pytestmark = pytest.mark.usefixtures("one_thread")

#: 3 layers x 2 angular bins x 2 radial bins: 6 cells, 12 voxels
GEO = CylindricalGeometry("toy", r_edges=((0.0, 5.0, 10.0),) * 3, n_alpha=(2, 2, 2))
THR = 0.01


def _voxels(n, mu, sigma, empty, seed, energies=None):
    """Log-normal voxels (ln e ~ N(mu, sigma)) of which a fraction ``empty`` is 0;
    ``mu`` may be a function of the incident energy."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)) if energies is None else energies
    m = mu(e)[:, None] if callable(mu) else mu
    x = np.exp(m + sigma * rng.standard_normal((n, GEO.n_voxels)))
    x[rng.random((n, GEO.n_voxels)) < empty] = 0.0
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(e)


def _fitted(gen, ref, energies, bins=1, quantiles=64):
    cal = VoxelQuantileCalibration.for_geometry(GEO, n_bins=bins, n_quantiles=quantiles,
                                                threshold_mev=THR)
    return fit_voxel_quantile_calibration(cal, gen, ref, energies)


def test_the_map_sends_the_models_distribution_onto_the_datas():
    model, e = _voxels(20000, 0.0, 1.0, 0.2, seed=1)
    data, _ = _voxels(20000, 2.0, 0.5, 0.5, seed=2, energies=e.numpy())
    cal = _fitted(model, data, e)
    fresh, e2 = _voxels(20000, 0.0, 1.0, 0.2, seed=3)
    mapped = cal.map_voxels(fresh, e2)
    # the empty fraction becomes the data's, and the rest follows the data's log-normal
    assert float((mapped == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    logs = np.log(mapped[mapped > 0].numpy().astype(np.float64))
    # within the quantiles' resolution: the last half-level of each tail sits on the
    # extreme quantile (1 / 2K = 0.008), plus sampling noise
    assert stats.kstest(logs, "norm", args=(2.0, 0.5)).statistic < 0.012
    # a test that can fail: the same values are far from a wrong target
    assert stats.kstest(logs, "norm", args=(2.2, 0.5)).statistic > 0.1
    # monotone in each cell: the order of a cell's voxels is kept
    cell = cal.cell_of_voxel
    a, b = fresh[:, cell == 0].reshape(-1), mapped[:, cell == 0].reshape(-1)
    kept = b > 0
    order = torch.argsort(a[kept])
    assert (torch.diff(b[kept][order]) >= -1e-5 * b[kept][order][1:]).all()
    # the largest voxels are kept, the smallest removed
    assert float(a[kept].min()) >= float(a[(a > 0) & ~kept].max())


def test_a_far_emptier_data_cell_gets_the_datas_whole_spectrum():
    # the outer cells of low-energy showers: the model fills half its voxels with faint
    # values, the data 1 %; the kept voxels (the model's top 2 %) must carry the data's
    # whole spectrum, not its bottom (docs/calibration.md, 'Knots where the map acts')
    model, e = _voxels(40000, 0.0, 1.0, 0.5, seed=21)
    data, _ = _voxels(40000, 2.0, 0.5, 0.99, seed=22, energies=e.numpy())
    cal = _fitted(model, data, e)
    assert cal.paired_knots
    fresh, e2 = _voxels(40000, 0.0, 1.0, 0.5, seed=23)
    mapped = cal.map_voxels(fresh, e2)
    assert float((mapped > 0).float().mean()) == pytest.approx(0.01, abs=0.002)
    logs = np.log(mapped[mapped > 0].numpy().astype(np.float64))
    assert stats.kstest(logs, "norm", args=(2.0, 0.5)).statistic < 0.05
    assert stats.kstest(logs, "norm", args=(1.6, 0.5)).statistic > 0.2


def test_maps_stored_in_the_first_layout_load_as_such():
    model, e = _voxels(5000, 0.0, 1.0, 0.2, seed=24)
    data, _ = _voxels(5000, 1.0, 0.5, 0.6, seed=25, energies=e.numpy())
    cal = _fitted(model, data, e, quantiles=8)
    state = {k: v for k, v in cal.state_dict().items() if k != "knot_layout"}
    old = VoxelQuantileCalibration.for_geometry(GEO, n_bins=1, n_quantiles=8, threshold_mev=THR)
    old.load_state_dict(state)
    assert not old.paired_knots and cal.paired_knots
    assert not torch.equal(old(model[:50], e[:50]), cal(model[:50], e[:50]))


def test_energy_bins_map_each_energy_on_its_own():
    """The data's scale depends on E_inc, the model's does not: one map per bin."""
    model, e = _voxels(20000, 1.0, 0.5, 0.0, seed=4)
    data, _ = _voxels(20000, lambda en: np.log(en) - 6.0, 0.5, 0.0, seed=5,
                      energies=e.numpy())
    one, many = _fitted(model, data, e, bins=1), _fitted(model, data, e, bins=16)
    fresh, e2 = _voxels(4000, 1.0, 0.5, 0.0, seed=6)
    want = np.log(e2.numpy()) - 6.0

    def error(cal):
        y = cal.map_voxels(fresh, e2).double()
        return float(np.abs(np.log(y.mean(1).numpy()) - (want + 0.125)).mean())

    assert error(many) < 0.3 < 0.6 < error(one)


def _layered(n, data, seed):
    """Showers whose layers have energies s ~ logU(1, 100) MeV (the same distribution on
    both sides, as an energy network gives). The inner cell's voxels are never empty;
    the model's outer voxels are 5 % empty whatever s, the data's 20 % in layers below
    10 MeV and 80 % above. A map of absolute energies without the layer's energy removes
    the smallest voxels, those of the quiet layers: the opposite of the data. Only a map
    conditioned on the layer's energy gives every layer the data's hits (the map removes
    hits, it never adds any)."""
    rng = np.random.default_rng(seed)
    s = np.exp(rng.uniform(0.0, np.log(100.0), (n, GEO.n_layers)))
    x = np.exp(rng.standard_normal((n, GEO.n_layers, 2, 2)))   # (shower, layer, alpha, r)
    empty = np.where(s < 10.0, 0.2, 0.8)[:, :, None] if data else 0.05
    x[:, :, :, 1][rng.random(x.shape[:3]) < empty] = 0.0
    x *= (s / x.sum((-1, -2)))[:, :, None, None]
    e = torch.full((n,), 5e4, dtype=torch.float64)
    return torch.as_tensor(x.reshape(n, -1), dtype=torch.float32), torch.as_tensor(s), e


def test_layer_energy_bins_give_each_layer_the_hits_of_its_energy():
    model, _, e = _layered(20000, data=False, seed=30)
    data, _, _ = _layered(20000, data=True, seed=31)

    def fitted(binning):
        cal = VoxelQuantileCalibration.for_geometry(GEO, n_bins=8, n_quantiles=32,
                                                    threshold_mev=0.0, binning=binning)
        return fit_voxel_quantile_calibration(cal, model, data, e)

    by_layer, by_incident = fitted("layer"), fitted("incident")
    assert by_layer.binning == "layer" and by_incident.binning == "incident"
    fresh, s, e2 = _layered(4000, data=False, seed=32)
    low = np.repeat((s < 10.0).numpy(), 4, axis=1)      # voxels of layers below 10 MeV
    outer = np.tile([False, True], 2 * GEO.n_layers)[None, :]

    def empty(cal):
        y = cal(fresh, e2).numpy()
        return (y[low & outer] == 0).mean(), (y[~low & outer] == 0).mean()

    assert empty(by_layer) == pytest.approx((0.2, 0.8), abs=0.04)
    # a test that can fail: one map for all layer energies misses both
    low_inc, high_inc = empty(by_incident)
    assert abs(low_inc - 0.2) > 0.15 and abs(high_inc - 0.8) > 0.15
    # the layers keep their energies, and the stored binning survives a reload
    torch.testing.assert_close(by_layer.layer_sums(by_layer(fresh, e2)),
                               by_layer.layer_sums(fresh), rtol=1e-4, atol=1e-4)
    again = VoxelQuantileCalibration.for_geometry(GEO, n_bins=8, n_quantiles=32,
                                                  threshold_mev=0.0)
    again.load_state_dict(by_layer.state_dict())
    assert again.binning == "layer"
    assert torch.equal(again(fresh, e2), by_layer(fresh, e2))


def test_layers_quieter_than_any_of_the_datas_are_left_out_of_the_fit():
    # a model's faint tail layers (tens of keV where the data has nothing) would pile
    # their voxels into the lowest bin and lower its cut for the quiet layers the data has
    model, _, e = _layered(5000, data=False, seed=35)
    data, _, _ = _layered(5000, data=True, seed=36)
    rng = np.random.default_rng(37)
    quiet = torch.as_tensor(np.repeat(rng.random((5000, GEO.n_layers)) < 0.3, 4, axis=1))
    faint = torch.where(quiet, model * 1e-3, model)     # below the data's 1 MeV minimum
    emptied = torch.where(quiet, torch.zeros_like(model), model)

    def fitted(x):
        cal = VoxelQuantileCalibration.for_geometry(GEO, n_bins=4, n_quantiles=16,
                                                    threshold_mev=0.0, binning="layer")
        return fit_voxel_quantile_calibration(cal, x, data, e)

    with_faint, without = fitted(faint), fitted(emptied)
    for name in ("empty_model", "log_q_model", "empty_data", "log_q_data", "layer_log_e_edges"):
        assert torch.equal(getattr(with_faint, name), getattr(without, name)), name
    # the same layers kept at full strength do count
    assert not torch.equal(fitted(model).empty_model, without.empty_model)


def test_maps_stored_before_the_layer_binning_bin_by_incident_energy():
    model, e = _voxels(3000, 0.0, 1.0, 0.2, seed=33)
    data, _ = _voxels(3000, 1.0, 0.5, 0.6, seed=34, energies=e.numpy())
    cal = _fitted(model, data, e, bins=2, quantiles=8)
    state = {k: v for k, v in cal.state_dict().items()
             if k not in ("binning_code", "layer_log_e_edges")}
    old = VoxelQuantileCalibration.for_geometry(GEO, n_bins=2, n_quantiles=8,
                                                threshold_mev=THR, binning="layer")
    old.load_state_dict(state)
    assert old.binning == "incident"
    assert torch.equal(old(model[:50], e[:50]), cal(model[:50], e[:50]))
    with pytest.raises(ConfigError, match="bins by one of"):
        VoxelQuantileCalibration.for_geometry(GEO, n_bins=2, n_quantiles=8,
                                              threshold_mev=THR, binning="shower")


def test_map_is_the_identity_when_model_and_data_agree():
    x, e = _voxels(20000, 1.0, 1.0, 0.3, seed=7)
    cal = _fitted(x, x, e)
    fresh, e2 = _voxels(500, 1.0, 1.0, 0.3, seed=8)
    y = cal.map_voxels(fresh, e2)
    inner = (fresh > float(np.exp(-1.0))) & (fresh < float(np.exp(3.0)))
    torch.testing.assert_close(y[inner], fresh[inner], rtol=0.03, atol=0.0)
    assert ((y == 0) == (fresh == 0)).float().mean() > 0.99


def test_table_agrees_with_the_definition():
    model, e = _voxels(5000, 0.0, 1.5, 0.1, seed=9)
    data, _ = _voxels(5000, 1.0, 0.7, 0.4, seed=10, energies=e.numpy())
    cal = _fitted(model, data, e, bins=2, quantiles=16)
    fresh, e2 = _voxels(300, 0.0, 2.0, 0.1, seed=11)
    y = cal.map_voxels(fresh, e2).double()
    n, v = torch.nonzero(fresh, as_tuple=True)
    bins = torch.bucketize(torch.log(e2.double()), cal.log_e_edges)
    row = bins[n] * cal.empty_data.shape[1] + cal.cell_of_voxel[v]
    log_out, keep = cal.map_log_energies(torch.log(fresh[n, v].double()), row)
    want = torch.where(keep, torch.exp(log_out), torch.zeros_like(log_out))
    # the cut itself is exact; values agree to the table's interpolation (its ln e
    # spacing is 1/511 of the model's quantile range: 8 here)
    assert ((y[n, v] > 0) == keep).float().mean() > 0.999
    both = keep & (y[n, v] > 0)
    torch.testing.assert_close(y[n, v][both], want[both], rtol=5e-3, atol=0.0)


def test_layers_keep_their_energy_and_lost_layers_their_largest_voxel():
    model, e = _voxels(5000, 0.0, 1.0, 0.0, seed=12)
    data, _ = _voxels(5000, 0.0, 1.0, 0.9, seed=13, energies=e.numpy())
    cal = _fitted(model, data, e)
    x, e2 = _voxels(200, 0.0, 1.0, 0.0, seed=14)
    x[:, :4] = torch.tensor([1e-3, 0.02, 0.015, 0.03])   # layer 0: tiny, all cut by the map
    y = cal(x, e2)
    before = cal.layer_sums(torch.where(x < THR, 0.0, x).double())
    torch.testing.assert_close(cal.layer_sums(y.double()), before, rtol=1e-5, atol=1e-6)
    # layer 0 is emptied by the map and gets its energy back in its largest voxel
    torch.testing.assert_close(y[:, 3], torch.full((200,), 0.065), rtol=1e-5, atol=0.0)
    assert (y[:, :3] == 0).all()
    assert ((y == 0) | (y >= THR)).all() and y.dtype == x.dtype


def test_shapes_are_checked():
    x, e = _voxels(40, 0.0, 1.0, 0.0, seed=15)
    cal = _fitted(x, x, e)
    with pytest.raises(ConfigError, match="incident energies"):
        cal(x, e[:3])
    with pytest.raises(ConfigError, match="12"):
        cal(x[:, :5], e)
    with pytest.raises(ConfigError, match="at least"):
        _fitted(x[:3], x[:3], e[:3], bins=4)
    with pytest.raises(ConfigError, match="one shape"):
        fit_voxel_quantile_calibration(
            VoxelQuantileCalibration.for_geometry(GEO, n_bins=1, n_quantiles=8,
                                                  threshold_mev=THR), x, x[:10], e)
