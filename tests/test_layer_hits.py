"""The hit-count map: each layer's number of hits sent onto the data's at that layer's
energy (known answer on a toy whose data counts follow the energy and whose model counts
scatter), the identity when model and data agree, the voxels it drops and revives, the
layer energies it keeps, and maps stored before it."""

import numpy as np
import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.geometry import CylindricalGeometry
from caloforge.pipelines.voxel_calibration import VoxelCalibrationConfig
from caloforge.transforms import (
    LayerHitCountMap,
    VoxelQuantileCalibration,
    fit_layer_hit_count_map,
    fit_voxel_quantile_calibration,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: 2 layers of 30 voxels each (3 angular x 10 radial bins)
GEO = CylindricalGeometry("toy", r_edges=(tuple(np.arange(11.0)),) * 2, n_alpha=(3, 3))
SIZE = 30


def _showers(n, spread, seed):
    """Layers whose energy E is log-uniform over 10-1000 MeV and whose number of hits is
    about 5 ln(E / 5 MeV) (the data's way: hits are quanta of the energy), scattered by
    ``spread`` hits; the hits sit on random voxels with exponential energies."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 2 * SIZE), dtype=np.float32)
    energy = np.exp(rng.uniform(np.log(10.0), np.log(1000.0), (n, 2)))
    for i in range(n):
        for layer in range(2):
            k = int(np.clip(np.rint(5 * np.log(energy[i, layer] / 5) + spread * rng.normal()),
                            1, SIZE))
            cols = layer * SIZE + rng.choice(SIZE, k, replace=False)
            e = rng.exponential(1.0, k) + 0.1
            x[i, cols] = e / e.sum() * energy[i, layer]
    return torch.as_tensor(x)


def _counts(x):
    return (x.reshape(len(x), 2, SIZE) > 0).sum(-1)


def _layer_energy(x):
    return x.reshape(len(x), 2, SIZE).sum(-1)


def _hit_map(bins=8):
    return LayerHitCountMap(bins, torch.arange(2).repeat_interleave(SIZE), 2)


def _raw(x, seed):
    """A 'raw' model output: the showers plus a faint carpet that ranks the empty voxels."""
    g = torch.Generator().manual_seed(seed)
    return x + 1e-3 * torch.rand(x.shape, generator=g)


def _residual_spread(x):
    """Scatter of the counts about the data's law 5 ln(E / 5 MeV)."""
    expected = 5 * torch.log(_layer_energy(x) / 5)
    return float((_counts(x) - expected).std())


def test_counts_take_the_datas_scatter_at_each_layer_energy():
    data, model = _showers(6000, 0.3, seed=1), _showers(6000, 3.0, seed=2)
    hits = fit_layer_hit_count_map(_hit_map(), model, data)
    fresh = _showers(6000, 3.0, seed=3)
    mapped = hits(fresh, _raw(fresh, 4), _layer_energy(fresh))
    # in every bin of layer energy, the counts take the data's distribution (mean and
    # spread); the model's spread 3 hits to the data's (rounding and the law's rise across
    # the bin included) about 1
    bins_d, bins_m = hits.bins(_layer_energy(data)), hits.bins(_layer_energy(fresh))
    for b in range(hits.n_bins):
        d = _counts(data)[bins_d == b].float()
        m, f = _counts(mapped)[bins_m == b].float(), _counts(fresh)[bins_m == b].float()
        assert float(m.mean()) == pytest.approx(float(d.mean()), abs=0.25)
        assert float(m.std()) == pytest.approx(float(d.std()), abs=0.2)
        assert float(f.std()) > 2 * float(d.std())      # the test can fail
    # which makes the counts follow the layer energy again
    assert _residual_spread(mapped) < 0.6 * _residual_spread(fresh)
    # the mean count per layer stays the data's
    assert float(_counts(mapped).float().mean()) == pytest.approx(
        float(_counts(data).float().mean()), abs=0.2)
    # only hit counts change: every kept hit keeps its energy, every new one is as faint
    # as the faintest hit of its layer
    kept = (mapped > 0) & (fresh > 0)
    assert torch.equal(mapped[kept], fresh[kept])
    new = (mapped > 0) & (fresh == 0)
    assert new.any()


def test_the_map_is_the_identity_when_model_and_data_agree():
    data = _showers(4000, 1.0, seed=5)
    hits = fit_layer_hit_count_map(_hit_map(), data, data)
    for b in range(hits.n_bins):
        for layer in range(2):
            table = hits.table[b, layer].numpy()
            # every count the data has in the bin maps onto itself (a count seen in
            # another bin only may move: it has no level of its own in this one)
            bin_of = hits.bins(_layer_energy(data))[:, layer].numpy()
            in_bin = np.unique(_counts(data)[bin_of == b, layer].numpy())
            assert len(in_bin) > 3 and (table[in_bin] == in_bin).all()
    assert torch.equal(hits(data, _raw(data, 6), _layer_energy(data)), data)


def test_dropped_hits_are_the_faintest_and_revived_voxels_the_strongest_raw_ones():
    y = torch.tensor([[0.0, 5.0, 1.0, 3.0, 0.0, 0.0]])
    x = torch.tensor([[0.2, 5.0, 1.0, 3.0, 0.9, 0.0]])
    hit = y > 0
    dropped = LayerHitCountMap._edit(y, x, hit, torch.tensor([-2]))
    assert dropped.tolist() == [[0.0, 5.0, 0.0, 0.0, 0.0, 0.0]]
    revived = LayerHitCountMap._edit(y, x, hit, torch.tensor([1]))
    # voxel 4 (raw 0.9) comes back before voxel 0 (raw 0.2), as faint as the faintest hit
    assert revived.tolist() == [[0.0, 5.0, 1.0, 3.0, 1.0, 0.0]]
    # a voxel without raw energy never comes back: asking for 5 more gives the 2 there are
    assert int((LayerHitCountMap._edit(y, x, hit, torch.tensor([5])) > 0).sum()) == 5


def test_an_empty_layer_stays_empty_and_a_layer_with_hits_keeps_one():
    data, model = _showers(3000, 0.3, seed=7), _showers(3000, 3.0, seed=8)
    hits = fit_layer_hit_count_map(_hit_map(), model, data)
    assert (hits.table[..., 0] == 0).all()
    assert (hits.table[..., 1:] >= 1).all()


def test_layers_of_unequal_size_are_mapped_as_equal_ones():
    data, model = _showers(3000, 0.3, seed=9), _showers(3000, 3.0, seed=10)
    equal = fit_layer_hit_count_map(_hit_map(), model, data)
    # the same voxels, with a third layer of a single voxel that is never hit
    lov = torch.cat([torch.arange(2).repeat_interleave(SIZE), torch.tensor([2])])
    pad = lambda t: torch.cat([t, torch.zeros(len(t), 1)], 1)  # noqa: E731
    unequal = fit_layer_hit_count_map(LayerHitCountMap(8, lov, 3), pad(model), pad(data))
    assert unequal.layer_size is None
    fresh = _showers(500, 3.0, seed=11)
    raw = _raw(fresh, 12)
    e = _layer_energy(fresh)
    a = equal(fresh, raw, e)
    b = unequal(pad(fresh), pad(raw), torch.cat([e, torch.zeros(len(e), 1)], 1))
    assert torch.equal(b[:, :-1], a)


def _calibrations(hit_count_bins):
    data, model = _showers(4000, 0.3, seed=13), _showers(4000, 3.0, seed=14)
    energies = torch.full((len(data),), 2000.0)
    cal = VoxelQuantileCalibration.for_geometry(GEO, n_bins=1, n_quantiles=16,
                                                threshold_mev=0.01, binning="layer",
                                                hit_count_bins=hit_count_bins)
    fit_voxel_quantile_calibration(cal, model, data, energies)
    if hit_count_bins:
        fit_layer_hit_count_map(cal.hit_counts, cal(model, energies), data)
    return cal


def test_the_voxel_calibration_maps_the_counts_and_keeps_the_layer_energies():
    cal = _calibrations(8)
    assert cal.hit_counts.is_on
    fresh = _raw(_showers(1000, 3.0, seed=15), 16)
    e = torch.full((len(fresh),), 2000.0)
    out = cal(fresh, e)
    # the carpet is below the threshold: the layers keep the energy of the rest
    above = torch.where(fresh < 0.01, torch.zeros_like(fresh), fresh)
    torch.testing.assert_close(_layer_energy(out), _layer_energy(above), rtol=1e-5, atol=0)
    without = _calibrations(0)
    assert not without.hit_counts.is_on
    assert _residual_spread(out) < 0.7 * _residual_spread(without(fresh, e))


def test_maps_stored_before_the_hit_count_map_load_with_it_off():
    cal = _calibrations(8)
    state = {k: v for k, v in cal.state_dict().items() if not k.startswith("hit_counts.")}
    old = VoxelQuantileCalibration.for_geometry(GEO, n_bins=1, n_quantiles=16,
                                                threshold_mev=0.01, binning="layer",
                                                hit_count_bins=8)
    old.load_state_dict(state)
    assert not old.hit_counts.is_on
    fresh = _raw(_showers(200, 3.0, seed=17), 18)
    e = torch.full((len(fresh),), 2000.0)
    assert torch.equal(old(fresh, e), _calibrations(0)(fresh, e))
    # and a stored map with the counts reloads them
    again = VoxelQuantileCalibration.for_geometry(GEO, n_bins=1, n_quantiles=16,
                                                  threshold_mev=0.01, binning="layer",
                                                  hit_count_bins=8)
    again.load_state_dict(cal.state_dict())
    assert torch.equal(again(fresh, e), cal(fresh, e))


def test_bad_settings_and_shapes_are_refused():
    with pytest.raises(ConfigError, match="hit_count_bins"):
        VoxelCalibrationConfig(hit_count_bins=-1)
    with pytest.raises(ConfigError, match="hit-count map"):
        LayerHitCountMap(-1, torch.zeros(4, dtype=torch.long), 1)
    with pytest.raises(ConfigError, match="hit-count map needs showers"):
        fit_layer_hit_count_map(_hit_map(), torch.zeros(10, 7), torch.zeros(10, 7))


def test_calodream_configs_stored_before_the_hit_count_map_migrate_to_none():
    from caloforge.configs import get_preset
    from caloforge.pipelines.registry import config_from_manifest, config_to_manifest

    body = config_to_manifest(get_preset("calodream-ds2-tiny"))
    assert body["calibration"]["hit_count_bins"] > 0
    body["config_version"] = 3
    del body["calibration"]["hit_count_bins"]
    _, migrated = config_from_manifest(body, "old", expect="calodream")
    assert migrated.calibration.hit_count_bins == 0 and migrated.calibration.enabled
