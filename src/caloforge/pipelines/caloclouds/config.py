"""CaloClouds II configuration.

Everything the paper states is taken from it; what it leaves open follows the readings of
``docs/caloclouds.md`` (the authors' public code where it settles a point), and
every choice of ours is marked "ours" next to the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...errors import ConfigError
from ...geometry import PlanarGeometry, named_geometry
from ...models.flows import ShowerFlowConfig
from ...models.pointcloud import PointWiseNetConfig
from ...training import TrainerConfig

__all__ = ["CaloClouds2Config", "CaloClouds2Training", "DistillationSettings", "EDMSettings"]


def _paper_trainer(steps: int, batch: int) -> TrainerConfig:
    # §3.3: Adam, fixed lr 1e-4 (diffusion and distillation); reference code: gradient
    # clipping at 10, no weight decay
    return TrainerConfig(max_steps=steps, optimizer="adam", schedule="constant",
                         batch_size=batch, lr=1e-4, warmup_steps=0, grad_clip=10.0,
                         weight_decay=0.0, log_every=200, val_every=20_000, val_batches=20,
                         checkpoint_every=20_000)


def _flow_trainer() -> TrainerConfig:
    # §3: the Shower Flow trains for 350k iterations (docs/caloclouds.md, A9); reference
    # code: Adam, lr 5e-5, batch 2048
    return TrainerConfig(max_steps=350_000, optimizer="adam", schedule="constant",
                         batch_size=2048, lr=5e-5, warmup_steps=0, log_every=200,
                         val_every=10_000, val_batches=10, checkpoint_every=10_000)


@dataclass
class CaloClouds2Training:
    """Trainer settings keyed by stage name (``training.showerflow``, ``.diffusion``,
    ``.distill``). The diffusion model's EMA is the stage's own (``edm.ema_max``,
    ``edm.ema_power``): the trainer's constant-decay EMA stays off."""

    showerflow: TrainerConfig = field(default_factory=_flow_trainer)
    # §3.3: 2M iterations at batch 128; the EMA is the final model
    diffusion: TrainerConfig = field(default_factory=lambda: _paper_trainer(2_000_000, 128))
    # §3.3: 1M iterations at batch 256; the target network (an EMA of the student with
    # mu = 0.95, DistillationSettings.target_ema) is the final model, not a trainer EMA
    distill: TrainerConfig = field(default_factory=lambda: _paper_trainer(1_000_000, 256))


@dataclass
class EDMSettings:
    """The EDM diffusion of §3.1 and §3.3 (docs/caloclouds.md, 'PointWise Net and EDM')."""

    sigma_data: float = 0.5
    #: training noise levels: ln sigma ~ N(p_mean, p_std^2)
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    #: loss over padded batches: "unmasked" averages over every element, padding points
    #: (all zero) included, as the reference code; "masked" counts real points only
    #: (ours, the default: padding is not data, docs/caloclouds.md)
    padding: Literal["masked", "unmasked"] = "masked"
    #: random points per shower in a training batch; 0 = every point (the paper). The
    #: network treats points i.i.d. given (E, N), so a random subset gives an unbiased
    #: estimate of the same loss at a fraction of the cost (ours, for CPU presets)
    points_per_shower: int = 0
    #: the EMA of the weights that samples (§3.3); its warm-up decay_k = min(ema_max,
    #: 1 - (1 + k)^-ema_power) is the reference code's (docs/caloclouds.md, A13);
    #: ema_power 0: constant
    ema_max: float = 0.9999
    ema_power: float = 2.0 / 3.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.ema_max < 1.0 and self.ema_power >= 0):
            raise ConfigError("edm: need 0 <= ema_max < 1 and ema_power >= 0")
        if not (0 < self.sigma_min < self.sigma_max and self.sigma_data > 0 and self.p_std > 0
                and self.rho > 0):
            raise ConfigError("edm: need 0 < sigma_min < sigma_max, sigma_data > 0, p_std > 0, "
                              "rho > 0")
        if self.points_per_shower < 0:
            raise ConfigError("edm.points_per_shower must be >= 0 (0 = every point)")


@dataclass
class DistillationSettings:
    """Consistency distillation of §3.2 (docs/caloclouds.md, 'Consistency distillation')."""

    #: noise levels of the EDM schedule the interval is drawn from (N = 18 boundaries)
    boundaries: int = 18
    #: the target network is an EMA of the student with this rate, updated every step
    target_ema: float = 0.95

    def __post_init__(self) -> None:
        if self.boundaries < 2:
            raise ConfigError("distillation.boundaries must be >= 2")
        if not 0.0 <= self.target_ema < 1.0:
            raise ConfigError("distillation.target_ema must lie in [0, 1)")


@dataclass
class CaloClouds2Config:
    """A complete CaloClouds II model: Shower Flow, PointWise Net with EDM, calibrations,
    optional consistency distillation, and their training.

    Points are (x mm, y mm, z layer units, E MeV) in the showerdata layout; the network
    sees x, y and z mapped linearly to [-1, 1] and E in MeV unscaled (reference code).
    """

    #: planar geometry (``ild-ecal`` or ``ild-ecal:N``): the cells the calibrations and
    #: evaluation project onto, and the transverse range of the normalisation
    geometry: str = "ild-ecal"
    shower_flow: ShowerFlowConfig = field(default_factory=ShowerFlowConfig)
    pointwise: PointWiseNetConfig = field(default_factory=PointWiseNetConfig)
    edm: EDMSettings = field(default_factory=EDMSettings)
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    #: the diffusion model's sampler: "heun-13" (25 evaluations, §3.3), "euler-N",
    #: "heun-N"; "consistency-K" samples the distilled model with K evaluations
    sampler: str = "heun-13"
    #: conditions: E' = 2 E / e_max - 1, N' = 2 N / max_points - 1 (reference code)
    e_max_mev: float = 100_000.0
    max_points: int = 6000
    #: Shower Flow post-processing: the smallest visible energy it may give (MeV)
    min_e_vis_mev: float = 40.0
    #: where the shower enters (x, y mm): the Shower Flow's centre of gravity is coded
    #: about it (the reference's (0, 40) mm is its own detector's; ours: (0, 0))
    axis_x_mm: float = 0.0
    axis_y_mm: float = 0.0
    #: uniform jitter of x and y within their sub-cell at training time (docs/caloclouds.md,
    #: A21: one draw per point; ours), the width of a sub-cell of the clustering grid
    jitter: bool = True
    subcells: int = 6
    #: the N calibration (§3; docs/caloclouds.md, A7): showers generated without it to fit
    #: p_gen, and reference showers to fit p_data (the paper: 40k), projected with this
    #: threshold
    calibration_showers: int = 40_000
    calibration_threshold_mev: float = 0.1
    #: the radial map fitted by the same calibration stages (ours, docs/caloclouds.md,
    #: 'The radial map'): point radii about the axis mapped onto the training clouds',
    #: per layer and per E_inc bin (this many bins of equal counts; 0: no map), each
    #: distribution kept as this many energy-weighted quantiles
    radial_map_bins: int = 8
    radial_map_quantiles: int = 64
    #: generation step 11 (ours): every shower moved by a random one of the 8 symmetries
    #: of the square cell grid about the axis (rotations by 90 degrees, mirrors), which a
    #: normally incident shower has; spreads any direction the network favours
    symmetrise: bool = True
    #: at most this many points in one network pass at generation; None: 65 536 on a
    #: CPU (activations then stay below the allocator's mmap threshold: measured 1.8x faster
    #: than 2M-point passes, with a third of their system time), 2M on a GPU
    max_points_per_pass: int | None = None
    #: fraction of the training file held out for validation losses
    validation_fraction: float = 0.05
    #: read at most this many showers of the training file (None = all)
    max_showers: int | None = None
    training: CaloClouds2Training = field(default_factory=CaloClouds2Training)

    def __post_init__(self) -> None:
        g = self.planar_geometry()
        from ...sampling.edm import parse_edm_sampler

        try:
            parse_edm_sampler(self.sampler)
        except ConfigError as exc:
            raise ConfigError(f"sampler: {exc}") from None
        checks = [
            (self.e_max_mev > 0, "e_max_mev must be > 0"),
            (self.max_points >= 1, "max_points must be >= 1"),
            (self.min_e_vis_mev >= 0, "min_e_vis_mev must be >= 0"),
            (self.subcells >= 1, "subcells must be >= 1"),
            (self.calibration_showers >= 0, "calibration_showers must be >= 0 (0 = no N "
             "calibration)"),
            (self.calibration_threshold_mev >= 0, "calibration_threshold_mev must be >= 0"),
            (self.radial_map_bins >= 0, "radial_map_bins must be >= 0 (0 = no radial map)"),
            (self.radial_map_quantiles >= 2, "radial_map_quantiles must be >= 2"),
            (self.max_points_per_pass is None or self.max_points_per_pass >= self.max_points,
             "max_points_per_pass must be >= max_points (or unset: chosen per device)"),
            (0.0 <= self.validation_fraction < 0.5, "validation_fraction must be in [0, 0.5)"),
            (self.max_showers is None or self.max_showers >= 20,
             "max_showers must be >= 20 or unset"),
            (self.pointwise.point_dim == 4, "pointwise.point_dim must be 4 (x, y, z, E)"),
            (self.pointwise.cond_dim == 2, "pointwise.cond_dim must be 2 (E', N')"),
            (self.shower_flow.features == 5 + 2 * g.n_layers,
             f"shower_flow.features must be {5 + 2 * g.n_layers} (5 + 2 x {g.n_layers} layers)"),
            (self.shower_flow.context == 1, "shower_flow.context must be 1 (E_inc)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def planar_geometry(self) -> PlanarGeometry:
        g = named_geometry(self.geometry)
        if not isinstance(g, PlanarGeometry):
            raise ConfigError(f"CaloClouds II needs a planar point-cloud geometry (ild-ecal), "
                              f"not {self.geometry!r}")
        return g
