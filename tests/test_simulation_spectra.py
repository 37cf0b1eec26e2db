"""Incident-energy spectra: parsing and sampling."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.simulation import (
    FileSpectrum,
    FixedSpectrum,
    LogUniformSpectrum,
    PowersOfTwoSpectrum,
    UniformSpectrum,
    parse_energy,
    parse_energy_spectrum,
)


@pytest.mark.parametrize("text, mev", [("50GeV", 5e4), ("256MeV", 256.0), ("1TeV", 1e6),
                                       ("1.5gev", 1500.0), ("1e3MeV", 1e3), ("300", 300.0)])
def test_parse_energy_units(text, mev):
    assert parse_energy(text) == pytest.approx(mev)


@pytest.mark.parametrize("text", ["abc", "5GeX", "-1GeV", "0GeV", ""])
def test_parse_energy_rejects(text):
    with pytest.raises(CaloforgeError):
        parse_energy(text)


def test_parse_spectrum_kinds():
    s = parse_energy_spectrum("log-uniform:1GeV:1TeV")
    assert isinstance(s, LogUniformSpectrum) and s.bounds == (1e3, 1e6)
    assert isinstance(parse_energy_spectrum("uniform:10GeV:90GeV"), UniformSpectrum)
    assert isinstance(parse_energy_spectrum("fixed:50GeV"), FixedSpectrum)
    p = parse_energy_spectrum("powers-of-two:256MeV:4TeV")
    assert isinstance(p, PowersOfTwoSpectrum)
    np.testing.assert_array_equal(p.values, 2.0 ** np.arange(8, 23))


@pytest.mark.parametrize("text, needle", [
    ("gauss:1GeV:2GeV", "unknown energy spectrum"),
    ("uniform:1GeV", "expected uniform:LO:HI"),
    ("uniform:90GeV:10GeV", "below upper bound"),
    ("powers-of-two:300MeV:4TeV", "power of two"),
    ("fixed:1GeV:2GeV", "expected fixed:E"),
    ("log-uniform:1GeV:1XeV", "unit"),
    ("file:", "needs a path"),
])
def test_parse_spectrum_errors_name_the_problem(text, needle):
    with pytest.raises(CaloforgeError, match=needle):
        parse_energy_spectrum(text)


def test_sampling_within_bounds_and_shapes():
    rng = np.random.default_rng(0)
    e = parse_energy_spectrum("log-uniform:1GeV:1TeV").sample(20000, rng)
    assert e.shape == (20000,) and e.min() >= 1e3 and e.max() <= 1e6
    # ln E uniform: mean of log10(E/GeV) is 1.5, std 3/sqrt(12).
    x = np.log10(e / 1e3)
    assert abs(x.mean() - 1.5) < 0.03 and abs(x.std() - 3 / np.sqrt(12)) < 0.03
    u = parse_energy_spectrum("uniform:10GeV:90GeV").sample(20000, rng)
    assert u.min() >= 1e4 and u.max() <= 9e4 and abs(u.mean() - 5e4) < 600
    p = parse_energy_spectrum("powers-of-two:256MeV:4TeV").sample(30000, rng)
    vals, counts = np.unique(p, return_counts=True)
    assert len(vals) == 15 and counts.min() > 1700
    assert np.all(parse_energy_spectrum("fixed:50GeV").sample(5, rng) == 5e4)


def test_same_rng_state_same_energies():
    s = parse_energy_spectrum("log-uniform:1GeV:1TeV")
    a = s.sample(100, np.random.default_rng(7))
    b = s.sample(100, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_file_spectrum(tmp_path):
    path = tmp_path / "e.h5"
    energies = np.array([[1000.0], [2000.0], [4000.0]])
    with h5py.File(path, "w") as f:
        f["incident_energies"] = energies
    s = parse_energy_spectrum(f"file:{path}")
    assert isinstance(s, FileSpectrum)
    np.testing.assert_array_equal(s.sample(2, None), [1000.0, 2000.0])
    with pytest.raises(CaloforgeError, match="holds 3"):
        s.sample(4, None)
    with pytest.raises(CaloforgeError, match="does not exist"):
        parse_energy_spectrum(f"file:{tmp_path / 'missing.h5'}")
