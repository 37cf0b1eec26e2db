"""CaloDREAM as a :class:`~caloforge.pipelines.ShowerGenerator` (docs/calodream.md).

Generation (Eq. 4, Eq. 14): E_inc -> u ~ p(u | E_inc), 45 sequential 1-D flows of the
energy network -> x ~ p(x | E_inc, u) by integrating the shape network's velocity from
noise at t = 0 to t = 1 (full space: voxel features; latent space: the VAE latent, then
the deterministic decoder) -> inverse transforms, normalised cut, per-layer
renormalisation to the generated layer energies -> showers in MeV.

Each half also runs alone (docs/calolatent.md, "Composing stages of two systems"):
:meth:`CaloDREAM.sample_layer_energies` gives the energy network's layer energies in
MeV, :meth:`CaloDREAM.sample_given_layer_energies` the shape network's showers for
layer energies from anywhere (another system's energy model included).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from ...errors import ConfigError
from ...geometry import CylindricalGeometry
from ...models import ConvVAE3d, TransfusionEnergyNet, ViTVelocityField
from ...sampling import BNSSolver, parse_solver
from ...transforms import VoxelQuantileCalibration
from ..base import check_finite, validate_energies
from ..compose import check_layer_energies
from ..persist import open_model_checkpoint, save_model_checkpoint
from ..voxel_calibration import describe_calibration, load_voxel_calibration
from .config import CaloDREAMConfig
from .transforms import CaloDREAMTransforms

__all__ = ["CaloDREAM", "build_calodream_models"]


def build_calodream_models(config: CaloDREAMConfig) -> dict[str, torch.nn.Module]:
    """Freshly initialised networks: ``energy``, ``shape`` and (latent space) ``vae``."""
    models: dict[str, torch.nn.Module] = {
        "energy": TransfusionEnergyNet(config.energy),
        "shape": ViTVelocityField(config.shape),
    }
    if config.vae is not None:
        models["vae"] = ConvVAE3d(config.vae)
    return models


class CaloDREAM:
    """A trained CaloDREAM generator: energy network + shape network (+ VAE) + transforms,
    with the solvers used at generation and any trained bespoke solvers."""

    def __init__(self, config: CaloDREAMConfig, geometry: CylindricalGeometry,
                 models: dict[str, torch.nn.Module], transforms: CaloDREAMTransforms,
                 bespoke: dict[str, BNSSolver] | None = None,
                 calibration: VoxelQuantileCalibration | None = None) -> None:
        self.config = config
        self.geometry = geometry
        self.energy_net = models["energy"].eval()
        self.shape_net = models["shape"].eval()
        self.vae = models["vae"].eval() if "vae" in models else None
        self.transforms = transforms
        self.bespoke = dict(bespoke or {})
        #: the fitted voxel-energy map (stage ``calibration``; kept on the CPU, where the
        #: decoded showers are), or None: set it to None for the model's own voxels
        self.calibration = calibration
        for s in self.bespoke.values():
            s.eval().requires_grad_(False)
        self.device = torch.device("cpu")
        self.energy_solver = parse_solver(config.energy_solver)
        # resolved on first use: a model whose bespoke solver is still to be trained (the
        # ``bns`` stage itself) must be constructible with a ``bns-N`` default
        self._shape_solver_name = config.shape_solver
        self._shape_solver = None

    @property
    def shape_solver(self):
        """The shape network's solver (``config.shape_solver`` unless changed)."""
        if self._shape_solver is None:
            try:
                self._shape_solver = parse_solver(self._shape_solver_name, trained=self.bespoke)
            except ConfigError as exc:
                raise ConfigError(f"{exc}; train the model's 'bns' stage or choose another "
                                  "solver (--solver rk4-20)") from None
        return self._shape_solver

    # ---------------------------------------------------------------- settings
    def set_solver(self, name: str, *, network: str = "shape") -> None:
        """Choose the ODE solver of the ``shape`` (default) or ``energy`` network, e.g.
        ``rk4-20``, ``midpoint-32``, ``euler-50`` or a trained ``bns-8``."""
        if network == "shape":
            self._shape_solver = parse_solver(name, trained=self.bespoke)
            self._shape_solver_name = self._shape_solver.name
        elif network == "energy":
            if name.lower().startswith("bns"):
                raise ConfigError("bespoke solvers are trained for the shape network only")
            self.energy_solver = parse_solver(name)
        else:
            raise ConfigError(f"network must be 'shape' or 'energy', got {network!r}")

    def to(self, device: str | torch.device) -> CaloDREAM:
        self.device = torch.device(device)
        for m in (self.energy_net, self.shape_net, self.vae, *self.bespoke.values()):
            if m is not None:
                m.to(self.device)
        return self

    @property
    def training_energy_range(self) -> tuple[float, float]:
        """The incident-energy range (MeV) the condition scaling spans."""
        return tuple(self.config.energy_range)

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    # ---------------------------------------------------------------- sampling
    def condition(self, incident_energy: Tensor) -> Tensor:
        """E_inc (N,) MeV -> scaled condition (N, 1) on this device."""
        return self.transforms.condition(incident_energy.cpu()).to(self.device)

    @torch.inference_mode()
    def sample_energies(self, incident_energy: Tensor, *,
                        generator: torch.Generator | None = None) -> Tensor:
        """Energy network only: standardised logit(u) features (N, L) for E_inc (N,) MeV."""
        e = self.condition(incident_energy)
        solver = self.energy_solver
        u = self.energy_net.sample(e, lambda f, x0: solver.solve(f, x0), generator=generator)
        return check_finite(u, "the CaloDREAM energy network's output")

    def shape_condition(self, incident_energy: Tensor, u_features: Tensor) -> Tensor:
        """The shape network's condition [scaled E_inc, u features] (N, 1 + L)."""
        return torch.cat([self.condition(incident_energy), u_features.to(self.device)], dim=1)

    def shape_velocity(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.shape_net(x, t, cond)

    @torch.inference_mode()
    def sample_shapes(self, cond: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Shape network only: the end point x(1) (N, C, L, A, R) for conditions (N, 1 + L)."""
        shape = (len(cond), self.config.shape.in_channels, *self.config.shape.volume)
        x0 = torch.randn(shape, generator=generator, device=self.device)
        x1 = self.shape_solver.solve(self.shape_velocity, x0, cond=cond)
        return check_finite(x1, "the CaloDREAM shape network's output")

    @torch.inference_mode()
    def decode(self, x1: Tensor, cond: Tensor, u_features: Tensor,
               incident_energy: Tensor, *, layer_energies: Tensor | None = None) -> Tensor:
        """Shape-network end points -> showers (N, V) MeV, float32 on the CPU.

        Every layer is renormalised to ``layer_energies`` (N, L) MeV when given, else to
        the energies decoded from ``u_features`` (the energy network's own output).
        """
        t = self.transforms
        if self.is_latent:
            fractions = self.vae.decode(x1, cond).reshape(len(x1), -1).cpu().double()
            check_finite(fractions, "the CaloDREAM VAE decoder's output")
        else:
            fractions = t.fractions_from_voxel_features(x1.reshape(len(x1), -1).cpu())
        if layer_energies is None:
            layers = t.layer_energies(u_features.cpu(), incident_energy)
        else:
            layers = layer_energies.to(torch.float64).cpu()
        showers = t.showers(fractions, layers, cut=self.config.normalised_cut)
        thr = self.config.output_threshold_mev
        if thr > 0:
            showers = torch.where(showers < thr, torch.zeros_like(showers), showers)
        showers = showers.to(torch.float32)
        if self.calibration is not None:
            showers = self.calibration(showers, incident_energy)
        return showers

    # ------------------------------------------------- the two halves, each alone
    def sample_layer_energies(self, incident_energy: Tensor, *,
                              generator: torch.Generator | None = None) -> Tensor:
        """The energy network alone: layer energies (N, L) MeV, float64 on the CPU, for
        E_inc (N,) MeV (the energies :meth:`sample` renormalises its layers to)."""
        e = validate_energies(incident_energy)
        u = self.sample_energies(e, generator=generator)
        return self.transforms.layer_energies(u.cpu(), e)

    def layer_features(self, layer_energies: Tensor, incident_energy: Tensor) -> Tensor:
        """Layer energies (N, L) MeV and E_inc (N,) MeV -> the shape network's u features
        (N, L) float32, the encoding the energy network samples in."""
        t = self.transforms
        u = t.ratios(layer_energies.to(torch.float64).cpu(),
                     incident_energy=incident_energy.to(torch.float64).cpu())
        # energies from another model may give u_0 above 1 (E_tot > f E_inc), where the
        # logit is NaN: condition at the edge of the range instead (the renormalisation
        # still uses the given energies)
        return t.u_std(t.u_logit(u.clamp(0.0, 1.0))).to(torch.float32)

    def sample_given_layer_energies(self, incident_energy: Tensor, layer_energies: Tensor,
                                    *, generator: torch.Generator | None = None) -> Tensor:
        """The shape network alone: showers (N, V) MeV, float32 on the CPU, whose layers
        sum to ``layer_energies`` (N, L) MeV (a layer whose fractions all fall at or below
        ``normalised_cut`` stays empty, as in :meth:`sample`; ``output_threshold_mev``
        removes the voxels below it)."""
        e = validate_energies(incident_energy)
        layers = check_layer_energies(layer_energies, len(e), self.geometry.n_layers)
        u = self.layer_features(layers, e)
        cond = self.shape_condition(e, u)
        x1 = self.sample_shapes(cond, generator=generator)
        return self.decode(x1, cond, u, e, layer_energies=layers)

    # ---------------------------------------------------------------- both
    def sample(self, incident_energy: Tensor, *, batch_size: int = 1000,
               generator: torch.Generator | None = None) -> Tensor:
        """Showers (N, V) in MeV, on the CPU, for incident energies (N,) in MeV."""
        e = validate_energies(incident_energy)
        out = []
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size]
            u = self.sample_energies(eb, generator=generator)
            cond = self.shape_condition(eb, u)
            x1 = self.sample_shapes(cond, generator=generator)
            out.append(self.decode(x1, cond, u, eb))
        if not out:
            return torch.zeros(0, self.geometry.n_voxels)
        return torch.cat(out)

    # ---------------------------------------------------------------- persistence
    def modules(self) -> dict[str, dict[str, torch.nn.Module]]:
        """Stage -> modules, as saved."""
        out = {"energy": {"energy": self.energy_net}, "shape": {"shape": self.shape_net}}
        if self.vae is not None:
            out["vae"] = {"vae": self.vae}
        if self.bespoke:
            out["bns"] = dict(self.bespoke)
        if self.calibration is not None:
            out["calibration"] = {"calibration": self.calibration}
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory holding every stage (no optimiser state)."""
        save_model_checkpoint(path, self.config, self.modules(), self.transforms.state(),
                              self.geometry)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             verify: bool = True) -> CaloDREAM:
        ckpt, config, geometry = open_model_checkpoint(
            path, "calodream", verify=verify,
            required=lambda c: ("energy", "shape") + (("vae",) if c.vae is not None else ()))
        models = build_calodream_models(config)
        for stage, module in models.items():
            ckpt.load_modules(stage, {stage: module})
        bespoke = {}
        if "bns" in ckpt.stages:
            for name, state in ckpt.state_dicts("bns").items():
                bespoke[name] = BNSSolver.from_state_dict(state)
        transforms = CaloDREAMTransforms.from_state(ckpt.manifest.get("transforms", {}))
        calibration = load_voxel_calibration(ckpt, config, geometry)
        return cls(config, geometry, models, transforms, bespoke,
                   calibration).to(map_location)

    def n_parameters(self) -> dict[str, int]:
        out = {"energy": sum(p.numel() for p in self.energy_net.parameters()),
               "shape": sum(p.numel() for p in self.shape_net.parameters())}
        if self.vae is not None:
            out["vae"] = sum(p.numel() for p in self.vae.parameters())
        return out

    def describe(self) -> dict[str, Any]:
        return {"space": self.config.space, "energy_solver": self.energy_solver.name,
                "shape_solver": self._shape_solver_name, "bespoke": sorted(self.bespoke),
                "calibration": describe_calibration(self.calibration),
                "parameters": self.n_parameters()}

    def __repr__(self) -> str:
        p = self.n_parameters()
        parts = ", ".join(f"{k}={v:,} params" for k, v in p.items())
        return (f"CaloDREAM(geometry={self.geometry.name!r}, space={self.config.space!r}, "
                f"{parts}, solvers={self.energy_solver.name}/{self._shape_solver_name})")
