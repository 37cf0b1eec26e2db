"""Calo-VQ as a :class:`~caloforge.pipelines.ShowerGenerator` (docs/calovq.md).

Sampling (Calo-VQ §3, §5): E_inc -> GPT samples [R tokens][shower codes] -> R = digits -> ratio
R/E_inc (docs/calovq.md, A4) times E_inc -> codebook look-up and decoder (conditioned on E_inc) ->
softmax fractions f -> showers E = f * R (Eq. 6), on the geometry's flat voxel order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...errors import CheckpointError, ConfigError
from ...geometry import CylindricalGeometry
from ...models import build_model
from ...models.autoencoders import calo_image_to_flat, flat_to_calo_image
from ...sampling import sample_tokens
from ...transforms import (
    DigitTokenizer,
    IncidentEnergyScaling,
    LogTransform,
    OccupancyCalibration,
    ShowerNormalization,
    transform_from_state,
)
from ..base import check_finite, validate_energies
from ..persist import open_model_checkpoint, save_model_checkpoint
from .config import CaloVQConfig

__all__ = ["CaloVQ", "CaloVQTransforms", "build_calovq_models"]


@dataclass
class CaloVQTransforms:
    """The fitted preprocessing of a Calo-VQ model, stored in its checkpoint."""

    normalisation: ShowerNormalization
    log: LogTransform
    energy: IncidentEnergyScaling
    r_tokens: DigitTokenizer
    #: fitted after stage 1 when ``config.occupancy_calibration`` (None otherwise)
    occupancy: OccupancyCalibration | None = None
    #: R tokens hold E_tot / E_inc and the layer shares (``config.r_representation``);
    #: part of the configuration, so not stored with the fitted state
    total_and_shares: bool = False

    @classmethod
    def new(cls, config: CaloVQConfig, geometry: CylindricalGeometry) -> CaloVQTransforms:
        return cls(
            ShowerNormalization.from_geometry(geometry, config.normalisation),
            LogTransform(config.log_a, config.log_b, config.log_c),
            IncidentEnergyScaling(config.energy_scaling),
            DigitTokenizer(n_digits=2, base=1024, mapping=config.r_token_mapping,
                           margin=config.r_token_margin),
            total_and_shares=config.r_representation == "total_and_shares",
        )

    def fit(self, showers: Tensor, energies: Tensor) -> CaloVQTransforms:
        """Fit on training showers (N, V) MeV and incident energies (N,) MeV."""
        self.energy.fit(energies)
        self.r_tokens.fit(self.r_ratio(showers, energies))
        return self

    def fit_r_tokens(self, config: CaloVQConfig, showers: Tensor,
                     energies: Tensor) -> CaloVQTransforms:
        """(Re)fit the R tokeniser alone for ``config``'s R representation.

        Only stage 2 uses it, so the prior can be retrained with another representation
        on a frozen stage 1.
        """
        self.total_and_shares = config.r_representation == "total_and_shares"
        self.r_tokens = DigitTokenizer(n_digits=2, base=1024, mapping=config.r_token_mapping,
                                       margin=config.r_token_margin)
        self.r_tokens.fit(self.r_ratio(showers, energies))
        return self

    def state(self) -> dict[str, Any]:
        out = {k: getattr(self, k).state_dict() for k in
               ("normalisation", "log", "energy", "r_tokens")}
        if self.occupancy is not None and self.occupancy.is_fitted:
            out["occupancy"] = self.occupancy.state_dict()
        return out

    @classmethod
    def from_state(cls, states: dict[str, Any]) -> CaloVQTransforms:
        missing = {"normalisation", "log", "energy", "r_tokens"} - set(states)
        if missing:
            raise CheckpointError(f"checkpoint lacks the transforms {sorted(missing)}")
        return cls(**{k: transform_from_state(states[k]) for k in
                      ("normalisation", "log", "energy", "r_tokens", "occupancy")
                      if k in states})

    def calibrate_fractions(self, fractions: Tensor, r: Tensor, energies: Tensor) -> Tensor:
        """Apply the occupancy cut (if fitted) and renormalise: fractions (N, V) -> (N, V).

        The cut acts on each voxel's share of the whole shower's energy, so that it means
        the same in every layer also under layer-wise normalisation; the largest voxel of
        every group (shower or layer) is kept, so R, and every layer's energy, survive.
        """
        if self.occupancy is None or not self.occupancy.is_fitted:
            return fractions
        showers = self.normalisation.inverse(fractions, r)
        share = showers / showers.sum(-1, keepdim=True).clamp_min(1e-30)
        keep = self.occupancy(share, energy=energies)
        keep |= fractions >= self.normalisation.group_max(fractions)
        return self.normalisation(torch.where(keep, fractions, 0.0))[0]

    def condition(self, energies: Tensor) -> Tensor:
        """Incident energies (N,) MeV -> condition (N, 1)."""
        return self.energy(energies).reshape(-1, 1).to(torch.float32)

    def r_ratio(self, showers: Tensor, energies: Tensor) -> Tensor:
        """The values tokenised (docs/calovq.md, A4): R / E_inc per shower, (N, n_r); or, with
        ``total_and_shares``, [E_tot / E_inc, R_l / E_tot for every layer], (N, 1 + n_r)."""
        r = self.normalisation(showers)[1]
        if not self.total_and_shares:
            return r / energies[:, None]
        total = r.sum(-1, keepdim=True)
        shares = torch.where(total > 0, r / total.clamp_min(1e-30), 0.0)
        return torch.cat([total / energies[:, None], shares], dim=-1)

    def r_from_ratio(self, ratio: Tensor, energies: Tensor) -> Tensor:
        """Inverse of :meth:`r_ratio`: R (N, n_r) in MeV. Generated shares are renormalised
        to sum to 1, so the layers hold exactly the generated total."""
        if not self.total_and_shares:
            return (ratio * energies[:, None]).clamp_min(0.0)
        total = (ratio[:, :1] * energies[:, None]).clamp_min(0.0)
        shares = ratio[:, 1:].clamp_min(0.0)
        norm = shares.sum(-1, keepdim=True)
        return total * torch.where(norm > 0, shares / norm.clamp_min(1e-30), 0.0)


def build_calovq_models(config: CaloVQConfig, *, with_discriminator: bool = False):
    """(vqvae, gpt[, discriminator]) freshly initialised from ``config``."""
    if config.is_dense:
        vqvae = build_model("vqvae_dense", config.dense_vqvae)
        disc_cfg, disc_name = config.dense_discriminator, "discriminator_dense"
    else:
        vqvae = build_model("vqvae_cylindrical", config.vqvae)
        disc_cfg, disc_name = config.discriminator, "discriminator_cylindrical"
    gpt = build_model("gpt", config.gpt)
    if not with_discriminator:
        return vqvae, gpt
    if disc_cfg is None:
        raise ConfigError("gan.enabled needs a discriminator configuration")
    return vqvae, gpt, build_model(disc_name, disc_cfg)


class CaloVQ:
    """A trained Calo-VQ generator: VQ-VAE decoder + GPT prior + fitted transforms."""

    def __init__(self, config: CaloVQConfig, geometry: CylindricalGeometry, vqvae, gpt,
                 transforms: CaloVQTransforms) -> None:
        self.config = config
        self.geometry = geometry
        self.vqvae = vqvae.eval()
        self.gpt = gpt.eval()
        self.transforms = transforms
        transforms.total_and_shares = config.r_representation == "total_and_shares"
        self.device = torch.device("cpu")
        # on a CUDA device the GPT's token loop replays a captured CUDA graph of one step
        # (same tokens for the same random stream); False keeps the plain loop
        self.cuda_graphs = True

    # ----------------------------------------------------------------- shapes
    def showers_to_model_input(self, x_flat: Tensor) -> Tensor:
        """(N, V) flat -> the autoencoder's input layout (calo-image or flat)."""
        if self.config.is_dense:
            return x_flat
        z, a, r = self.geometry.image_shape
        return flat_to_calo_image(x_flat, z, a, r)

    def model_output_to_flat(self, y: Tensor) -> Tensor:
        return y if self.config.is_dense else calo_image_to_flat(y)

    @property
    def training_energy_range(self) -> tuple[float, float] | None:
        """The incident-energy range (MeV) the condition was fitted on, when known."""
        t = self.transforms.energy
        if t.mode != "log_minmax" or t.shift is None:
            return None
        lo = float(torch.exp(t.shift))
        return lo, float(torch.exp(t.shift + t.scale))

    # --------------------------------------------------------------- sampling
    def to(self, device: str | torch.device) -> CaloVQ:
        self.device = torch.device(device)
        self.vqvae.to(self.device)
        self.gpt.to(self.device)
        return self

    @torch.inference_mode()
    def sample_tokens(self, incident_energy: Tensor, *, generator: torch.Generator | None = None,
                      temperature: float | None = None, top_k: int | None = None,
                      uniforms: Tensor | None = None) -> Tensor:
        """Stage 2 only: token sequences (N, seq_len) for incident energies (N,) MeV.

        ``uniforms`` (N, seq_len) in [0, 1): the numbers the draws use, in place of
        ``generator``'s (see :func:`~caloforge.sampling.sample_tokens`).
        """
        e = incident_energy.to(self.device, torch.float64)
        cond = self.transforms.condition(e).to(self.device)
        return sample_tokens(
            self.gpt, cond,
            temperature=self.config.temperature if temperature is None else temperature,
            top_k=self.config.top_k if top_k is None else top_k,
            generator=generator, uniforms=uniforms,
            cuda_graphs=None if self.cuda_graphs else False,
        )

    @torch.inference_mode()
    def decode_tokens(self, tokens: Tensor, incident_energy: Tensor) -> Tensor:
        """Stage 1 only: tokens (N, seq_len) -> showers (N, V) MeV (on this device)."""
        e = incident_energy.to(self.device, torch.float64)
        cond = self.transforms.condition(e).to(self.device)
        k = self.config.n_r_tokens
        ratio = self.transforms.r_tokens.decode(tokens[:, :k].cpu()).to(self.device)
        r = self.transforms.r_from_ratio(ratio, e)
        codes = tokens[:, k:].clamp_max(self.config.autoencoder_config.n_codes - 1)
        fractions = self.model_output_to_flat(self.vqvae.decode_indices(codes, cond))
        # before any cut: a cut would turn NaN voxels into zeros, i.e. empty showers
        check_finite(fractions, "the Calo-VQ decoder's output")
        check_finite(r, "the Calo-VQ prior's layer energies")
        fractions = self.transforms.calibrate_fractions(fractions.to(torch.float64), r, e)
        showers = self.transforms.normalisation.inverse(fractions, r)
        if self.config.output_threshold_mev > 0:
            showers = torch.where(showers < self.config.output_threshold_mev,
                                  torch.zeros_like(showers), showers)
        return showers.to(torch.float32)

    def sample(self, incident_energy: Tensor, *, batch_size: int = 1000,
               generator: torch.Generator | None = None, temperature: float | None = None,
               top_k: int | None = None, uniforms: Tensor | None = None) -> Tensor:
        """Showers (N, V) in MeV, on the CPU, for incident energies (N,) in MeV.

        ``uniforms`` (N, seq_len) in [0, 1) replaces the random draws of the token
        sampler: the showers are then a function of (energies, uniforms), the same one an
        exported graph computes (docs/export.md). On CPU, the numbers drawn from
        ``generator`` for each batch are ``draw_token_uniforms(len(batch), seq_len,
        generator)``.
        """
        e = validate_energies(incident_energy)
        if uniforms is not None and tuple(uniforms.shape) != (len(e), self.config.gpt.seq_len):
            raise ConfigError(f"uniforms must have shape (N, seq_len) = ({len(e)}, "
                              f"{self.config.gpt.seq_len}), got {tuple(uniforms.shape)}")
        out = []
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size]
            ub = None if uniforms is None else uniforms[lo:lo + batch_size]
            tokens = self.sample_tokens(eb, generator=generator, temperature=temperature,
                                        top_k=top_k, uniforms=ub)
            out.append(self.decode_tokens(tokens, eb).cpu())
        if not out:
            return torch.zeros(0, self.geometry.n_voxels)
        return torch.cat(out)

    # ----------------------------------------------------------------- export
    def export_module(self):
        """This generator as a deterministic module with explicit random inputs
        (:class:`~caloforge.export.spec.ExportableGenerator`; docs/export.md). Moves the
        model to the CPU."""
        from .export import calovq_exportable

        return calovq_exportable(self.to("cpu"))

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory holding both stages (no optimiser state)."""
        save_model_checkpoint(path, self.config, {"vqvae": {"vqvae": self.vqvae},
                                                  "gpt": {"gpt": self.gpt}},
                              self.transforms.state(), self.geometry)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             verify: bool = True) -> CaloVQ:
        ckpt, config, geometry = open_model_checkpoint(path, "calovq", verify=verify,
                                                       required=("vqvae", "gpt"))
        vqvae, gpt = build_calovq_models(config)
        ckpt.load_modules("vqvae", {"vqvae": vqvae})
        ckpt.load_modules("gpt", {"gpt": gpt})
        states = ckpt.manifest.get("transforms", {})
        model = cls(config, geometry, vqvae, gpt, CaloVQTransforms.from_state(states))
        return model.to(map_location)

    def n_parameters(self) -> dict[str, int]:
        """Parameters used for generation: stage 1 (excluding the discriminator) and 2."""
        return {"stage1": self.vqvae.n_parameters(),
                "stage2": sum(p.numel() for p in self.gpt.parameters())}

    def __repr__(self) -> str:
        p = self.n_parameters()
        return (f"CaloVQ(geometry={self.geometry.name!r}, normalisation="
                f"{self.config.normalisation!r}, seq_len={self.config.gpt.seq_len}, "
                f"stage1={p['stage1']:,} params, stage2={p['stage2']:,} params)")
