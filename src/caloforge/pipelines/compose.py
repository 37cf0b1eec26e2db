"""Stages of two systems generating together: one model's layer energies, another's shapes.

CaloDREAM and CaloLatent both factor generation as E_inc -> layer energies (N, L) MeV ->
shapes given (E_inc, layer energies) -> voxels whose layers sum to those energies. Each
shape model encodes the layer energies in its own preprocessing, so the two halves meet
in MeV and any layer-energy model can feed any shape model of the same geometry::

    composed = ComposedGenerator(energy_model=dream, shape_model=latent)
    showers = composed.sample(e_inc, generator=torch.Generator().manual_seed(0))

``caloforge generate SHAPE_MODEL --layer-energies-from ENERGY_MODEL`` builds one from two
checkpoints (:func:`compose_checkpoints`). Nothing here names a system: a model offers a
half by having the method (:class:`LayerEnergyModel`, :class:`ShapeModel`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..geometry import CylindricalGeometry
from .base import check_finite, validate_energies

__all__ = [
    "ComposedGenerator",
    "LayerEnergyModel",
    "ShapeModel",
    "check_layer_energies",
    "compose_checkpoints",
]


@runtime_checkable
class LayerEnergyModel(Protocol):
    """The first half of a factored generator: layer energies given the incident energy."""

    geometry: CylindricalGeometry

    def sample_layer_energies(self, incident_energy: Tensor, *,
                              generator: torch.Generator | None = None) -> Tensor:
        """Incident energies (N,) MeV -> layer energies (N, L) MeV, float, >= 0."""
        ...


@runtime_checkable
class ShapeModel(Protocol):
    """The second half: voxels given the incident energy and the layer energies."""

    geometry: CylindricalGeometry

    def sample_given_layer_energies(self, incident_energy: Tensor, layer_energies: Tensor,
                                    *, generator: torch.Generator | None = None) -> Tensor:
        """E_inc (N,) and layer energies (N, L), MeV -> voxels (N, V) MeV whose layer sums
        equal the given energies up to the model's threshold."""
        ...


def check_layer_energies(layer_energies: Any, n: int, n_layers: int) -> Tensor:
    """Layer energies as a float64 (n, n_layers) CPU tensor; ConfigError unless finite and
    non-negative with that shape."""
    e = torch.as_tensor(layer_energies).detach().to("cpu", torch.float64)
    if e.shape != (n, n_layers):
        raise ConfigError(f"layer energies must have shape ({n}, {n_layers}) for {n} incident "
                          f"energies and {n_layers} layers, got {tuple(e.shape)}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise ConfigError("layer energies must be finite and >= 0 (MeV)")
    return e


def _system(model: Any) -> str:
    """The registered pipeline a model belongs to, else its class name."""
    from .registry import get_pipeline, registered_pipelines

    for name in registered_pipelines():
        if isinstance(model, get_pipeline(name).generator):
            return name
    return type(model).__name__


def _offering(method: str) -> str:
    """The registered pipelines whose generators have ``method``, for error messages."""
    from .registry import get_pipeline, registered_pipelines

    names = [n for n in registered_pipelines() if hasattr(get_pipeline(n).generator, method)]
    return ", ".join(names) or "none"


class ComposedGenerator:
    """A :class:`~caloforge.pipelines.ShowerGenerator` from two models: the layer energies
    of ``energy_model``, the shapes of ``shape_model``.

    Per batch the energy model draws the layer energies first, then the shape model its
    noise, from the same ``generator``; so a fresh generator with the same seed makes
    ``energy_model.sample_layer_energies`` give exactly the energies the showers' layers
    were scaled to (one batch).

    Args:
        energy_model: any model with ``sample_layer_energies`` (:class:`LayerEnergyModel`).
        shape_model: any model with ``sample_given_layer_energies`` (:class:`ShapeModel`).
        energy_name, shape_name: how messages and ``repr`` call the two (e.g. the
            checkpoint paths); default: their pipelines.

    Raises:
        ConfigError: a model does not offer its half, the two geometries bin differently
            or have different layer counts, or the two sit on different devices.
    """

    data_kind = "voxels"

    def __init__(self, energy_model: LayerEnergyModel, shape_model: ShapeModel, *,
                 energy_name: str | None = None, shape_name: str | None = None) -> None:
        self.energy_name = energy_name or _system(energy_model)
        self.shape_name = shape_name or _system(shape_model)
        if not callable(getattr(energy_model, "sample_layer_energies", None)):
            raise ConfigError(
                f"{self.energy_name} ({_system(energy_model)}) has no separate layer-energy "
                "model (no sample_layer_energies) to take layer energies from; models that "
                f"have one: {_offering('sample_layer_energies')}")
        if not callable(getattr(shape_model, "sample_given_layer_energies", None)):
            raise ConfigError(
                f"{self.shape_name} ({_system(shape_model)}) cannot generate shapes for given "
                "layer energies (no sample_given_layer_energies); models that can: "
                f"{_offering('sample_given_layer_energies')}")
        self._check_geometries(energy_model.geometry, shape_model.geometry)
        dev_e = torch.device(getattr(energy_model, "device", "cpu"))
        dev_s = torch.device(getattr(shape_model, "device", "cpu"))
        if dev_e != dev_s:
            # one generator drives both: it lives on one device
            raise ConfigError(f"the energy model is on {dev_e}, the shape model on {dev_s}; "
                              "move both to one device (.to(device))")
        self.energy_model = energy_model
        self.shape_model = shape_model
        self._warn_energy_ranges()

    # ---------------------------------------------------------------- checks
    def _check_geometries(self, ge: Any, gs: Any) -> None:
        both = f"{self.energy_name} ({ge.name}) and {self.shape_name} ({gs.name})"
        if getattr(ge, "n_layers", None) != getattr(gs, "n_layers", None):
            raise ConfigError(f"{both} have different layer counts "
                              f"({getattr(ge, 'n_layers', '?')} vs {getattr(gs, 'n_layers', '?')})"
                              ": layer energies cannot pass between them")
        # layer energies are per layer, but the shape model's conditioning was learnt on
        # showers of its own binning: ask for the same binning, not just the same layers
        if type(ge) is not type(gs) or not gs.same_binning(ge):
            raise ConfigError(f"{both} bin their voxels differently: compose models of one "
                              "geometry")
        pe, ps = getattr(ge, "particle", None), getattr(gs, "particle", None)
        if pe != ps:
            warnings.warn(f"{self.energy_name} was made for {pe}s, {self.shape_name} for "
                          f"{ps}s: the layer energies come from another particle's showers",
                          stacklevel=3)

    def _warn_energy_ranges(self) -> None:
        re_ = getattr(self.energy_model, "training_energy_range", None)
        rs = getattr(self.shape_model, "training_energy_range", None)
        if re_ is None or rs is None:
            return
        (elo, ehi), (slo, shi) = re_, rs
        if abs(elo - slo) > 0.1 * slo or abs(ehi - shi) > 0.1 * shi:
            warnings.warn(
                f"{self.energy_name} was trained on {elo:.4g} - {ehi:.4g} MeV, "
                f"{self.shape_name} on {slo:.4g} - {shi:.4g} MeV: outside the overlap one of "
                "them extrapolates", stacklevel=3)

    # ---------------------------------------------------------------- properties
    @property
    def geometry(self) -> CylindricalGeometry:
        """The shape model's geometry (the showers are its voxels)."""
        return self.shape_model.geometry

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.shape_model, "device", "cpu"))

    @property
    def training_energy_range(self) -> tuple[float, float] | None:
        """The overlap of the two models' training ranges (MeV), where both state one;
        None where neither does or the ranges do not overlap."""
        ranges = [r for r in (getattr(self.energy_model, "training_energy_range", None),
                              getattr(self.shape_model, "training_energy_range", None))
                  if r is not None]
        if not ranges:
            return None
        lo, hi = max(float(r[0]) for r in ranges), min(float(r[1]) for r in ranges)
        return (lo, hi) if lo < hi else None

    # ---------------------------------------------------------------- settings
    def to(self, device: str | torch.device) -> ComposedGenerator:
        self.energy_model.to(device)
        self.shape_model.to(device)
        return self

    def set_solver(self, name: str) -> None:
        """Choose the shape model's solver (``caloforge generate --solver``); the energy
        model's is set on :attr:`energy_model` itself."""
        if not callable(getattr(self.shape_model, "set_solver", None)):
            raise ConfigError(f"--solver: {self.shape_name} is not a flow-based model "
                              "(no ODE solver)")
        self.shape_model.set_solver(name)

    # ---------------------------------------------------------------- sampling
    def sample_layer_energies(self, incident_energy: Tensor, *,
                              generator: torch.Generator | None = None) -> Tensor:
        """The energy model's layer energies (N, L) MeV, float64 on the CPU, checked."""
        e = validate_energies(incident_energy)
        layers = self.energy_model.sample_layer_energies(e, generator=generator)
        layers = torch.as_tensor(layers).detach().cpu()
        if layers.shape != (len(e), self.geometry.n_layers):
            raise ConfigError(f"{self.energy_name} returned layer energies of shape "
                              f"{tuple(layers.shape)}, expected ({len(e)}, "
                              f"{self.geometry.n_layers})")
        check_finite(layers, f"the layer energies of {self.energy_name}")
        return layers.to(torch.float64)

    def sample_given_layer_energies(self, incident_energy: Tensor, layer_energies: Tensor,
                                    *, generator: torch.Generator | None = None) -> Tensor:
        """The shape model's showers (N, V) MeV for given layer energies (N, L) MeV."""
        return self.shape_model.sample_given_layer_energies(
            incident_energy, layer_energies, generator=generator)

    def sample(self, incident_energy: Tensor, *, batch_size: int = 1000,
               generator: torch.Generator | None = None) -> Tensor:
        """Showers (N, V) in MeV, float32 on the CPU, for incident energies (N,) MeV."""
        e = validate_energies(incident_energy)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size]
            layers = self.sample_layer_energies(eb, generator=generator)
            showers = self.shape_model.sample_given_layer_energies(eb, layers,
                                                                   generator=generator)
            out.append(showers.detach().cpu().to(torch.float32))
        if not out:
            return torch.zeros(0, self.geometry.n_voxels)
        return torch.cat(out)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        raise ConfigError(f"a composition is two checkpoints, not one: save "
                          f"{self.energy_name} and {self.shape_name} on their own and compose "
                          "them again (caloforge generate SHAPE --layer-energies-from ENERGY)")

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
             ) -> ComposedGenerator:
        raise ConfigError("a composition is two checkpoints, not one: load it with "
                          "compose_checkpoints(shape, energy)")

    def describe(self) -> dict[str, Any]:
        """Facts for ``caloforge info``-like summaries: which model makes which half."""
        out: dict[str, Any] = {"layer_energies": self.energy_name, "shapes": self.shape_name}
        for key, model in (("energy_model", self.energy_model),
                           ("shape_model", self.shape_model)):
            if callable(getattr(model, "describe", None)):
                out[key] = model.describe()
        return out

    def __repr__(self) -> str:
        return (f"ComposedGenerator(layer energies: {self.energy_name}, shapes: "
                f"{self.shape_name}, geometry={self.geometry.name!r})")


def compose_checkpoints(shape: str | os.PathLike, energy: str | os.PathLike, *,
                        map_location: str | torch.device = "cpu",
                        verify: bool = True) -> ComposedGenerator:
    """Load two trained models (checkpoint directories or shipped names) and compose them:
    the layer energies of ``energy``, the shapes of ``shape``."""
    from .loading import load_generator

    shape_model = load_generator(shape, map_location=map_location, verify=verify)
    energy_model = load_generator(energy, map_location=map_location, verify=verify)
    return ComposedGenerator(energy_model, shape_model, energy_name=str(energy),
                             shape_name=str(shape))
