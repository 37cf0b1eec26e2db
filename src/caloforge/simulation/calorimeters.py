"""Detector descriptions the simulator needs beyond the readout geometry.

A :class:`Calorimeter` couples a readout geometry with the homogenised medium the showers
develop in, the depth of every readout layer in radiation lengths, the visible fraction
of every layer and how stored energies relate to the energy deposited in the sensors.

Presets:
- ``ds2``, ``ds3``: the Par04-like W/Si calorimeter of CaloChallenge datasets 2 and 3
  (1.4 mm W + 0.3 mm Si pairs, two per 3.4 mm readout layer; stored energy = silicon
  energy / 0.033; threshold 0.5 keV / 0.033 = 15.1515 keV on stored values).
- ``ds1-photons``: an approximate, ATLAS-like Pb/LAr description (layer depths chosen
  here, see docs/simulation.md); stored energies are calibrated (visible / f_vis).
- ``ild-ecal``: the ILD-like Si-W ECAL of CaloClouds II for point clouds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CaloforgeError
from ..geometry import CylindricalGeometry, PlanarGeometry, get_geometry, ild_ecal

# one definition of the ds2/ds3 sampling fraction and readout threshold, shared with the
# evaluation (0.5 keV in silicon / 0.033)
from ..io.calochallenge import DS23_SAMPLING_FRACTION, DS23_THRESHOLD_MEV
from .materials import LAR, PB, SI, SamplingMedium, W

__all__ = [
    "DS1_PHOTON_LAYER_X0",
    "DS23_SAMPLING_FRACTION",
    "DS23_THRESHOLD_MEV",
    "Calorimeter",
    "SimulationError",
    "calorimeter_for",
    "ild_calorimeter",
    "par04_calorimeter",
]

#: Par04 sampling structure: one W/Si pair (mm).
PAR04_W_MM, PAR04_SI_MM = 1.4, 0.3
#: Longest GFlash step (X0); each readout layer is cut into equal steps no longer than
#: about this (ds2/ds3: 8 steps of 0.1007 X0 per layer; docs/simulation.md, Steps).
STEP_X0 = 0.1
#: Approximate ATLAS-like layer depths (X0) of the dataset-1 photon geometry; layers not
#: listed hold no voxels and no material. Layer 12 stands for everything behind the
#: electromagnetic barrel and catches the tail.
DS1_PHOTON_LAYER_X0 = {0: 2.0, 1: 4.3, 2: 16.0, 3: 2.0, 12: 20.0}
#: Pb/LAr sampling structure standing for the ATLAS accordion (mm).
DS1_PB_MM, DS1_LAR_MM = 1.5, 4.0


class SimulationError(CaloforgeError, ValueError):
    """A simulation request cannot be served (unsupported particle or geometry)."""


@dataclass(frozen=True, eq=False)
class Calorimeter:
    """What GFlash needs to know about a detector.

    Attributes:
        name: label.
        geometry: readout geometry (cylindrical voxels or planar cells).
        medium: homogenised medium of the shower parametrisation.
        layer_x0: depth of every readout layer (X0), shape (L,); 0 for layers without material.
        visible_fraction: share of deposited energy seen by each layer's sensors, (L,).
        stored_per_visible: stored value per MeV seen by the sensors.
        threshold_mev: stored values below this are set to zero.
        default_particle: particle simulated when none is asked for.
        default_spectrum: incident-energy spectrum used when none is given.
    """

    name: str
    geometry: CylindricalGeometry | PlanarGeometry
    medium: SamplingMedium
    layer_x0: np.ndarray
    visible_fraction: np.ndarray
    stored_per_visible: float = 1.0
    threshold_mev: float = 0.0
    default_particle: str = "electron"
    default_spectrum: str = "log-uniform:1GeV:1TeV"
    steps: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lx = np.asarray(self.layer_x0, dtype=np.float64)
        vf = np.asarray(self.visible_fraction, dtype=np.float64)
        if lx.shape != vf.shape or lx.ndim != 1 or np.any(lx < 0) or not np.any(lx > 0):
            raise SimulationError(f"calorimeter {self.name!r}: bad layer depths")
        object.__setattr__(self, "layer_x0", lx)
        object.__setattr__(self, "visible_fraction", vf)
        n_steps = np.where(lx > 0, np.maximum(np.rint(lx / STEP_X0), 1), 0).astype(np.int64)
        step_layer = np.repeat(np.arange(len(lx)), n_steps)
        widths = np.repeat(np.divide(lx, np.maximum(n_steps, 1)), n_steps)
        edges = np.concatenate([[0.0], np.cumsum(widths)])
        object.__setattr__(self, "steps", (edges, step_layer))

    @property
    def n_layers(self) -> int:
        return len(self.layer_x0)

    @property
    def step_edges_x0(self) -> np.ndarray:
        """Step edges along the axis (X0), shape (K + 1,); aligned with the layer edges."""
        return self.steps[0]

    @property
    def step_layer(self) -> np.ndarray:
        """Readout layer of every step, shape (K,)."""
        return self.steps[1]

    @property
    def depth_x0(self) -> float:
        return float(self.layer_x0.sum())

    @property
    def stored_per_deposited(self) -> np.ndarray:
        """Stored value per MeV deposited by the shower in each layer, shape (L,)."""
        return self.visible_fraction * self.stored_per_visible


def par04_calorimeter(geometry: CylindricalGeometry, *,
                      visible_fraction: float | None = None) -> Calorimeter:
    """The Par04-like W/Si sampling calorimeter on a cylindrical readout (ds2, ds3, ...).

    The readout layer depth comes from ``geometry.layer_thickness_mm`` (3.4 mm for ds2/3).
    ``visible_fraction`` defaults to e-hat * f_mip of the W/Si pair (0.0255).
    """
    if geometry.layer_thickness_mm is None:
        raise SimulationError(
            f"geometry {geometry.name!r} does not define a layer thickness; the W/Si "
            "simulator needs one (CylindricalGeometry(layer_thickness_mm=...))"
        )
    medium = SamplingMedium(W, PAR04_W_MM, SI, PAR04_SI_MM)
    pair_mm = PAR04_W_MM + PAR04_SI_MM
    layer_x0 = geometry.layer_thickness_mm / pair_mm * medium.thickness_x0()
    fvis = medium.visible_fraction if visible_fraction is None else visible_fraction
    L = geometry.n_layers
    return Calorimeter(
        name=geometry.name, geometry=geometry, medium=medium,
        layer_x0=np.full(L, layer_x0), visible_fraction=np.full(L, fvis),
        stored_per_visible=1.0 / DS23_SAMPLING_FRACTION, threshold_mev=DS23_THRESHOLD_MEV,
        default_particle="electron", default_spectrum="log-uniform:1GeV:1TeV",
    )


def _ds1_photons(geometry: CylindricalGeometry) -> Calorimeter:
    medium = SamplingMedium(PB, DS1_PB_MM, LAR, DS1_LAR_MM)
    layer_x0 = np.zeros(geometry.n_layers)
    for layer, x0 in DS1_PHOTON_LAYER_X0.items():
        layer_x0[layer] = x0
    fvis = np.full(geometry.n_layers, medium.visible_fraction)
    return Calorimeter(
        name=geometry.name, geometry=geometry, medium=medium, layer_x0=layer_x0,
        visible_fraction=fvis, stored_per_visible=1.0 / medium.visible_fraction,
        threshold_mev=0.0, default_particle="photon",
        default_spectrum="powers-of-two:256MeV:4TeV",
    )


def ild_calorimeter(geometry: PlanarGeometry | None = None, *,
                    alternation: float = 0.05) -> Calorimeter:
    """The ILD-like Si-W ECAL of CaloClouds II as a GFlash calorimeter.

    Each readout layer is an absorber plate plus the silicon behind it; its depth in X0
    uses the real materials, so the 4.2 mm plates of the back section are twice as deep.
    The shower shape uses the W/Si medium of the front section (2.1 mm W + 0.5 mm Si),
    where the maximum lies. The visible fraction of a layer is e-hat * f_mip of its own
    plate, multiplied by (1 + alternation) on even and (1 - alternation) on odd layers to
    model the alternating sampling fraction of the back-to-back sensor pairs.
    Point energies are silicon energies (MeV), no threshold.
    """
    geometry = geometry or ild_ecal()
    medium = SamplingMedium(W, 2.1, SI, geometry.si_mm)
    absorber = np.asarray(geometry.absorber_mm)
    layer_x0 = absorber / W.x0_mm + geometry.si_mm / SI.x0_mm
    fvis = np.array([SamplingMedium(W, a, SI, geometry.si_mm).visible_fraction if a > 0
                     else 1.0 for a in absorber])
    sign = np.where(np.arange(len(absorber)) % 2 == 0, 1.0, -1.0)
    fvis = fvis * (1.0 + alternation * sign)
    return Calorimeter(
        name=geometry.name, geometry=geometry, medium=medium, layer_x0=layer_x0,
        visible_fraction=fvis, stored_per_visible=1.0, threshold_mev=0.0,
        default_particle="photon", default_spectrum="uniform:10GeV:90GeV",
    )


def calorimeter_for(geometry: str | CylindricalGeometry) -> Calorimeter:
    """The calorimeter behind a cylindrical geometry (preset name or geometry object).

    Raises:
        SimulationError: for dataset-1 pions (GFlash has no hadronic showers) and for
            geometries without a known depth structure.
    """
    if isinstance(geometry, str):
        key = geometry.lower().replace("_", "-")
        if key in ("ild", "ild-ecal"):
            raise SimulationError(
                "the ILD ECAL is a point-cloud detector: use simulate_point_clouds "
                "(command line: caloforge simulate --points)"
            )
        geometry = get_geometry(key)
    if not isinstance(geometry, CylindricalGeometry):
        raise SimulationError(f"expected a cylindrical geometry, got {type(geometry).__name__}")
    if geometry.particle == "pion" or geometry.same_binning(get_geometry("ds1-pions")):
        raise SimulationError(
            "geometry 'ds1-pions' needs hadronic showers, which GFlash does not model; "
            "only electromagnetic showers (electrons, positrons, photons) can be simulated"
        )
    if geometry.same_binning(get_geometry("ds1-photons")):
        return _ds1_photons(geometry)
    return par04_calorimeter(geometry)
