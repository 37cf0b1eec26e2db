"""How Calo-VQ's stages build their data for the generic staged trainer.

``prepare`` fits the transforms on the training split (or reloads the stored ones when a
later stage or a resumed run reads an existing checkpoint). Stage ``vqvae`` learns to
reconstruct x = ln(a + b E/R)/c with the true R; stage ``gpt`` reads the frozen stage 1,
encodes every training shower into tokens, fits the occupancy cut and learns the token
sequences.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import CheckpointError
from ...objectives import VQGANObjective, VQObjective
from ...training import TensorDictDataset
from ...transforms import OccupancyCalibration
from ..registry import config_from_manifest
from ..staged import StageBuild, StageContext, pass_batch_size
from .config import CaloVQConfig
from .model import CaloVQ, CaloVQTransforms, build_calovq_models
from .stages import CaloVQAutoencoderStage, CaloVQPriorStage

__all__ = ["build_gpt_stage", "build_vqvae_stage", "encode_tokens", "fit_occupancy",
           "init_codebook_from_data", "prepare", "trainer_config"]


def trainer_config(config: CaloVQConfig, stage: str):
    return getattr(config.training, stage)


def _transforms(ctx: StageContext) -> CaloVQTransforms:
    return ctx.state["calovq_transforms"]


def _store(ctx: StageContext) -> None:
    ctx.state["transforms"] = _transforms(ctx).state()


def prepare(ctx: StageContext) -> None:
    """Fit the transforms, or reuse the stored ones for a later stage or a resumed run."""
    config: CaloVQConfig = ctx.config
    ckpt = ctx.checkpoint()
    if ckpt is not None:
        _, stored = config_from_manifest(ckpt.config, str(ctx.out_dir), expect="calovq")
        if stored.autoencoder_config != config.autoencoder_config and "vqvae" not in ctx.stages:
            raise CheckpointError(
                f"{ctx.out_dir} holds a stage 1 trained with another autoencoder configuration")
    if ckpt is not None and ("vqvae" not in ctx.stages or ctx.resume):
        transforms = CaloVQTransforms.from_state(ckpt.manifest["transforms"])
    else:
        tr = ctx.train_idx
        transforms = CaloVQTransforms.new(config, ctx.geometry).fit(
            ctx.showers[tr].double(), ctx.energies[tr])
    ctx.state["calovq_transforms"] = transforms
    _store(ctx)


def _stage1_tensors(model: CaloVQ, showers: Tensor, energies: Tensor) -> dict[str, Tensor]:
    t = model.transforms
    fractions, _ = t.normalisation(showers)
    x = t.log(fractions).to(torch.float32)
    return {"x": model.showers_to_model_input(x).contiguous(),
            "cond": t.condition(energies)}


@torch.no_grad()
def init_codebook_from_data(vqvae, data: TensorDictDataset, batch_size: int,
                            vectors_per_code: int = 8) -> int:
    """k-means initialisation of ``vqvae``'s codebook from the encoder outputs of the
    first training batch(es) (``codebook_init="data"``; docs/calovq.md).

    Encodes randomly chosen training showers (global torch RNG): at least one batch, and
    enough for about ``vectors_per_code`` encoder outputs per code. Returns their number.
    """
    ae = vqvae.config
    n_positions = math.prod(ae.latent_shape)
    n = min(len(data), max(batch_size, math.ceil(vectors_per_code * ae.n_codes / n_positions)))
    rows = torch.randperm(len(data))[:n]
    x, cond = data.tensors["x"][rows], data.tensors["cond"][rows]
    device = next(vqvae.parameters()).device
    was_training = vqvae.training
    vqvae.eval()
    vqvae.init_codebook(x.to(device), cond.to(device))
    vqvae.train(was_training)
    return n


def build_vqvae_stage(ctx: StageContext) -> StageBuild:
    config: CaloVQConfig = ctx.config
    vqvae, gpt, disc = build_calovq_models(config, with_discriminator=True)
    model = CaloVQ(config, ctx.geometry, vqvae, gpt, _transforms(ctx))
    vq = VQObjective(config.log_a, config.log_b, config.log_c, beta=config.beta)
    if config.gan.enabled:
        objective = VQGANObjective(vq, disc_weight=config.gan.weight,
                                   disc_start=config.gan.start, disc_ramp=config.gan.ramp)
        stage = CaloVQAutoencoderStage(vqvae, objective, disc,
                                       usage_warning=config.codebook_usage_warning)
    else:
        stage = CaloVQAutoencoderStage(vqvae, vq, usage_warning=config.codebook_usage_warning)
    tr, va = ctx.train_idx, ctx.val_idx
    train = TensorDictDataset(_stage1_tensors(model, ctx.showers[tr], ctx.energies[tr]))
    val = (TensorDictDataset(_stage1_tensors(model, ctx.showers[va], ctx.energies[va]))
           if len(va) else None)
    if config.autoencoder_config.codebook_init == "data":
        # before the trainer exists, so that its weight average starts from these codes;
        # a resumed run loads its saved codebook over them
        init_codebook_from_data(vqvae, train, ctx.spec.trainer_config(config, "vqvae").batch_size)
    return StageBuild(stage, train, val)


@torch.no_grad()
def encode_tokens(model: CaloVQ, showers: Tensor, energies: Tensor,
                  batch_size: int = 512) -> Tensor:
    """Token sequences [R tokens][shower codes] (N, seq_len) of showers, for stage 2."""
    t = model.transforms
    r_tokens = t.r_tokens.encode(t.r_ratio(showers, energies))
    model.vqvae.eval()
    codes = []
    for lo in range(0, len(showers), batch_size):
        b = _stage1_tensors(model, showers[lo:lo + batch_size], energies[lo:lo + batch_size])
        z = model.vqvae.encode(b["x"].to(model.device), b["cond"].to(model.device))
        _, idx, _ = model.vqvae.quantizer(z)
        codes.append(idx.reshape(idx.shape[0], -1).cpu())
    return torch.cat([r_tokens.to(torch.long), torch.cat(codes)], dim=1)


@torch.no_grad()
def fit_occupancy(model: CaloVQ, showers: Tensor, energies: Tensor, tokens: Tensor,
                  max_showers: int = 5000, batch_size: int = 512) -> OccupancyCalibration:
    """Fit the occupancy cut on stage-1 reconstructions (true R) of training showers.

    The cut is fitted on each voxel's share of the reconstructed shower's energy, the
    quantity :meth:`CaloVQTransforms.calibrate_fractions` cuts on.
    """
    n = min(len(showers), max_showers)
    thr = model.config.output_threshold_mev
    k = model.config.n_r_tokens
    fractions, eligible = [], []
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        cond = model.transforms.condition(energies[lo:hi]).to(model.device)
        f = model.model_output_to_flat(
            model.vqvae.decode_indices(tokens[lo:hi, k:].to(model.device), cond)).cpu()
        _, r = model.transforms.normalisation(showers[lo:hi].double())
        rec = model.transforms.normalisation.inverse(f.double(), r)
        # the cut acts on shares of the whole shower's energy (see calibrate_fractions)
        fractions.append(rec / rec.sum(-1, keepdim=True).clamp_min(1e-30))
        eligible.append(rec > thr)
    target = (showers[:n] > thr).sum(-1)
    return OccupancyCalibration().fit(torch.cat(fractions), energy=energies[:n],
                                      eligible=torch.cat(eligible), target_counts=target)


def build_gpt_stage(ctx: StageContext) -> StageBuild:
    config: CaloVQConfig = ctx.config
    vqvae, gpt = build_calovq_models(config)
    ctx.frozen("vqvae", {"vqvae": vqvae})
    transforms = _transforms(ctx)
    tr, va = ctx.train_idx, ctx.val_idx
    transforms.fit_r_tokens(config, ctx.showers[tr].double(), ctx.energies[tr])
    # the codes of every training shower are computed where the GPT will train, in large
    # batches (on a GPU this is seconds; on the host it took minutes at paper size)
    device = ctx.device("gpt")
    batch = pass_batch_size(device)
    model = CaloVQ(config, ctx.geometry, vqvae, gpt, transforms).to(device)
    tokens = encode_tokens(model, ctx.showers, ctx.energies, batch_size=batch)
    if config.occupancy_calibration:
        transforms.occupancy = fit_occupancy(model, ctx.showers[tr], ctx.energies[tr],
                                             tokens[tr], batch_size=batch)
    model.to("cpu")  # the trainer places the GPT itself; the frozen VQ-VAE is done
    _store(ctx)
    cond = transforms.condition(ctx.energies)
    stage = CaloVQPriorStage(gpt, config.n_r_tokens)
    val = TensorDictDataset(tokens=tokens[va], cond=cond[va]) if len(va) else None
    return StageBuild(stage, TensorDictDataset(tokens=tokens[tr], cond=cond[tr]), val)
