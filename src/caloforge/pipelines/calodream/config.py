"""CaloDREAM configuration (docs/calodream.md).

Everything the paper states is taken from it; every choice it leaves open is marked
"ours" (or names the reading taken, A-numbers as in docs/calodream.md) next to the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...errors import ConfigError
from ...models import TransfusionConfig, VAEConfig, ViTConfig
from ...training import TrainerConfig
from ..voxel_calibration import VoxelCalibrationConfig

__all__ = ["BNSConfig", "CaloDREAMConfig", "CaloDREAMTraining"]


@dataclass
class CaloDREAMTraining:
    """Trainer settings keyed by stage name: ``training.energy``, ``training.vae``,
    ``training.shape``."""

    energy: TrainerConfig = field(default_factory=TrainerConfig)
    vae: TrainerConfig = field(default_factory=TrainerConfig)
    shape: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class BNSConfig:
    """The bespoke non-stationary solver of the shape network (§3.4, Tab. 5)."""

    #: train one at all (stage ``bns``)
    enabled: bool = True
    #: steps N = function evaluations of the trained solver
    n_steps: int = 8
    #: "local" (LTE, Eq. 17) or "global" (GTE, Eq. 16); local keeps AUC < 0.6 at 8 NFE
    loss: Literal["local", "global"] = "local"
    #: the precise reference solve (Tab. 5: midpoint, 100 steps)
    reference: str = "midpoint-100"
    lr: float = 1e-3
    batch_size: int = 100
    max_iters: int = 5000
    patience: int = 200
    #: held-out batches for early stopping (ours: A25 reads the training loss; a fixed
    #: held-out batch gives a less noisy criterion)
    val_batches: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.batch_size < 1 or self.max_iters < 1 or self.patience < 1:
            raise ConfigError("bns.n_steps, batch_size, max_iters and patience must be >= 1")
        if self.loss not in ("local", "global"):
            raise ConfigError(f"bns.loss must be 'local' or 'global', got {self.loss!r}")
        if not self.lr > 0:
            raise ConfigError("bns.lr must be > 0")
        if self.val_batches < 0:
            raise ConfigError("bns.val_batches must be >= 0")


@dataclass
class CaloDREAMConfig:
    """A complete CaloDREAM model: preprocessing, networks, solvers and their training.

    ``space="full"`` generates voxels with the 3-D ViT (§3.2); ``space="latent"`` with
    the ViT on the VAE latent ("laViT", §3.3) and the VAE decoder.
    """

    geometry: str = "ds2"
    particle: str = "electron"
    space: Literal["full", "latent"] = "full"
    #: f of Eq. 2: u_0 = E_tot / (f E_inc) (A2: the paper's 2.85)
    u0_scale: float = 2.85
    #: alpha of the regularised logit, Eq. 3 (u's and, in full space, voxels; A3)
    logit_alpha: float = 1e-6
    #: normalised voxels at or below this are set to 0 before the per-layer
    #: renormalisation (Tab. 4: 1e-6 for the VAE; the paper states none for the ViT)
    normalised_cut: float = 0.0
    #: voxels below this (MeV) are set to 0 after generation; 0 = none, as the paper
    #: (A28: the evaluation applies the dataset threshold)
    output_threshold_mev: float = 0.0
    #: incident-energy condition: ln E scaled to [0, 1] over this range in MeV (§2; the
    #: CaloChallenge range 1 GeV - 1 TeV)
    energy_range: tuple[float, float] = (1e3, 1e6)
    energy: TransfusionConfig = field(default_factory=TransfusionConfig)
    shape: ViTConfig = field(default_factory=ViTConfig)
    #: the VAE of the latent path (``space="latent"`` only)
    vae: VAEConfig | None = None
    #: KL weight of the VAE (Tab. 4: 1e-6, mean reduction A17)
    vae_beta: float = 1e-6
    #: solvers at generation (Tab. 1: RK4 50 steps; Tab. 2: RK4 20 steps)
    energy_solver: str = "rk4-50"
    shape_solver: str = "rk4-20"
    bns: BNSConfig = field(default_factory=BNSConfig)
    #: quantile map of the generated voxel energies onto the training showers' (stage
    #: ``calibration``, after every network; not in the paper: docs/calibration.md)
    calibration: VoxelCalibrationConfig = field(default_factory=VoxelCalibrationConfig)
    #: fraction of the training file held out for validation losses
    validation_fraction: float = 0.05
    #: read at most this many showers of the training file (None = all)
    max_showers: int | None = None
    training: CaloDREAMTraining = field(default_factory=CaloDREAMTraining)

    def __post_init__(self) -> None:
        if self.space not in ("full", "latent"):
            raise ConfigError(f"space must be 'full' or 'latent', got {self.space!r}")
        if (self.vae is None) == (self.space == "latent"):
            raise ConfigError("a latent-space CaloDREAM needs a vae configuration, a full-space "
                              "one none")
        if not self.u0_scale > 0:
            raise ConfigError("u0_scale must be > 0")
        if not 0 < self.logit_alpha < 0.5:
            raise ConfigError("logit_alpha must lie in (0, 0.5)")
        if not 0 <= self.normalised_cut < 1:
            raise ConfigError("normalised_cut must lie in [0, 1)")
        if self.output_threshold_mev < 0:
            raise ConfigError("output_threshold_mev must be >= 0")
        lo, hi = self.energy_range
        if not 0 < lo < hi:
            raise ConfigError(f"energy_range must satisfy 0 < low < high, got {self.energy_range}")
        self.energy_range = (float(lo), float(hi))
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ConfigError("validation_fraction must be in [0, 0.5)")
        if self.max_showers is not None and self.max_showers < 20:
            raise ConfigError("max_showers must be >= 20 or unset")
        if self.vae_beta < 0:
            raise ConfigError("vae_beta must be >= 0")
        from ...sampling import parse_solver

        if self.energy_solver.strip().lower().startswith("bns"):
            raise ConfigError("energy_solver: bespoke solvers are trained for the shape network")
        parse_solver(self.energy_solver)
        if self.shape_solver.strip().lower().startswith("bns"):
            if not self.bns.enabled or self.shape_solver.strip().lower() != f"bns-{self.bns.n_steps}":
                raise ConfigError(f"shape_solver {self.shape_solver!r} needs the bns stage with "
                                  f"bns.n_steps matching (bns.enabled={self.bns.enabled}, "
                                  f"bns.n_steps={self.bns.n_steps})")
        else:
            parse_solver(self.shape_solver)
        from ...geometry import get_geometry

        g = get_geometry(self.geometry)
        if not g.is_regular:
            raise ConfigError(f"CaloDREAM needs a regular geometry (ds2, ds3), not {g.name!r}")
        n_layers = g.n_layers
        volume = tuple(int(v) for v in g.image_shape)
        if self.energy.n_layers_energy != n_layers:
            raise ConfigError(f"energy.n_layers_energy is {self.energy.n_layers_energy}, the "
                              f"geometry has {n_layers} layers")
        if self.shape.cond_dim != 1 + n_layers:
            raise ConfigError(f"shape.cond_dim must be 1 + {n_layers} (E_inc and the u's)")
        if self.space == "full":
            if self.shape.volume != volume or self.shape.in_channels != 1:
                raise ConfigError(f"shape.volume must be the geometry's {volume} with one "
                                  "channel in full space")
        else:
            if self.vae.data_shape != volume:
                raise ConfigError(f"vae.data_shape must be the geometry's {volume}")
            latent = self.vae.latent_shape
            if (self.shape.in_channels, *self.shape.volume) != tuple(latent):
                raise ConfigError(f"shape.in_channels and shape.volume must be the VAE latent "
                                  f"{tuple(latent)}")
            if self.vae.cond_in_dim != 1 + n_layers:
                raise ConfigError(f"vae.cond_in_dim must be 1 + {n_layers}")
