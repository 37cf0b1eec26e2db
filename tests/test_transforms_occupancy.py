"""The occupancy calibration: a fitted cut that makes decoded showers as sparse as the data."""

import numpy as np
import pytest
import torch

from caloforge.transforms import OccupancyCalibration, ShowerNormalization, transform_from_state


def _decoded(n=2000, v=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2.0
    f = torch.softmax(logits, dim=-1)
    e = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(np.log(1e3), np.log(1e6),
                                                               generator=g))
    return f, e


def test_fit_reproduces_the_target_occupancy():
    f, e = _decoded()
    eligible = torch.ones_like(f, dtype=torch.bool)
    target = torch.full((len(f),), 12)
    cal = OccupancyCalibration(n_bins=5).fit(f, energy=e, eligible=eligible, target_counts=target)
    kept = cal(f, energy=e).sum(-1).double()
    # before the cut every one of the 60 voxels is occupied; after it, 12 on average
    assert kept.mean().item() == pytest.approx(12.0, abs=0.3)


def test_energy_dependent_target_gives_energy_dependent_cut():
    f, e = _decoded()
    target = torch.where(e > 3e4, 30, 5)
    cal = OccupancyCalibration(n_bins=6).fit(f, energy=e, eligible=torch.ones_like(f).bool(),
                                              target_counts=target)
    kept = cal(f, energy=e).sum(-1).double()
    assert kept[e < 5e3].mean() < 8 and kept[e > 2e5].mean() > 25
    assert cal.cut(torch.tensor([2e3]))[0] > cal.cut(torch.tensor([5e5]))[0]


def test_no_cut_when_the_model_is_already_sparse_enough():
    f, e = _decoded(n=400)
    eligible = f > 0.05  # few voxels pass the readout threshold already
    target = eligible.sum(-1) + 5  # the data has more occupied voxels than that
    cal = OccupancyCalibration(n_bins=3).fit(f, energy=e, eligible=eligible,
                                              target_counts=target)
    assert bool(cal(f, energy=e).all())


def test_largest_fraction_always_kept_and_renormalisation_keeps_r():
    f, e = _decoded(n=300)
    cal = OccupancyCalibration(n_bins=2).fit(f, energy=e, eligible=torch.ones_like(f).bool(),
                                              target_counts=torch.ones(len(f)))
    cal.log_cut[:] = 0.0  # a cut of 1 would remove everything but the maximum
    mask = cal(f, energy=e)
    assert torch.equal(mask.sum(-1), torch.ones(len(f), dtype=torch.long))
    kept = torch.where(mask, f, 0.0)
    renorm = ShowerNormalization("global", [60])(kept)[0]
    assert torch.allclose(renorm.sum(-1), torch.ones(len(f), dtype=torch.float64))


def test_state_round_trip_and_bad_input():
    f, e = _decoded(n=500)
    cal = OccupancyCalibration(n_bins=4).fit(f, energy=e, eligible=torch.ones_like(f).bool(),
                                              target_counts=torch.full((500,), 20))
    again = transform_from_state(cal.state_dict())
    assert torch.equal(again(f, energy=e), cal(f, energy=e))
    with pytest.raises(ValueError, match="same showers"):
        OccupancyCalibration().fit(f, energy=e[:10], eligible=torch.ones_like(f).bool(),
                                   target_counts=torch.ones(500))
    with pytest.raises(TypeError, match="cannot be inverted"):
        cal.inverse(f)


def test_group_max_per_layer():
    norm = ShowerNormalization("layer", [2, 0, 3])
    x = torch.tensor([[1.0, 4.0, 2.0, 7.0, 3.0]])
    assert torch.equal(norm.group_max(x), torch.tensor([[4.0, 4.0, 7.0, 7.0, 7.0]]))
    glob = ShowerNormalization("global", [2, 0, 3])
    assert torch.equal(glob.group_max(x), torch.tensor([[7.0]]))
