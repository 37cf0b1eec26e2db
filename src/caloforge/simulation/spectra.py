"""Incident-energy spectra, and their command-line syntax.

Syntax of :func:`parse_energy_spectrum` (energies carry a unit MeV, GeV or TeV; a bare
number means MeV)::

    log-uniform:1GeV:1TeV        ln E uniform between the bounds
    powers-of-two:256MeV:4TeV    E = 2^k MeV, k uniform over the powers between the bounds
                                 (bounds rounded to powers of two: 4TeV = 2^22 MeV)
    uniform:10GeV:90GeV          E uniform between the bounds
    fixed:50GeV                  every shower at 50 GeV
    file:PATH                    the incident_energies of an existing CaloChallenge or
                                 point-cloud file, in file order
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CaloforgeError

__all__ = [
    "EnergySpectrum",
    "FileSpectrum",
    "FixedSpectrum",
    "LogUniformSpectrum",
    "PowersOfTwoSpectrum",
    "SpectrumError",
    "UniformSpectrum",
    "parse_energy",
    "parse_energy_spectrum",
]

_UNITS = {"mev": 1.0, "gev": 1e3, "tev": 1e6}
_ENERGY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class SpectrumError(CaloforgeError, ValueError):
    """An energy spectrum description cannot be understood."""


def parse_energy(text: str) -> float:
    """``"50GeV"`` -> 50000.0 (MeV). Units MeV, GeV, TeV (any case); bare numbers are MeV."""
    m = _ENERGY_RE.match(str(text))
    if not m:
        raise SpectrumError(f"cannot read energy {text!r}; write e.g. 50GeV, 256MeV or 1TeV")
    value, unit = float(m.group(1)), m.group(2).lower() or "mev"
    if unit not in _UNITS:
        raise SpectrumError(f"unknown energy unit {m.group(2)!r} in {text!r}; use MeV, GeV or TeV")
    e = value * _UNITS[unit]
    if not (e > 0 and math.isfinite(e)):
        raise SpectrumError(f"energy {text!r} must be positive")
    return e


class EnergySpectrum:
    """A distribution of incident energies."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` incident energies in MeV, shape (n,), float64."""
        raise NotImplementedError

    @property
    def bounds(self) -> tuple[float, float]:
        """(lowest, highest) possible energy in MeV."""
        raise NotImplementedError


def _check_bounds(lo: float, hi: float, what: str) -> None:
    if not lo < hi:
        raise SpectrumError(f"{what}: lower bound {lo:g} MeV must be below upper bound {hi:g} MeV")


@dataclass(frozen=True)
class LogUniformSpectrum(EnergySpectrum):
    """ln E uniform in [low, high] (MeV)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds(self.low, self.high, "log-uniform spectrum")

    def sample(self, n, rng):
        u = rng.random(int(n))
        return self.low * (self.high / self.low) ** u

    @property
    def bounds(self):
        return (self.low, self.high)

    def __str__(self) -> str:
        return f"log-uniform:{self.low:g}MeV:{self.high:g}MeV"


@dataclass(frozen=True)
class UniformSpectrum(EnergySpectrum):
    """E uniform in [low, high] (MeV)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds(self.low, self.high, "uniform spectrum")

    def sample(self, n, rng):
        return rng.uniform(self.low, self.high, int(n))

    @property
    def bounds(self):
        return (self.low, self.high)

    def __str__(self) -> str:
        return f"uniform:{self.low:g}MeV:{self.high:g}MeV"


@dataclass(frozen=True)
class PowersOfTwoSpectrum(EnergySpectrum):
    """E = 2^k MeV with k uniform over the integers from round(log2 low) to round(log2 high).

    Bounds are rounded to the nearest power of two in MeV, so ``256MeV`` to ``4TeV`` gives
    the 15 energies 2^8 ... 2^22 MeV of CaloChallenge dataset 1.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds(self.low, self.high, "powers-of-two spectrum")
        for e in (self.low, self.high):
            k = math.log2(e)
            # Round names like 4TeV to the power of two they stand for (2^22 MeV =
            # 4.19 TeV in the CaloChallenge); refuse bounds far from any power of two.
            if abs(k - round(k)) > 0.1:
                raise SpectrumError(
                    f"powers-of-two spectrum: bound {e:g} MeV is not close to a power of two "
                    "in MeV (e.g. 256MeV, 1GeV = 2^10 MeV, 4TeV = 2^22 MeV)"
                )

    @property
    def values(self) -> np.ndarray:
        """All possible energies (MeV), increasing."""
        k0, k1 = round(math.log2(self.low)), round(math.log2(self.high))
        return 2.0 ** np.arange(k0, k1 + 1)

    def sample(self, n, rng):
        v = self.values
        return v[rng.integers(0, len(v), int(n))]

    @property
    def bounds(self):
        return (self.low, self.high)

    def __str__(self) -> str:
        return f"powers-of-two:{self.low:g}MeV:{self.high:g}MeV"


@dataclass(frozen=True)
class FixedSpectrum(EnergySpectrum):
    """Every shower at ``energy`` MeV."""

    energy: float

    def sample(self, n, rng):
        return np.full(int(n), float(self.energy))

    @property
    def bounds(self):
        return (self.energy, self.energy)

    def __str__(self) -> str:
        return f"fixed:{self.energy:g}MeV"


class FileSpectrum(EnergySpectrum):
    """The incident energies of an existing file, in file order (no randomness).

    Reads ``incident_energies`` of a CaloChallenge file, or ``energies`` (GeV) of a
    showerdata point-cloud file, validated like any input file (shape (N, 1) or (N,), at
    least one, finite, positive). Asking for more showers than the file holds is an error.

    Args:
        path: the file.
        option: the command-line option the file came from (``--energies-from``), named
            in errors.
    """

    def __init__(self, path: str, *, option: str | None = None):
        from ..io.energies import read_incident_energies

        self.path = str(path)
        self.option = option
        self.energies = read_incident_energies(self.path, option=option)

    def sample(self, n, rng):
        n = int(n)
        if n > len(self.energies):
            where = f"{self.option} {self.path}" if self.option else self.path
            raise SpectrumError(
                f"{where} holds {len(self.energies)} incident energies, {n} were requested"
            )
        return self.energies[:n].copy()

    @property
    def bounds(self):
        return (float(self.energies.min()), float(self.energies.max()))

    def __str__(self) -> str:
        return f"file:{self.path}"


_KINDS = {
    "log-uniform": (LogUniformSpectrum, 2),
    "uniform": (UniformSpectrum, 2),
    "powers-of-two": (PowersOfTwoSpectrum, 2),
    "fixed": (FixedSpectrum, 1),
}


def parse_energy_spectrum(text: str, *, option: str | None = None) -> EnergySpectrum:
    """Build a spectrum from its command-line description (see the module docstring).

    ``option`` names the command-line option of a ``file:PATH`` spectrum in its errors
    (e.g. ``--energies-from``).
    """
    if isinstance(text, EnergySpectrum):
        return text
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind == "file":
        if not rest:
            raise SpectrumError("file spectrum needs a path: file:PATH")
        return FileSpectrum(rest, option=option)
    if kind not in _KINDS:
        raise SpectrumError(
            f"unknown energy spectrum {text!r}; use log-uniform:LO:HI, powers-of-two:LO:HI, "
            "uniform:LO:HI, fixed:E or file:PATH (energies like 1GeV, 256MeV, 4TeV)"
        )
    cls, n_args = _KINDS[kind]
    args = [a for a in rest.split(":")] if rest else []
    if len(args) != n_args:
        form = f"{kind}:LO:HI" if n_args == 2 else f"{kind}:E"
        raise SpectrumError(f"energy spectrum {text!r}: expected {form}, got {len(args)} value(s)")
    return cls(*[parse_energy(a) for a in args])
