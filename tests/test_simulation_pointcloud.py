"""ILD-like point clouds of GFlash spots."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.geometry import get_geometry, ild_ecal
from caloforge.io import read_point_clouds
from caloforge.simulation import ild_calorimeter, point_clouds_to_file, simulate_point_clouds


@pytest.fixture(scope="module")
def clouds():
    return simulate_point_clouds(150, seed=2)


def test_points_layout_and_counts(clouds):
    pc = clouds
    assert pc.points.shape[1] == 4 and len(pc) == 150
    assert pc.n_points.sum() == len(pc.points) and np.all(pc.n_points > 100)
    assert pc.pdg == 22
    e = pc.incident_energies
    assert e.min() >= 1e4 and e.max() <= 9e4
    z = pc.points[:, 2]
    assert z.min() >= 0 and z.max() < 30
    layers = np.floor(z).astype(int)
    assert len(np.unique(layers)) == 30
    g = ild_ecal()
    assert np.abs(pc.points[:, 0]).max() < g.half_width_x_mm
    assert np.abs(pc.points[:, 1]).max() < g.half_width_y_mm
    # Points sit on the 6x6 sub-cell grid: no two points of a shower share (layer, x, y).
    s0 = pc.shower(0)
    assert len(np.unique(s0[:, :3], axis=0)) == len(s0)
    pc.validate()


def test_energy_sums_match_visible_fraction(clouds):
    pc = clouds
    calo = ild_calorimeter()
    per_shower = np.bincount(pc.shower_index(), weights=pc.points[:, 3], minlength=len(pc))
    ratio = per_shower / pc.incident_energies
    # Mean visible fraction weighted by the longitudinal profile: between the two
    # sections' values, minus a little leakage.
    lo, hi = calo.visible_fraction.min(), calo.visible_fraction.max()
    assert lo * 0.85 < ratio.mean() < hi
    assert ratio.std() / ratio.mean() < 0.15
    # More energy gives more points.
    assert np.corrcoef(pc.incident_energies, pc.n_points)[0, 1] > 0.8


def test_alternating_sampling_fraction_visible(clouds):
    pc = clouds
    layers = np.floor(pc.points[:, 2]).astype(int)
    le = np.bincount(layers, weights=pc.points[:, 3], minlength=30)
    # Around the maximum (layers 6-17) even layers are systematically higher than the
    # mean of their odd neighbours.
    even = np.arange(6, 18, 2)
    ratio = le[even] / (0.5 * (le[even - 1] + le[even + 1]))
    assert np.all(ratio > 1.0) and ratio.mean() > 1.05
    flat = simulate_point_clouds(150, seed=2, alternation=0.0)
    lf = np.bincount(np.floor(flat.points[:, 2]).astype(int), weights=flat.points[:, 3],
                     minlength=30)
    rf = lf[even] / (0.5 * (lf[even - 1] + lf[even + 1]))
    assert abs(rf.mean() - 1.0) < abs(ratio.mean() - 1.0)


def test_point_cloud_file_round_trip(tmp_path):
    path = tmp_path / "pc.h5"
    point_clouds_to_file(path, 40, seed=5, chunk_size=16, progress=False)
    back = read_point_clouds(path)
    ref = simulate_point_clouds(40, seed=5)
    np.testing.assert_array_equal(back.n_points, ref.n_points)
    np.testing.assert_allclose(back.points, ref.points, rtol=1e-6, atol=1e-6)


def test_point_clouds_refuse_cylindrical_geometry():
    with pytest.raises(CaloforgeError, match="planar"):
        simulate_point_clouds(2, geometry=get_geometry("ds2"))
