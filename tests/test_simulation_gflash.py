"""The GFlash parametrisation reproduces the specification's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.simulation import (
    DS23_SAMPLING_FRACTION,
    GFlashParameters,
    calorimeter_for,
    draw_shapes,
    simulate_steps,
)
from caloforge.simulation.gflash import longitudinal_means, radial_parameters
from caloforge.simulation.materials import SI, SamplingMedium, W
from caloforge.simulation.voxelize import voxelize_steps

PAR04 = SamplingMedium(W, 1.4, SI, 0.3)


def test_materials_match_spec():
    assert W.critical_energy_mev == pytest.approx(8.00, abs=0.01)
    assert SI.critical_energy_mev == pytest.approx(36.7, abs=0.1)
    d = PAR04.describe()
    expected = {"Z_eff": 72.49, "A_eff": 179.9, "rho_eff": 16.31, "X0_eff_mm": 4.221,
                "Ec_eff_MeV": 8.23, "RM_eff_mm": 10.87, "F_S": 2.483, "e_hat": 0.704}
    for k, v in expected.items():
        assert d[k] == pytest.approx(v, rel=2e-3), k
    assert d["f_mip"] == pytest.approx(0.036, abs=0.001)
    assert d["f_vis"] == pytest.approx(0.0255, abs=0.0005)


# Spec section 4.1 table: E (GeV) -> exp<lnT>, exp<ln a>, s_lnT, s_ln a, rho, N_spot [REC]
TABLE = [(1, 3.56, 2.97, 0.286, 0.336, 0.674, 94), (10, 5.86, 4.09, 0.157, 0.209, 0.621, 852),
         (100, 8.17, 5.22, 0.108, 0.151, 0.568, 7753),
         (1000, 10.47, 6.35, 0.082, 0.119, 0.515, 70541)]


@pytest.mark.parametrize("row", TABLE)
def test_longitudinal_parameters_match_spec_table(row):
    e_gev, t, a, st, sa, rho, nspot = row
    m = longitudinal_means(np.array([np.log(e_gev * 1e3 / PAR04.critical_energy_mev)]), PAR04)
    assert np.exp(m["ln_t"][0]) == pytest.approx(t, abs=0.01)
    assert np.exp(m["ln_a"][0]) == pytest.approx(a, abs=0.01)
    assert m["s_t"][0] == pytest.approx(st, abs=0.001)
    assert m["s_a"][0] == pytest.approx(sa, abs=0.001)
    assert m["rho"][0] == pytest.approx(rho, abs=0.001)
    assert GFlashParameters().n_spots(e_gev * 1e3) == pytest.approx(nspot, abs=0.5, rel=2e-3)


def test_depth_of_maximum_linear_in_ln_y():
    """Median T = exp<ln T> = ln y + t1 - 0.55/F_S - 0.69 (1 - e-hat) (slope 1)."""
    rng = np.random.default_rng(1)
    energies = np.array([10e3, 30e3, 100e3, 300e3, 1000e3])
    medians = []
    for e in energies:
        s = draw_shapes(rng, np.full(20000, e), PAR04, GFlashParameters())
        medians.append(np.exp(np.mean(np.log(s.t_max))))
    ln_y = np.log(energies / PAR04.critical_energy_mev)
    slope, intercept = np.polyfit(ln_y, medians, 1)
    expected = -0.812 - 0.55 / PAR04.sampling_frequency - 0.69 * (1 - PAR04.e_over_mip)
    assert slope == pytest.approx(1.0, abs=0.03)
    assert intercept == pytest.approx(expected, abs=0.15)


def test_correlated_draws_have_spec_correlation():
    rng = np.random.default_rng(2)
    s = draw_shapes(rng, np.full(40000, 100e3), PAR04, GFlashParameters())
    rho = np.corrcoef(np.log(s.t_max), np.log(s.alpha))[0, 1]
    assert rho == pytest.approx(0.784 - 0.023 * np.log(100e3 / PAR04.critical_energy_mev),
                                abs=0.02)
    assert np.all(s.t_max >= 1.0) and np.all(s.alpha >= 1.1)


def test_refuses_energies_below_ten_critical_energies():
    with pytest.raises(CaloforgeError, match="E >= 10 E_c"):
        draw_shapes(np.random.default_rng(0), np.array([50.0]), PAR04, GFlashParameters())


def test_radial_parameters_guards_and_t6():
    tau = np.linspace(0, 30, 61)
    rc, rt, p = radial_parameters(tau, np.log(100.0), PAR04, GFlashParameters())
    assert np.all((p >= 0) & (p <= 1)) and np.all(rc > 0) and np.all(rt > 0)
    # tau is clamped at 10: nothing changes beyond it.
    assert rt[-1] == rt[20]
    _, rt_g4, _ = radial_parameters(tau, np.log(100.0), PAR04, GFlashParameters.geant4_literal())
    assert not np.allclose(rt, rt_g4)


def _steps(e_mev, n, seed=0, photon=False):
    calo = calorimeter_for("ds2")
    rng = np.random.default_rng(seed)
    steps = simulate_steps(rng, np.full(n, e_mev), calo.medium, calo.step_edges_x0,
                           GFlashParameters(), photon=photon)
    return calo, rng, steps


def test_energy_conservation_before_threshold():
    calo, rng, steps = _steps(50e3, 64)
    # Longitudinal: deposited (mean) + leakage = E exactly.
    np.testing.assert_allclose(steps.energy_mean.sum(1) + steps.leakage, 50e3, rtol=1e-9)
    # Lateral: voxels + lateral leakage = smeared deposit * f_vis / 0.033.
    vox, lat = voxelize_steps(rng, steps, calo.step_layer, calo.stored_per_deposited,
                              calo.geometry, threshold_mev=0.0)
    fvis = calo.visible_fraction[0]
    expected = steps.energy.sum(1) * fvis / DS23_SAMPLING_FRACTION
    np.testing.assert_allclose(vox.sum(1, dtype=np.float64) + lat, expected, rtol=1e-5)
    assert np.all(lat > 0) and np.all(lat < 0.2 * expected)


def test_sampling_smear_gives_cs_over_sqrt_e():
    _, _, steps = _steps(10e3, 3000, seed=4)
    ratio = steps.energy.sum(1) / steps.energy_mean.sum(1)
    assert ratio.mean() == pytest.approx(1.0, abs=0.003)
    assert ratio.std() == pytest.approx(0.11 / np.sqrt(10.0), rel=0.06)


def test_mean_depth_follows_profile():
    """Energy-weighted depth of the steps equals the gamma mean alpha/beta (contained)."""
    calo, _, steps = _steps(10e3, 500, seed=5)
    edges = calo.step_edges_x0
    mid = 0.5 * (edges[1:] + edges[:-1])
    depth = (steps.energy_mean * mid).sum(1) / steps.energy_mean.sum(1)
    expected = steps.shapes.alpha / steps.shapes.beta
    contained = steps.leakage < 1e-3 * 10e3  # the back truncates the gamma law
    assert contained.sum() > 300
    np.testing.assert_allclose(depth[contained], expected[contained], atol=0.04)


def test_spot_counts_follow_budget():
    _, _, steps = _steps(100e3, 20, seed=6)
    n = steps.n_spots.sum(1)
    budget = GFlashParameters().n_spots(100e3)
    occupied = (steps.n_spots > 0).sum(1)
    # floor() loses at most one spot per step, max(1, .) adds at most one per step.
    assert np.all(n <= budget + occupied) and np.all(n >= budget * 0.95 - occupied)


def test_photons_start_later():
    _, _, e_steps = _steps(20e3, 400, seed=7)
    _, _, g_steps = _steps(20e3, 400, seed=7, photon=True)
    assert g_steps.start_x0.mean() == pytest.approx(9 / 7, rel=0.1)
    assert np.all(e_steps.start_x0 == 0)
    edges = calorimeter_for("ds2").step_edges_x0
    mid = 0.5 * (edges[1:] + edges[:-1])

    def depth(s):
        return ((s.energy_mean * mid).sum(1) / s.energy_mean.sum(1)).mean()

    assert depth(g_steps) - depth(e_steps) == pytest.approx(9 / 7, abs=0.25)
