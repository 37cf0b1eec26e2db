"""Public entry points of the GFlash reference simulator.

Reproducibility: showers are simulated in fixed blocks of :data:`BLOCK_SIZE`; block ``b``
draws from its own stream ``SeedSequence(seed, spawn_key=(1, b))`` and the incident
energies from ``SeedSequence(seed, spawn_key=(0,))``. The output for a given
(seed, n, spectrum, particle, parameters) is therefore identical however it is chunked
for writing (``chunk_size``) and whether it goes to memory or to a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from ..geometry import CylindricalGeometry, PlanarGeometry
from ..io import PointCloudData, PointCloudWriter, ShowerData, ShowerWriter
from .calorimeters import Calorimeter, SimulationError, calorimeter_for, ild_calorimeter
from .gflash import MAX_ENERGY_MEV, MIN_Y, GFlashParameters, StepDeposits, simulate_steps
from .pointcloud import cluster_steps
from .spectra import EnergySpectrum, parse_energy_spectrum
from .voxelize import voxelize_steps

__all__ = [
    "BLOCK_SIZE",
    "point_clouds_to_file",
    "simulate_point_clouds",
    "simulate_showers",
    "simulate_to_file",
]

#: Showers per independently seeded block.
BLOCK_SIZE = 128
#: Default showers per write when streaming to a file.
DEFAULT_CHUNK_SIZE = 1024

_PARTICLES = {
    "electron": "electron", "e-": "electron", "e": "electron",
    "positron": "positron", "e+": "positron",
    "photon": "photon", "gamma": "photon",
}
_HADRONS = {"pion", "pi+", "pi-", "pions", "proton", "neutron", "kaon", "hadron"}
_PDG = {"electron": 11, "positron": -11, "photon": 22}


def _particle(name: str | None, calo: Calorimeter) -> str:
    key = (name or calo.default_particle).strip().lower()
    if key in _HADRONS:
        raise SimulationError(
            f"particle {name!r}: GFlash has no hadronic showers; use electron, positron or photon"
        )
    if key not in _PARTICLES:
        raise SimulationError(
            f"unknown particle {name!r}; use electron, positron or photon"
        )
    return _PARTICLES[key]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=key)))


def _energies(n: int | None, spectrum, energies, seed: int, calo: Calorimeter) -> np.ndarray:
    if energies is not None:
        if spectrum is not None:
            raise SimulationError("give either energies or a spectrum, not both")
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        if n is not None and int(n) != len(e):
            raise SimulationError(f"n = {n} but {len(e)} energies were given")
    else:
        if n is None:
            raise SimulationError("the number of showers n is required without energies")
        if int(n) < 0:
            raise SimulationError(f"number of showers must be >= 0, got {n}")
        spec = parse_energy_spectrum(spectrum if spectrum is not None else calo.default_spectrum)
        e = spec.sample(int(n), _rng(seed, 0))
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise SimulationError("incident energies must be positive and finite (MeV)")
    if len(e) and e.max() > MAX_ENERGY_MEV:
        raise SimulationError(
            f"incident energy {e.max() / 1e6:.4g} TeV is above the GFlash model's range of "
            f"validity (at most {MAX_ENERGY_MEV / 1e6:g} TeV, docs/simulation.md)"
        )
    e_min = MIN_Y * calo.medium.critical_energy_mev
    if len(e) and e.min() < e_min:
        # Checked up front so that no output file is started for an impossible request.
        raise SimulationError(
            f"GFlash needs E >= 10 E_c = {e_min:.3g} MeV in the {calo.name} medium; "
            f"got {e.min():.4g} MeV"
        )
    return e


def _iter_steps(calo: Calorimeter, energies: np.ndarray, seed: int, particle: str,
                params: GFlashParameters) -> Iterator[tuple[np.ndarray, StepDeposits,
                                                            np.random.Generator]]:
    for b, lo in enumerate(range(0, len(energies), BLOCK_SIZE)):
        rng = _rng(seed, 1, b)
        e = energies[lo:lo + BLOCK_SIZE]
        steps = simulate_steps(rng, e, calo.medium, calo.step_edges_x0, params,
                               photon=particle == "photon")
        yield e, steps, rng


def _iter_shower_blocks(calo, energies, seed, particle, params) -> Iterator[ShowerData]:
    for e, steps, rng in _iter_steps(calo, energies, seed, particle, params):
        showers, _ = voxelize_steps(rng, steps, calo.step_layer, calo.stored_per_deposited,
                                    calo.geometry, threshold_mev=calo.threshold_mev)
        yield ShowerData(e, showers, calo.geometry, particle)


def _setup(geometry, n, spectrum, energies, seed, particle, params):
    calo = calorimeter_for(geometry)
    part = _particle(particle, calo)
    params = params or GFlashParameters()
    e = _energies(n, spectrum, energies, seed, calo)
    return calo, part, params, e


def simulate_showers(geometry: str | CylindricalGeometry, n: int | None = None, *,
                     spectrum: str | EnergySpectrum | None = None,
                     energies: np.ndarray | None = None, seed: int = 0,
                     particle: str | None = None,
                     params: GFlashParameters | None = None) -> ShowerData:
    """Simulate ``n`` voxelised GFlash showers in memory.

    Args:
        geometry: preset name (``ds2``, ``ds3``, ``ds1-photons``) or a
            CylindricalGeometry with ``layer_thickness_mm`` (Par04-like W/Si).
        n: number of showers (may be omitted when ``energies`` is given).
        spectrum: spectrum string or object (default: the geometry's, e.g.
            ``log-uniform:1GeV:1TeV`` for ds2/ds3).
        energies: explicit incident energies (MeV), shape (n,).
        seed: integer seed; equal seeds give identical showers.
        particle: ``electron``, ``positron`` or ``photon`` (default: the geometry's).
        params: free parameters of the parametrisation (default: the tuned values).

    Returns:
        ShowerData with incident energies (N,) MeV and showers (N, V) float32 MeV.
    """
    calo, part, params, e = _setup(geometry, n, spectrum, energies, seed, particle, params)
    blocks = list(_iter_shower_blocks(calo, e, seed, part, params))
    if not blocks:
        return ShowerData(e, np.zeros((0, calo.geometry.n_voxels), np.float32),
                          calo.geometry, part)
    return ShowerData.concatenate(blocks)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shower", disable=not enabled, desc=desc, dynamic_ncols=True)


def _chunk_blocks(chunk_size: int) -> int:
    if int(chunk_size) < 1:
        raise SimulationError(f"chunk size must be >= 1, got {chunk_size}")
    return max(1, -(-int(chunk_size) // BLOCK_SIZE))


def simulate_to_file(path: str | os.PathLike, geometry: str | CylindricalGeometry,
                     n: int | None = None, *, spectrum: str | EnergySpectrum | None = None,
                     energies: np.ndarray | None = None, seed: int = 0,
                     particle: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     progress: bool = True, params: GFlashParameters | None = None) -> None:
    """Simulate showers and stream them into a CaloChallenge HDF5 file.

    Memory holds one chunk (``chunk_size`` showers, rounded up to whole blocks of
    :data:`BLOCK_SIZE`) at a time, whatever ``n``. The file appears atomically when done;
    it is identical to writing ``simulate_showers(...)`` with the same arguments.
    """
    calo, part, params, e = _setup(geometry, n, spectrum, energies, seed, particle, params)
    per_chunk = _chunk_blocks(chunk_size)
    attrs = {
        "generator": "caloforge GFlash",
        "seed": int(seed),
        "spectrum": str(spectrum if spectrum is not None else
                        ("explicit" if energies is not None else calo.default_spectrum)),
        "gflash_parameters": json.dumps(asdict(params)),
    }
    with ShowerWriter(path, calo.geometry, particle=part, attrs=attrs) as writer, \
            _progress(len(e), progress, f"simulate {calo.name}") as bar:
        pending: list[ShowerData] = []
        for block in _iter_shower_blocks(calo, e, seed, part, params):
            pending.append(block)
            if len(pending) == per_chunk:
                writer.write(ShowerData.concatenate(pending))
                bar.update(sum(len(p) for p in pending))
                pending = []
        if pending:
            writer.write(ShowerData.concatenate(pending))
            bar.update(sum(len(p) for p in pending))


def _point_setup(n, spectrum, energies, seed, geometry, particle, params, alternation):
    if geometry is not None and not isinstance(geometry, PlanarGeometry):
        raise SimulationError(
            "point clouds need a planar geometry (caloforge.geometry.ild_ecal()); "
            f"got {type(geometry).__name__}"
        )
    calo = ild_calorimeter(geometry, alternation=alternation)
    part = _particle(particle, calo)
    params = params or GFlashParameters()
    e = _energies(n, spectrum, energies, seed, calo)
    return calo, part, params, e


def _iter_cloud_blocks(calo, energies, seed, part, params) -> Iterator[PointCloudData]:
    for e, steps, rng in _iter_steps(calo, energies, seed, part, params):
        pts, counts = cluster_steps(rng, steps, calo.step_layer, calo.visible_fraction,
                                    calo.geometry)
        yield PointCloudData(e, pts, counts, calo.geometry, _PDG[part])


def _concat_clouds(parts: list[PointCloudData]) -> PointCloudData:
    p0 = parts[0]
    return PointCloudData(np.concatenate([p.incident_energies for p in parts]),
                          np.concatenate([p.points for p in parts]),
                          np.concatenate([p.n_points for p in parts]), p0.geometry, p0.pdg)


def simulate_point_clouds(n: int | None = None, *,
                          spectrum: str | EnergySpectrum | None = None,
                          energies: np.ndarray | None = None, seed: int = 0,
                          geometry: PlanarGeometry | None = None, particle: str | None = None,
                          params: GFlashParameters | None = None,
                          alternation: float = 0.05) -> PointCloudData:
    """Simulate ``n`` point-cloud showers in the ILD-like ECAL (photons, 10-90 GeV default).

    Args:
        geometry: planar geometry (default ``caloforge.geometry.ild_ecal()``).
        alternation: relative amplitude of the even/odd layer sampling-fraction alternation.
        Other arguments as :func:`simulate_showers`.

    Returns:
        PointCloudData: points (P, 4) = (x mm, y mm, z layer units, E MeV in silicon),
        n_points (N,), incident energies (N,) MeV.
    """
    calo, part, params, e = _point_setup(n, spectrum, energies, seed, geometry, particle,
                                         params, alternation)
    parts = list(_iter_cloud_blocks(calo, e, seed, part, params))
    if not parts:
        return PointCloudData(e, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                              calo.geometry, _PDG[part])
    return _concat_clouds(parts)


def point_clouds_to_file(path: str | os.PathLike, n: int | None = None, *,
                         spectrum: str | EnergySpectrum | None = None,
                         energies: np.ndarray | None = None, seed: int = 0,
                         geometry: PlanarGeometry | None = None, particle: str | None = None,
                         chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = True,
                         params: GFlashParameters | None = None,
                         alternation: float = 0.05) -> None:
    """Simulate point clouds and stream them into a showerdata-layout file (atomic)."""
    calo, part, params, e = _point_setup(n, spectrum, energies, seed, geometry, particle,
                                         params, alternation)
    per_chunk = _chunk_blocks(chunk_size)
    with PointCloudWriter(path, len(e), pdg=_PDG[part]) as writer, \
            _progress(len(e), progress, f"simulate {calo.name}") as bar:
        pending: list[PointCloudData] = []
        for block in _iter_cloud_blocks(calo, e, seed, part, params):
            pending.append(block)
            if len(pending) == per_chunk:
                writer.write(_concat_clouds(pending))
                bar.update(sum(len(p) for p in pending))
                pending = []
        if pending:
            writer.write(_concat_clouds(pending))
            bar.update(sum(len(p) for p in pending))
