"""How CaloLatent's stages build their data for the generic staged trainer.

``prepare`` fits the preprocessing on the training split (or reloads the stored one when
a stage trains on top of an existing checkpoint, or a run resumes). Stages, in the
paper's order (§2): ``layer`` and ``vae`` are independent; ``latent`` reads the frozen
encoder of ``vae`` and learns the score of its reparameterised latent draws. The baseline
VAE (``latent_prior = "normal"``) has no ``latent`` stage.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...checkpoints import save_checkpoint
from ...errors import CheckpointError, ConfigError
from ...models import build_model
from ...training import TensorDictDataset
from ..registry import config_from_manifest
from ..staged import StageBuild, StageContext, pass_batch_size
from .config import CaloLatentConfig
from .decoder_noise import fit_decoder_noise
from .model import CaloLatentTransforms
from .stages import CaloLatentScoreStage, CaloLatentVAEStage

__all__ = ["build_decoder_noise_stage", "build_latent_stage", "build_layer_stage",
           "build_vae_stage", "encode_posteriors", "layer_tensors", "prepare",
           "reconstruction_residuals", "trainer_config", "vae_tensors"]

_CHUNK = 2048


def trainer_config(config: CaloLatentConfig, stage: str):
    if stage in ("decoder_noise", "calibration"):
        # fits a map and trains nothing: the VAE's seed and device
        return config.training.vae
    return getattr(config.training, stage)


def _transforms(ctx: StageContext) -> CaloLatentTransforms:
    return ctx.state["calolatent_transforms"]


def prepare(ctx: StageContext) -> None:
    """Fit the transforms, or reuse the stored ones.

    They are refitted only when both stages that read them from the data (``layer`` and
    ``vae``) are trained afresh; otherwise a trained stage would see other statistics than
    it was trained with.
    """
    config: CaloLatentConfig = ctx.config
    ckpt = ctx.checkpoint()
    refit = {"layer", "vae"} <= set(ctx.stages) and not ctx.resume
    if ckpt is not None and ckpt.config is not None:
        _, stored = config_from_manifest(ckpt.config, str(ctx.out_dir), expect="calolatent")
        pre = ("u0_scale", "logit_alpha", "e_min_mev", "e_max_mev")
        if not refit and any(getattr(stored, k) != getattr(config, k) for k in pre):
            raise CheckpointError(f"{ctx.out_dir} holds stages trained with other preprocessing "
                                  f"settings ({', '.join(pre)})")
        if "vae" not in ctx.stages and "latent" in ctx.stages and stored.vae != config.vae:
            raise CheckpointError(f"{ctx.out_dir} holds a VAE with another configuration than "
                                  "the latent stage expects")
    if ckpt is not None and not refit and ckpt.manifest.get("transforms"):
        transforms = CaloLatentTransforms.from_state(ckpt.manifest["transforms"],
                                                     int(ctx.geometry.layer_sizes[0]))
    else:
        tr = ctx.train_idx
        transforms = CaloLatentTransforms.new(config, ctx.geometry).fit(
            ctx.showers[tr], ctx.energies[tr])
    ctx.state["calolatent_transforms"] = transforms
    ctx.state["transforms"] = transforms.state()


def layer_tensors(t: CaloLatentTransforms, showers: Tensor, energies: Tensor
                  ) -> dict[str, Tensor]:
    """Stage ``layer``: ``x`` preprocessed u (N, L), ``cond`` (N, 1)."""
    u = torch.cat([t.encode_layers(t.layer_energies(showers[lo:lo + _CHUNK].to(torch.float64)),
                                   energies[lo:lo + _CHUNK])
                   for lo in range(0, len(showers), _CHUNK)])
    return {"x": u, "cond": t.condition(energies)}


def vae_tensors(t: CaloLatentTransforms, showers: Tensor, energies: Tensor,
                image_shape: tuple[int, int, int]) -> dict[str, Tensor]:
    """Stage ``vae``: ``x`` preprocessed fractions (N, 1, L, A, R), ``cond`` (N, 1 + L)."""
    u = layer_tensors(t, showers, energies)
    f = torch.cat([t.encode_voxels(showers[lo:lo + _CHUNK])
                   for lo in range(0, len(showers), _CHUNK)])
    return {"x": f.reshape(len(f), 1, *image_shape),
            "cond": torch.cat([u["cond"], u["x"]], dim=1)}


def _datasets(tensors_of, ctx: StageContext) -> tuple[TensorDictDataset, TensorDictDataset | None]:
    tr, va = ctx.train_idx, ctx.val_idx
    train = TensorDictDataset(tensors_of(ctx.showers[tr], ctx.energies[tr]))
    val = TensorDictDataset(tensors_of(ctx.showers[va], ctx.energies[va])) if len(va) else None
    return train, val


def build_layer_stage(ctx: StageContext) -> StageBuild:
    config: CaloLatentConfig = ctx.config
    model = build_model("layer_diffusion", config.layer_model)
    stage = CaloLatentScoreStage("layer", "layer_model", model, config.path,
                                 config.loss_reduction, config.clip_per_tensor)
    t = _transforms(ctx)
    return StageBuild(stage, *_datasets(lambda s, e: layer_tensors(t, s, e), ctx))


def build_vae_stage(ctx: StageContext) -> StageBuild:
    config: CaloLatentConfig = ctx.config
    vae = build_model("vae_resnet3d", config.vae)
    stage = CaloLatentVAEStage(vae, config.kl_weight, config.kl_estimator,
                               config.clip_per_tensor)
    t, shape = _transforms(ctx), tuple(ctx.geometry.image_shape)
    return StageBuild(stage, *_datasets(lambda s, e: vae_tensors(t, s, e, shape), ctx))


@torch.no_grad()
def encode_posteriors(vae: torch.nn.Module, x: Tensor, cond: Tensor, device: torch.device,
                      batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(mu, log_sigma) (N, D) of the frozen encoder for VAE inputs x and conditions, on the
    CPU; computed on ``device`` in batches."""
    vae = vae.to(device).eval()
    mus, sigmas = [], []
    for lo in range(0, len(x), batch_size):
        mu, ls = vae.encode_posterior(x[lo:lo + batch_size].to(device),
                                      cond[lo:lo + batch_size].to(device))
        mus.append(mu.cpu())
        sigmas.append(ls.cpu())
    return torch.cat(mus), torch.cat(sigmas)


def build_latent_stage(ctx: StageContext) -> StageBuild:
    config: CaloLatentConfig = ctx.config
    if config.latent_prior != "diffusion":
        raise ConfigError("the latent stage trains the latent diffusion model; this "
                          f"configuration samples its latent from {config.latent_prior!r}")
    vae = build_model("vae_resnet3d", config.vae)
    ctx.frozen("vae", {"vae": vae})
    device = ctx.device("latent")
    t, shape = _transforms(ctx), tuple(ctx.geometry.image_shape)

    def tensors_of(showers: Tensor, energies: Tensor) -> dict[str, Tensor]:
        mus, sigmas, conds = [], [], []
        for lo in range(0, len(showers), _CHUNK):
            d = vae_tensors(t, showers[lo:lo + _CHUNK], energies[lo:lo + _CHUNK], shape)
            mu, ls = encode_posteriors(vae, d["x"], d["cond"], device, pass_batch_size(device))
            mus.append(mu)
            sigmas.append(ls)
            conds.append(d["cond"])
        return {"mu": torch.cat(mus), "log_sigma": torch.cat(sigmas), "cond": torch.cat(conds)}

    model = build_model("latent_score_mlp", config.latent_model)
    stage = CaloLatentScoreStage("latent", "latent_model", model, config.path,
                                 config.loss_reduction, config.clip_per_tensor)
    return StageBuild(stage, *_datasets(tensors_of, ctx))


@torch.no_grad()
def reconstruction_residuals(vae: torch.nn.Module, x: Tensor, cond: Tensor,
                             device: torch.device, batch_size: int = 256) -> Tensor:
    """x - decoder(encoder mean) (N, V) of VAE inputs x (N, 1, L, A, R), on the CPU."""
    vae = vae.to(device).eval()
    out = []
    for lo in range(0, len(x), batch_size):
        xb, cb = x[lo:lo + batch_size].to(device), cond[lo:lo + batch_size].to(device)
        mu, _ = vae.encode_posterior(xb, cb)
        out.append((xb - vae.decode(mu, cb)).reshape(len(xb), -1).cpu())
    return torch.cat(out)


def build_decoder_noise_stage(ctx: StageContext) -> None:
    """Fit the decoder Gaussian's width per voxel and energy bin on reconstructions of
    (at most ``decoder_noise_showers``) training showers by the frozen VAE; no training."""
    config: CaloLatentConfig = ctx.config
    vae = build_model("vae_resnet3d", config.vae)
    ctx.frozen("vae", {"vae": vae})
    tcfg = ctx.trainer_configs.get("decoder_noise", config.training.vae)
    device = ctx.device("decoder_noise")
    rng = np.random.default_rng([tcfg.seed, 11])
    n = min(config.decoder_noise_showers, len(ctx.train_idx))
    rows = np.sort(rng.choice(ctx.train_idx, size=n, replace=False))
    t, shape = _transforms(ctx), tuple(ctx.geometry.image_shape)
    residuals, energies = [], []
    for lo in range(0, n, _CHUNK):
        r = torch.as_tensor(rows[lo:lo + _CHUNK])
        d = vae_tensors(t, ctx.showers[r], ctx.energies[r], shape)
        residuals.append(reconstruction_residuals(vae, d["x"], d["cond"], device,
                                                  pass_batch_size(device)))
        energies.append(ctx.energies[r])
    noise = fit_decoder_noise(torch.cat(residuals), torch.cat(energies),
                              config.decoder_noise_bins)
    save_checkpoint(ctx.out_dir, "decoder_noise", {"decoder_noise": noise},
                    **ctx.checkpoint_meta(),
                    extra={"showers": int(n), "bins": int(config.decoder_noise_bins),
                           "mean_sigma": float(noise.sigma.mean())})
