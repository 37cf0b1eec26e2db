"""The CaloClouds II generator: Shower Flow -> N calibration -> PointWise Net (EDM or the
distilled consistency model) -> calibrations -> point clouds (docs/caloclouds.md,
'Generation steps').

Generation order, per batch of incident energies (sorted, so that showers of similar size
share a batch, and returned in the caller's order):

1. the Shower Flow draws the 65 summaries for E_inc and they are post-processed
   (:func:`~caloforge.pipelines.caloclouds.features.decode_shower_flow`);
2. the N calibration maps the flow's N to the number of points that makes this model's
   cell count match the reference's (fitted per model by the ``calibrate`` stages);
3. per-layer counts floor(fraction x N_cal); the network's N condition is their sum;
4. the PointWise Net makes the batch maximum of points for every shower, each with its
   own N condition; the extra points are dropped;
5. calibrations: layer assignment by sorted z, non-positive energies removed, per-layer
   energies rescaled to the flow's, centre of gravity shifted onto the flow's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import CheckpointError, ConfigError
from ...geometry import PlanarGeometry
from ...io import PointCloudData
from ...models import build_model
from ...paths.edm import ConsistencyPreconditioning, EDMPreconditioning
from ...sampling.edm import EDMSampler, parse_edm_sampler
from ..base import check_finite, validate_energies
from ..persist import open_model_checkpoint, save_model_checkpoint
from .calibrations import NCalibration, apply_square_symmetry, calibrate
from .config import CaloClouds2Config
from .data import PointNormaliser
from .features import ShowerFlowScales, decode_shower_flow, shower_flow_context
from .radial_map import RadialMap

__all__ = ["CaloClouds2", "FlowStandardisation", "calibration_from_state", "calibration_state", "concatenate_clouds",
           "edm_preconditioning", "flow_scales"]


#: points per network pass on a CPU when the config leaves it open (see the config)
CPU_POINTS_PER_PASS = 65_536


def edm_preconditioning(config: CaloClouds2Config) -> EDMPreconditioning:
    e = config.edm
    return EDMPreconditioning(sigma_data=e.sigma_data, p_mean=e.p_mean, p_std=e.p_std,
                              sigma_min=e.sigma_min, sigma_max=e.sigma_max)


def flow_scales(config: CaloClouds2Config) -> ShowerFlowScales:
    return ShowerFlowScales(axis_x_mm=config.axis_x_mm, axis_y_mm=config.axis_y_mm)


def concatenate_clouds(parts: list[PointCloudData], geometry: PlanarGeometry | None = None
                       ) -> PointCloudData:
    """Showers of several clouds, one after the other."""
    if not parts:
        return PointCloudData(np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                              np.zeros(0, np.int64), geometry)
    return PointCloudData(np.concatenate([p.incident_energies for p in parts]),
                          np.concatenate([p.points for p in parts]),
                          np.concatenate([p.n_points for p in parts]),
                          geometry if geometry is not None else parts[0].geometry,
                          parts[0].pdg)


@dataclass
class FlowStandardisation:
    """Per-feature standardisation of the Shower Flow's 65 inputs, fitted on the training
    split (ours, on top of the reference's fixed scalings: GFlash's centre of gravity
    spreads by about 0.1 mm, so CoG / 25 mm has a spread of 0.004, which a flow with a
    unit-normal base fits poorly; standardised, every input has unit spread)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> FlowStandardisation:
        x = x.to(torch.float64)
        std = x.std(0)
        # a feature that never varies (a layer no shower reaches) keeps its scale
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        return cls(x.mean(0), std)

    @classmethod
    def identity(cls, n: int) -> FlowStandardisation:
        return cls(torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64))

    def encode(self, x: Tensor) -> Tensor:
        return ((x.to(torch.float64) - self.mean) / self.std).to(x.dtype)

    def decode(self, y: Tensor) -> Tensor:
        return (y.to(torch.float64) * self.std.to(y.device) + self.mean.to(y.device)).to(y.dtype)

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any], n: int) -> FlowStandardisation:
        if set(state) != {"mean", "std"} or len(state["mean"]) != n or len(state["std"]) != n:
            raise CheckpointError(f"stored Shower Flow standardisation must hold {n} means "
                                  "and standard deviations")
        return cls(torch.tensor(state["mean"], dtype=torch.float64),
                   torch.tensor(state["std"], dtype=torch.float64))


def calibration_state(c: NCalibration) -> dict[str, Tensor]:
    """The fitted cubic coefficients as tensors (stored, hashed, with the weights)."""
    return {"p_data": torch.tensor(c.p_data, dtype=torch.float64),
            "p_gen": torch.tensor(c.p_gen, dtype=torch.float64)}


def calibration_from_state(state: dict[str, Tensor]) -> NCalibration:
    return NCalibration(p_data=tuple(float(v) for v in state["p_data"]),
                        p_gen=tuple(float(v) for v in state["p_gen"]))


def _radial_map_from_state(state: dict[str, Tensor], path: Any) -> RadialMap:
    try:
        return RadialMap.from_state(state)
    except (KeyError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable radial map ({exc})") from None


class CaloClouds2(nn.Module):
    """A trained CaloClouds II model (a :class:`~caloforge.pipelines.ShowerGenerator` of
    point clouds: ``sample`` returns :class:`~caloforge.io.PointCloudData`)."""

    data_kind = "points"
    pipeline_name = "caloclouds"
    #: what ``caloforge generate`` draws without --energy (the paper's photons)
    default_energy_spectrum = "uniform:10GeV:90GeV"

    def __init__(self, config: CaloClouds2Config, geometry: PlanarGeometry,
                 shower_flow: nn.Module, pointwise: nn.Module | None,
                 distilled: nn.Module | None = None,
                 calibrations: dict[str, NCalibration] | None = None,
                 transforms: dict[str, Any] | None = None,
                 radial_maps: dict[str, RadialMap] | None = None):
        super().__init__()
        self.config = config
        self.geometry = geometry
        self.shower_flow = shower_flow.eval()
        self.pointwise = pointwise.eval() if pointwise is not None else None
        self.distilled = distilled.eval() if distilled is not None else None
        self.calibrations = dict(calibrations or {})
        #: the fitted radial map of each model kind (docs/caloclouds.md, 'The radial map');
        #: ``model.radial_maps.clear()`` generates without it, as the paper does
        self.radial_maps = dict(radial_maps or {})
        self.transforms = dict(transforms or {})
        self.normaliser = PointNormaliser.for_geometry(geometry, config.e_max_mev,
                                                       config.max_points)
        self.precond = edm_preconditioning(config)
        self.cm_precond = ConsistencyPreconditioning(**vars(self.precond))
        n_features = config.shower_flow.features
        stored = self.transforms.get("shower_flow")
        self.flow_scaling = (FlowStandardisation.from_state(stored, n_features) if stored
                             else FlowStandardisation.identity(n_features))
        self.sampler: EDMSampler = self._parse(config.sampler)

    # ------------------------------------------------------------ settings
    def _parse(self, name: str) -> EDMSampler:
        e = self.config.edm
        sampler = parse_edm_sampler(name, sigma_min=e.sigma_min, sigma_max=e.sigma_max,
                                    rho=e.rho)
        if sampler.method == "consistency" and self.distilled is None:
            raise ConfigError(f"sampler {name!r} needs the distilled model; this checkpoint has "
                              "none (train the distill stage)")
        if sampler.method != "consistency" and self.pointwise is None:
            raise ConfigError(f"sampler {name!r} needs the diffusion model")
        return sampler

    def set_solver(self, name: str) -> None:
        """Choose the sampler: ``heun-13`` (the paper's 25 evaluations), ``euler-N``,
        ``heun-N``, or ``consistency-K`` (the distilled model, K evaluations)."""
        self.sampler = self._parse(name)

    @property
    def model_kind(self) -> str:
        """"distilled" when the sampler is a consistency sampler, else "diffusion"."""
        return "distilled" if self.sampler.method == "consistency" else "diffusion"

    def nfe(self) -> int:
        """Network evaluations per batch of the PointWise Net (Shower Flow not counted)."""
        return self.sampler.nfe

    @property
    def device(self) -> torch.device:
        return next(self.shower_flow.parameters()).device

    @property
    def training_energy_range(self) -> tuple[float, float] | None:
        r = self.transforms.get("caloclouds", {}).get("energy_range_mev")
        return (float(r[0]), float(r[1])) if r else None

    # ------------------------------------------------------------ sampling
    def _n_calibration(self, kind: str | None = None) -> NCalibration:
        return self.calibrations.get(kind or self.model_kind, NCalibration())

    def _denoiser(self, cond: Tensor):
        if self.sampler.method == "consistency":
            return lambda x, s: self.cm_precond.denoise(self.distilled, x, s, cond=cond)
        return lambda x, s: self.precond.denoise(self.pointwise, x, s, cond=cond)

    @torch.no_grad()
    def _sample_sorted(self, e: Tensor, generator: torch.Generator | None,
                       calibrate_n: bool) -> PointCloudData:
        dev = self.device
        raw = self.shower_flow.sample(shower_flow_context(e.to(dev)).to(torch.float32),
                                      generator=generator)
        check_finite(raw, "Shower Flow samples")
        summary = decode_shower_flow(self.flow_scaling.decode(raw), flow_scales(self.config),
                                     n_layers=self.geometry.n_layers,
                                     max_points=self.config.max_points,
                                     min_e_vis_mev=self.config.min_e_vis_mev)
        n_flow = summary.n_points
        n_cal = (self._n_calibration()(n_flow, max_points=self.config.max_points)
                 if calibrate_n else n_flow)
        layer_points = summary.layer_points(n_cal)
        n = layer_points.sum(1)
        width = int(n.max()) if len(n) else 0
        noise = torch.randn(len(e), width, 4, generator=generator, device=dev)
        cond = self.normaliser.condition(e.to(dev), n)
        x = self.sampler.sample(self._denoiser(cond), noise, generator=generator)
        check_finite(x, "generated points")
        points = self.normaliser.decode(x)
        batch = calibrate(points, n, summary, layer_points)
        radial = self.radial_maps.get(self.model_kind)
        if radial is not None:  # step 10, after the CoG shift (radial_map.py says why)
            valid = torch.arange(batch.points.shape[1], device=dev) < batch.n_points[:, None]
            batch.points = radial.apply(batch.points, valid, e.to(dev))
        if self.config.symmetrise:  # step 11
            element = torch.randint(0, 8, (len(e),), generator=generator, device=dev)
            batch.points = apply_square_symmetry(batch.points, batch.n_points, element,
                                                 (self.config.axis_x_mm, self.config.axis_y_mm))
        return batch.to_point_cloud_data(e.to(torch.float32).cpu())

    def _split(self, order_e: Tensor) -> list[slice]:
        # bounded memory: a pass holds (showers x their largest N) points; the Shower Flow
        # N is not known yet, so the budget assumes max_points per shower
        budget = self.config.max_points_per_pass
        if budget is None:
            budget = 2_000_000 if self.device.type == "cuda" else CPU_POINTS_PER_PASS
        per = max(1, budget // self.config.max_points)
        return [slice(lo, lo + per) for lo in range(0, len(order_e), per)]

    def sample(self, incident_energy: Tensor, *, batch_size: int = 100,
               generator: torch.Generator | None = None,
               calibrate_n: bool = True) -> PointCloudData:
        """One point cloud per incident energy (MeV), in the given order.

        ``calibrate_n=False`` skips the N calibration (the ``calibrate`` stage's bootstrap
        pass). The random stream depends on ``generator``, the energies, ``batch_size``
        and the points per pass (``config.max_points_per_pass``, by default per device).
        """
        e = validate_energies(incident_energy)
        order = torch.argsort(e, stable=True)
        parts: list[PointCloudData] = []
        for lo in range(0, len(e), batch_size):
            eb = e[order[lo:lo + batch_size]]
            for sl in self._split(eb):
                parts.append(self._sample_sorted(eb[sl], generator, calibrate_n))
        sorted_clouds = concatenate_clouds(parts, self.geometry)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return sorted_clouds[inverse.numpy()] if len(e) else sorted_clouds

    # ------------------------------------------------------------ persistence
    def stage_modules(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {"showerflow": {"shower_flow": self.shower_flow}}
        if self.pointwise is not None:
            out["diffusion"] = {"pointwise_ema": self.pointwise}
        if self.distilled is not None:
            out["distill"] = {"target": self.distilled}
        for kind, stage in (("diffusion", "calibrate"), ("distilled", "calibrate_distilled")):
            fits: dict[str, Any] = {}
            if kind in self.calibrations and self.calibrations[kind].fitted:
                fits["n_calibration"] = calibration_state(self.calibrations[kind])
            if kind in self.radial_maps:
                fits["radial_map"] = self.radial_maps[kind].state()
            if fits:
                out[stage] = fits
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory holding every stage (no optimiser state)."""
        save_model_checkpoint(path, self.config, self.stage_modules(), self.transforms,
                              self.geometry)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             verify: bool = True) -> CaloClouds2:
        ckpt, config, geometry = open_model_checkpoint(path, "caloclouds", verify=verify,
                                                       required=("showerflow",))
        if "diffusion" not in ckpt.stages and "distill" not in ckpt.stages:
            raise CheckpointError(f"checkpoint {path} has neither a diffusion nor a distilled "
                                  "model; train the diffusion stage")
        flow = build_model("shower_flow", config.shower_flow)
        ckpt.load_modules("showerflow", {"shower_flow": flow})
        pointwise = distilled = None
        if "diffusion" in ckpt.stages:
            pointwise = build_model("pointwise_net", config.pointwise)
            ckpt.load_modules("diffusion", {"pointwise_ema": pointwise})
        if "distill" in ckpt.stages:
            distilled = build_model("pointwise_net", config.pointwise)
            ckpt.load_modules("distill", {"target": distilled})
        calibrations, radial_maps = {}, {}
        for kind, stage in (("diffusion", "calibrate"), ("distilled", "calibrate_distilled")):
            if stage in ckpt.stages:
                states = ckpt.state_dicts(stage)
                if "n_calibration" in states:
                    calibrations[kind] = calibration_from_state(states["n_calibration"])
                # stages fitted before the radial map existed have none
                if "radial_map" in states:
                    radial_maps[kind] = _radial_map_from_state(states["radial_map"], path)
        if pointwise is None and config.sampler.startswith(("heun", "euler")):
            config.sampler = "consistency-1"
        model = cls(config, geometry, flow, pointwise, distilled, calibrations,
                    ckpt.manifest.get("transforms", {}), radial_maps)
        return model.to(map_location)

    def describe(self) -> dict[str, Any]:
        return {"sampler": self.sampler.name, "nfe": self.nfe(),
                "models": [k for k, m in (("diffusion", self.pointwise),
                                          ("distilled", self.distilled)) if m is not None],
                "n_calibration": sorted(k for k, c in self.calibrations.items() if c.fitted),
                "radial_map": sorted(self.radial_maps),
                "parameters": {k: sum(p.numel() for p in m.parameters())
                               for k, m in (("shower_flow", self.shower_flow),
                                            ("pointwise", self.pointwise),
                                            ("distilled", self.distilled)) if m is not None}}

    def __repr__(self) -> str:
        return (f"CaloClouds2(geometry={self.geometry.name!r}, sampler={self.sampler.name}, "
                f"models={self.describe()['models']})")
