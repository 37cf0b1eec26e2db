"""How CaloDREAM's stages build their data for the generic staged trainer.

Stages in order (§3): ``energy`` (the transfusion network on u), ``vae`` (latent space
only), ``shape`` (the ViT on voxel features, or on samples of the frozen VAE posterior),
``bns`` (a bespoke solver for the frozen shape network, conditions drawn from the frozen
energy network, its own Adam loop with early stopping, Tab. 5). The networks are
trained independently and linked only at generation.
"""

from __future__ import annotations

import torch

from ...checkpoints import save_checkpoint
from ...models import ConvVAE3d, TransfusionEnergyNet, ViTVelocityField
from ...models.autoencoders.vae import flat_to_volume
from ...sampling import BNSSolver, train_bns
from ...training import TensorDictDataset, TrainerConfig
from ..staged import StageBuild, StageContext, pass_batch_size
from .config import CaloDREAMConfig
from .model import CaloDREAM, build_calodream_models
from .stages import FlowMatchingStage, VAEStage
from .transforms import CaloDREAMTransforms

__all__ = ["build_bns_stage", "build_energy_stage", "build_shape_stage", "build_vae_stage",
           "prepare", "trainer_config"]


def trainer_config(config: CaloDREAMConfig, stage: str) -> TrainerConfig:
    if stage == "bns":
        # the solver fit has its own loop; the trainer settings carry its seed and device
        b = config.bns
        return TrainerConfig(max_steps=b.max_iters, batch_size=b.batch_size, lr=b.lr,
                             seed=b.seed, device="cpu")
    if stage == "calibration":
        # fits a map and trains nothing: the shape network's seed and device
        return config.training.shape
    return getattr(config.training, stage)


def _transforms(ctx: StageContext) -> CaloDREAMTransforms:
    return ctx.state["calodream_transforms"]


def prepare(ctx: StageContext) -> None:
    """Fit the transforms on the training split, or reuse the stored ones when the
    checkpoint already holds trained stages (their networks were trained in that space)."""
    config: CaloDREAMConfig = ctx.config
    ckpt = ctx.checkpoint()
    if ckpt is not None and ckpt.stages:
        # the stored settings are not needed here (this run's replace them, and the
        # pipeline of the directory was checked before): only the fitted transforms
        transforms = CaloDREAMTransforms.from_state(ckpt.manifest["transforms"])
    else:
        tr = ctx.train_idx
        transforms = CaloDREAMTransforms.new(config, ctx.geometry).fit(
            ctx.showers[tr], ctx.energies[tr], full_space=config.space == "full")
    ctx.state["calodream_transforms"] = transforms
    ctx.state["transforms"] = transforms.state()


def _features(ctx: StageContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(u features (N, L), scaled E_inc (N, 1)) of the whole file, computed once."""
    if "u" not in ctx.state:
        t = _transforms(ctx)
        ctx.state["u"] = t.u_features(ctx.showers, ctx.energies)
        ctx.state["e"] = t.condition(ctx.energies)
    return ctx.state["u"], ctx.state["e"]


def _split(ctx: StageContext, **tensors: torch.Tensor):
    tr, va = ctx.train_idx, ctx.val_idx
    train = TensorDictDataset({k: v[tr] for k, v in tensors.items()})
    val = TensorDictDataset({k: v[va] for k, v in tensors.items()}) if len(va) else None
    return train, val


def build_energy_stage(ctx: StageContext) -> StageBuild:
    net = TransfusionEnergyNet(ctx.config.energy)
    u, e = _features(ctx)
    # teacher forcing: the conditions come from the true u's (u_data), the flow acts on x
    train, val = _split(ctx, x=u, e_inc=e, u_data=u)
    return StageBuild(FlowMatchingStage("energy", net, time="element"), train, val)


def _volumes(ctx: StageContext, flat: torch.Tensor) -> torch.Tensor:
    return flat_to_volume(flat, tuple(ctx.geometry.image_shape))


def build_vae_stage(ctx: StageContext) -> StageBuild:
    config: CaloDREAMConfig = ctx.config
    vae = ConvVAE3d(config.vae)
    u, e = _features(ctx)
    x = _volumes(ctx, _transforms(ctx).layer_fractions(ctx.showers))
    train, val = _split(ctx, x=x, cond=torch.cat([e, u], dim=1))
    return StageBuild(VAEStage(vae, config.vae_beta), train, val)


@torch.no_grad()
def _posterior(vae: ConvVAE3d, x: torch.Tensor, cond: torch.Tensor, device: torch.device):
    """Posterior (mu, log variance) of the frozen VAE, computed on ``device``, kept on the
    host."""
    batch = pass_batch_size(device)
    vae.to(device)
    mus, logvars = [], []
    for lo in range(0, len(x), batch):
        mu, logvar = vae.encode_distribution(x[lo:lo + batch].to(device),
                                             cond[lo:lo + batch].to(device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    vae.to("cpu")
    return torch.cat(mus), torch.cat(logvars)


def build_shape_stage(ctx: StageContext) -> StageBuild:
    config: CaloDREAMConfig = ctx.config
    net = ViTVelocityField(config.shape)
    u, e = _features(ctx)
    cond = torch.cat([e, u], dim=1)
    t = _transforms(ctx)
    if config.space == "full":
        train, val = _split(ctx, x=_volumes(ctx, t.voxel_features(ctx.showers)), cond=cond)
    else:
        vae = ConvVAE3d(config.vae)
        ctx.frozen("vae", {"vae": vae})
        mu, logvar = _posterior(vae, _volumes(ctx, t.layer_fractions(ctx.showers)), cond,
                                ctx.device("shape"))
        train, val = _split(ctx, mu=mu, logvar=logvar, cond=cond)
    return StageBuild(FlowMatchingStage("shape", net, time="sample"), train, val)


def _frozen_generator(ctx: StageContext) -> CaloDREAM:
    config: CaloDREAMConfig = ctx.config
    models = build_calodream_models(config)
    for stage, module in models.items():
        ctx.frozen(stage, {stage: module})
    return CaloDREAM(config, ctx.geometry, models, _transforms(ctx))


def _condition_pool(model: CaloDREAM, n: int, generator: torch.Generator) -> torch.Tensor:
    """Shape-network conditions drawn from the frozen energy network (§3.4): E_inc
    log-uniform over the configured range, then u ~ p(u | E_inc)."""
    lo, hi = model.config.energy_range
    r = torch.rand(n, generator=generator, dtype=torch.float64)
    e = torch.exp(torch.log(torch.tensor(lo)) + r * (torch.log(torch.tensor(hi / lo))))
    u = model.sample_energies(e, generator=generator)
    return model.shape_condition(e, u).clone()


def build_bns_stage(ctx: StageContext) -> None:
    """Train the bespoke solver and save it as stage ``bns``; returns None (own loop)."""
    config: CaloDREAMConfig = ctx.config
    b = config.bns
    tcfg = ctx.trainer_configs["bns"]
    model = _frozen_generator(ctx)
    gen = torch.Generator().manual_seed(tcfg.seed)
    # ours: conditions come from a pool drawn once from the energy network (a fresh
    # autoregressive sample per iteration would cost 45 ODE solves each time); the pool
    # holds 20 batches, the noise x0 is fresh every iteration
    pool = _condition_pool(model, 20 * b.batch_size, gen)
    shape = (config.shape.in_channels, *config.shape.volume)

    def draw(batch_size: int, generator: torch.Generator | None):
        idx = torch.randint(len(pool), (batch_size,), generator=generator)
        x0 = torch.randn((batch_size, *shape), generator=generator)
        return x0, {"cond": pool[idx]}

    solver = BNSSolver(b.n_steps)
    history = train_bns(solver, model.shape_net, draw, loss=b.loss, reference=b.reference,
                        lr=b.lr, batch_size=b.batch_size, max_iters=b.max_iters,
                        patience=b.patience, val_batches=b.val_batches, generator=gen,
                        progress=False)
    meta = ctx.checkpoint_meta()
    save_checkpoint(ctx.out_dir, "bns", {solver.name: solver}, **meta,
                    extra={"loss": b.loss, "reference": b.reference,
                           "n_iters": history["n_iters"], "best_iter": history["best_iter"],
                           "best_loss": history["best_loss"],
                           "stop_reason": history["stop_reason"],
                           "val_gte_start": (history["val_gte"] or [None])[0],
                           "val_gte_best": (min(history["val_gte"]) if history["val_gte"]
                                            else None)})
    return None
