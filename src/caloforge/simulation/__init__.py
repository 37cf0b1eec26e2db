"""Reference simulators: the GFlash parametrisation of electromagnetic showers.

Voxelised showers on CaloChallenge geometries (:func:`simulate_showers`,
:func:`simulate_to_file`) and point clouds in the ILD-like ECAL
(:func:`simulate_point_clouds`, :func:`point_clouds_to_file`). See docs/simulation.md.
"""

from .api import (
    BLOCK_SIZE,
    point_clouds_to_file,
    simulate_point_clouds,
    simulate_showers,
    simulate_to_file,
)
from .calorimeters import (
    DS23_SAMPLING_FRACTION,
    DS23_THRESHOLD_MEV,
    Calorimeter,
    SimulationError,
    calorimeter_for,
    ild_calorimeter,
    par04_calorimeter,
)
from .gflash import GFlashParameters, StepDeposits, draw_shapes, simulate_steps
from .materials import Material, SamplingMedium
from .spectra import (
    EnergySpectrum,
    FileSpectrum,
    FixedSpectrum,
    LogUniformSpectrum,
    PowersOfTwoSpectrum,
    SpectrumError,
    UniformSpectrum,
    parse_energy,
    parse_energy_spectrum,
)

__all__ = [
    "BLOCK_SIZE",
    "Calorimeter",
    "DS23_SAMPLING_FRACTION",
    "DS23_THRESHOLD_MEV",
    "EnergySpectrum",
    "FileSpectrum",
    "FixedSpectrum",
    "GFlashParameters",
    "LogUniformSpectrum",
    "Material",
    "PowersOfTwoSpectrum",
    "SamplingMedium",
    "SimulationError",
    "SpectrumError",
    "StepDeposits",
    "UniformSpectrum",
    "calorimeter_for",
    "draw_shapes",
    "ild_calorimeter",
    "par04_calorimeter",
    "parse_energy",
    "parse_energy_spectrum",
    "point_clouds_to_file",
    "simulate_point_clouds",
    "simulate_showers",
    "simulate_steps",
    "simulate_to_file",
]
