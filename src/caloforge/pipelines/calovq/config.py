"""Calo-VQ configuration.

Everything the paper states is taken from it (docs/calovq.md); every choice it leaves
open is marked "ours" in a comment next to the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...errors import ConfigError
from ...models import (
    CylindricalDiscriminatorConfig,
    DenseDiscriminatorConfig,
    DenseVQVAEConfig,
    GPTConfig,
    VQVAEConfig,
)
from ...training import TrainerConfig

__all__ = ["CaloVQConfig", "CaloVQTraining", "GANConfig"]


@dataclass
class GANConfig:
    """Adversarial term of stage 1 (Eq. 3-4; docs/calovq.md, A12)."""

    enabled: bool = True
    #: factor on the adaptive weight lambda (1 = plain Eq. 4)
    weight: float = 1.0
    #: steps without GAN term and discriminator updates (ours: not stated)
    start: int = 2000
    #: steps of a linear ramp after ``start`` (ours)
    ramp: int = 500

    def __post_init__(self) -> None:
        if self.weight < 0 or self.start < 0 or self.ramp < 0:
            raise ConfigError("gan.weight, gan.start and gan.ramp must be >= 0")


@dataclass
class CaloVQTraining:
    """Trainer settings keyed by stage name: ``training.vqvae``, ``training.gpt``."""

    vqvae: TrainerConfig = field(default_factory=TrainerConfig)
    gpt: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class CaloVQConfig:
    """A complete Calo-VQ model: geometry, preprocessing, both stages and their training.

    Exactly one of ``vqvae`` (cylindrical, regular geometries ds2/ds3) and ``dense_vqvae``
    (irregular ds1 geometries) is set; the discriminator field of the same kind is used
    when ``gan.enabled``.
    """

    geometry: str = "ds2"
    particle: str = "electron"
    #: "global" (R = total energy, 2 R tokens) or "layer" (R per layer, 2 tokens each)
    normalisation: Literal["global", "layer"] = "global"
    #: Eq. 5 constants x = ln(a + b E/R)/c (Table 6)
    log_a: float = 1.0
    log_b: float = 3000.0
    log_c: float = 7.0
    #: commitment weight beta of Eq. 2 (docs/calovq.md, A13)
    beta: float = 1.0
    #: tokenisation of R/E_inc: "linear" 2^20 levels (docs/calovq.md, A4); "log" for layer-wise
    #: presets, where linear levels collapse small layer fractions (recorded deviation)
    r_token_mapping: Literal["linear", "log"] = "linear"
    #: what the R tokens hold under layer-wise normalisation: "direct", R_l / E_inc per
    #: layer (the paper); "total_and_shares", E_tot / E_inc followed by each layer's share
    #: R_l / E_tot (ours: the GPT then samples the total energy as one value instead of
    #: the sum of 45 independently uncertain ones; docs/calovq.md)
    r_representation: Literal["direct", "total_and_shares"] = "direct"
    #: widen the fitted R/E_inc range by this fraction on each side (ours)
    r_token_margin: float = 0.05
    #: incident-energy conditioning: log E scaled to [0, 1] over the training range (ours)
    energy_scaling: Literal["log_minmax", "log_standardize", "minmax"] = "log_minmax"
    vqvae: VQVAEConfig | None = field(default_factory=VQVAEConfig)
    dense_vqvae: DenseVQVAEConfig | None = None
    discriminator: CylindricalDiscriminatorConfig | None = field(
        default_factory=CylindricalDiscriminatorConfig
    )
    dense_discriminator: DenseDiscriminatorConfig | None = None
    gan: GANConfig = field(default_factory=GANConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    #: sampling defaults of the prior (not stated in the paper: temperature 1, no top-k)
    temperature: float = 1.0
    top_k: int | None = None
    #: voxels below this (MeV) are set to 0 after generation; 0 = none, as in the paper
    #: (docs/calovq.md, A15); the evaluation applies the dataset's readout threshold anyway
    output_threshold_mev: float = 0.0
    #: fit a cut on decoded fractions after stage 1 so that generated showers are as
    #: sparse as the training data (ours, off in the paper presets; docs/calovq.md)
    occupancy_calibration: bool = False
    #: fraction of the training file held out for validation losses
    validation_fraction: float = 0.05
    #: warn when fewer than this fraction of the codebook is used in a validation batch
    #: of stage 1 (ours; docs/calovq.md "Codebook health"); 0 = never
    codebook_usage_warning: float = 0.1
    #: read at most this many showers of the training file (None = all)
    max_showers: int | None = None
    training: CaloVQTraining = field(default_factory=CaloVQTraining)

    def __post_init__(self) -> None:
        if (self.vqvae is None) == (self.dense_vqvae is None):
            raise ConfigError("set exactly one of vqvae (cylindrical) and dense_vqvae (dense)")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ConfigError("validation_fraction must be in [0, 0.5)")
        if self.r_representation not in ("direct", "total_and_shares"):
            raise ConfigError("r_representation must be 'direct' or 'total_and_shares', got "
                              f"{self.r_representation!r}")
        if self.r_representation == "total_and_shares" and self.normalisation != "layer":
            raise ConfigError("r_representation 'total_and_shares' needs normalisation 'layer'")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or unset, got {self.top_k}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.log_c == 0 or self.log_b <= 0 or self.log_a <= 0:
            raise ConfigError("log_a and log_b must be > 0 and log_c non-zero (Eq. 5)")
        if self.output_threshold_mev < 0:
            raise ConfigError(f"output_threshold_mev must be >= 0, got {self.output_threshold_mev}")
        if not 0.0 <= self.codebook_usage_warning <= 1.0:
            raise ConfigError("codebook_usage_warning must be in [0, 1], got "
                              f"{self.codebook_usage_warning}")
        if self.r_token_margin < 0:
            raise ConfigError("r_token_margin must be >= 0")
        if self.max_showers is not None and self.max_showers < 20:
            raise ConfigError("max_showers must be >= 20 or unset")
        ae = self.autoencoder_config
        if ae.normalisation != self.normalisation:
            raise ConfigError(
                f"normalisation {self.normalisation!r} differs from the autoencoder's "
                f"{ae.normalisation!r}"
            )
        if self.gpt.seq_len != self.n_r_tokens + self.n_shower_codes:
            raise ConfigError(
                f"gpt.seq_len is {self.gpt.seq_len} but R tokens + shower codes = "
                f"{self.n_r_tokens} + {self.n_shower_codes} = "
                f"{self.n_r_tokens + self.n_shower_codes}"
            )
        if self.gpt.vocab_size < max(1024, ae.n_codes):
            raise ConfigError("gpt.vocab_size must hold the 1024 digit tokens and all codes")

    @property
    def is_dense(self) -> bool:
        return self.dense_vqvae is not None

    @property
    def autoencoder_config(self) -> VQVAEConfig | DenseVQVAEConfig:
        return self.dense_vqvae if self.dense_vqvae is not None else self.vqvae

    @property
    def n_r_values(self) -> int:
        """Scalars tokenised per shower: 1 (global), the number of active layers
        (layer-wise), plus one for the total with ``total_and_shares``."""
        from ...geometry import get_geometry

        if self.normalisation == "global":
            return 1
        n_layers = len(get_geometry(self.geometry).active_layers)
        return n_layers + (self.r_representation == "total_and_shares")

    @property
    def n_r_tokens(self) -> int:
        """Two base-1024 digits per R value (20 bits, §5.1)."""
        return 2 * self.n_r_values

    @property
    def n_shower_codes(self) -> int:
        return self.autoencoder_config.n_shower_codes


