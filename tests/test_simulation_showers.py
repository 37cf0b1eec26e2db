"""Voxelised GFlash showers: shapes, reproducibility, sparsity and response."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.geometry import CylindricalGeometry, get_geometry
from caloforge.io import read_showers
from caloforge.simulation import (
    BLOCK_SIZE,
    DS23_SAMPLING_FRACTION,
    DS23_THRESHOLD_MEV,
    simulate_showers,
    simulate_to_file,
)
from caloforge.simulation import __all__ as exported


def test_every_exported_name_imports():
    import caloforge.simulation as sim

    for name in exported:
        assert getattr(sim, name) is not None, name


def test_ds2_default_output_valid():
    d = simulate_showers("ds2", 200, seed=1)
    assert d.showers.shape == (200, 6480) and d.showers.dtype == np.float32
    assert np.all(np.isfinite(d.showers)) and d.showers.min() >= 0
    # Threshold applied to stored values.
    lit = d.showers[d.showers > 0]
    assert lit.min() >= DS23_THRESHOLD_MEV
    # Default spectrum: electrons, log-uniform 1 GeV .. 1 TeV.
    assert d.particle == "electron"
    assert d.incident_energies.min() >= 1e3 and d.incident_energies.max() <= 1e6
    d.validate()


def test_reproducible_and_seed_dependent():
    a = simulate_showers("ds2", 50, seed=3)
    b = simulate_showers("ds2", 50, seed=3)
    c = simulate_showers("ds2", 50, seed=4)
    np.testing.assert_array_equal(a.showers, b.showers)
    np.testing.assert_array_equal(a.incident_energies, b.incident_energies)
    assert not np.array_equal(a.showers, c.showers)


def test_file_output_independent_of_chunk_size(tmp_path):
    n = BLOCK_SIZE + 37
    ref = simulate_showers("ds2", n, seed=9)
    for chunk in (1, 300):
        path = tmp_path / f"c{chunk}.h5"
        simulate_to_file(path, "ds2", n, seed=9, chunk_size=chunk, progress=False)
        back = read_showers(path)
        np.testing.assert_array_equal(back.showers, ref.showers)
        np.testing.assert_allclose(back.incident_energies, ref.incident_energies, rtol=1e-7)


def test_explicit_energies_and_response():
    e = np.full(60, 100e3)
    d = simulate_showers("ds2", energies=e, seed=2)
    np.testing.assert_array_equal(d.incident_energies, e)
    response = d.showers.sum(1) / e
    # Stored response = f_vis / 0.033 times the contained fraction (~0.99 at 100 GeV).
    fvis = 0.0255
    assert response.mean() == pytest.approx(fvis / DS23_SAMPLING_FRACTION, rel=0.03)
    # Resolution close to c_S/sqrt(E) (plus leakage and spot statistics).
    assert 0.9 * 0.011 < response.std() / response.mean() < 1.5 * 0.011


@pytest.mark.parametrize("e_gev, zero_range, lit_range, peak_range", [
    (1, (0.975, 0.995), (60, 160), (2, 5)),
    (1000, (0.40, 0.62), (2500, 3900), (11, 13)),
])
def test_sparsity_and_shape_in_sanity_ranges(e_gev, zero_range, lit_range, peak_range):
    d = simulate_showers("ds2", 24, spectrum=f"fixed:{e_gev}GeV", seed=11)
    lit = (d.showers > 0).sum(1)
    zero = 1 - lit.mean() / d.showers.shape[1]
    assert zero_range[0] < zero < zero_range[1]
    assert lit_range[0] < np.median(lit) < lit_range[1]
    img = d.geometry.to_image(d.showers)
    peak = int(img.sum((2, 3)).mean(0).argmax())
    assert peak_range[0] <= peak <= peak_range[1]
    r = img.sum((1, 2)).sum(0)
    assert 0.70 < r[0] / r.sum() < 0.82  # docs/simulation.md: about 0.75-0.77 in the first r-bin


def test_mean_depth_grows_with_energy():
    depths = []
    for e in (10, 100, 1000):
        d = simulate_showers("ds2", 30, spectrum=f"fixed:{e}GeV", seed=5)
        le = d.geometry.layer_energies(d.showers).sum(0)
        depths.append((le * (np.arange(45) + 0.5)).sum() / le.sum() * 0.8055)  # X0
    steps = np.diff(depths) / np.log(10)
    # d<t>/d ln E is about 1 X0 per e-fold (slope of ln y in T).
    assert np.all((steps > 0.8) & (steps < 1.3))


def test_ds3_shape_and_ds3_light_more_voxels_than_ds2():
    d3 = simulate_showers("ds3", 10, spectrum="fixed:50GeV", seed=1)
    d2 = simulate_showers("ds2", 10, spectrum="fixed:50GeV", seed=1)
    assert d3.showers.shape == (10, 40500)
    # Same energies and stream: same deposited total up to lateral leakage/threshold.
    np.testing.assert_allclose(d3.showers.sum(1), d2.showers.sum(1), rtol=0.05)
    assert (d3.showers > 0).sum() > (d2.showers > 0).sum()


def test_ds1_photons_and_pion_refusal():
    d = simulate_showers("ds1-photons", 30, seed=1)
    assert d.particle == "photon" and d.showers.shape[1] == get_geometry("ds1-photons").n_voxels
    assert np.all(np.isin(d.incident_energies, 2.0 ** np.arange(8, 23)))
    resp = d.showers.sum(1) / d.incident_energies
    assert 0.85 < np.median(resp) < 1.02  # calibrated storage, some leakage
    with pytest.raises(CaloforgeError, match="hadronic"):
        simulate_showers("ds1-pions", 5)
    with pytest.raises(CaloforgeError, match="hadronic"):
        simulate_showers("ds2", 5, particle="pion")


def test_generic_geometry_needs_layer_thickness():
    g = CylindricalGeometry("mine", ((0, 5, 10, 20),) * 20, (8,) * 20, layer_thickness_mm=3.4)
    d = simulate_showers(g, 10, spectrum="fixed:20GeV", seed=0)
    assert d.showers.shape == (10, 20 * 8 * 3) and d.showers.sum() > 0
    bad = CylindricalGeometry("nothick", ((0, 5),) * 3, (1,) * 3)
    with pytest.raises(CaloforgeError, match="layer thickness"):
        simulate_showers(bad, 2)


def test_bad_requests_raise_clear_errors():
    with pytest.raises(CaloforgeError, match="unknown geometry"):
        simulate_showers("ds9", 2)
    with pytest.raises(CaloforgeError, match="unknown particle"):
        simulate_showers("ds2", 2, particle="muon")
    with pytest.raises(CaloforgeError, match="either energies or a spectrum"):
        simulate_showers("ds2", 2, energies=[1e3, 2e3], spectrum="fixed:1GeV")
    with pytest.raises(CaloforgeError, match="positive"):
        simulate_showers("ds2", energies=[1e3, -1.0])
