"""CaloLatent presets: paper sizes, tiny CPU variants, and the baseline VAE of the paper.

``calolatent-ds2`` has the networks of §2 and the reference configuration (docs/
calolatent.md): 500 epochs of the layer model and the VAE, 350 of the latent model, Adamax
with a cosine decay from 4e-4 at a global batch of 512 (run it with ``torchrun
--nproc-per-node 4``: the batch size is per process).

The ``-tiny`` presets keep every part of the system (three networks, the preprocessing, the
VP-SDE, the 200-step Euler-Maruyama samplers) with narrow networks and short trainings, so
that all three stages train on a 2-core CPU in well under an hour (docs/calolatent.md has
the measured times). The VAE's full-resolution blocks (48 x 16 x 12 positions) dominate
the cost, hence its 4-channel first level.

The ``-vae-baseline`` presets are the paper's "vanilla VAE": the same VAE with KL weight 1
and z ~ N(0, I) at generation; they have no ``latent`` stage.
"""

from __future__ import annotations

from ...models import LatentScoreConfig, LayerDiffusionConfig, ResNetVAE3dConfig
from ...training import TrainerConfig
from .config import CaloLatentConfig, CaloLatentTraining

__all__ = ["CALOLATENT_PRESETS"]


def _tiny_trainer(steps: int, batch: int, lr: float) -> TrainerConfig:
    # ours: a larger rate than the paper's 4e-4 for the short trainings; Adamax, cosine
    # to 0, no warm-up and no EMA as the reference
    return TrainerConfig(max_steps=steps, optimizer="adamax", schedule="cosine",
                         batch_size=batch, lr=lr, min_lr=0.0, warmup_steps=0, grad_clip=0.0,
                         ema_decay=0.0, log_every=50, val_every=max(steps // 10, 1),
                         val_batches=10, checkpoint_every=max(steps // 5, 1))


def _ds2(tiny: bool, baseline: bool) -> CaloLatentConfig:
    if not tiny:
        cfg = CaloLatentConfig()
    else:
        cfg = CaloLatentConfig(
            # 256 wide: E_layer separation 0.0039 against 0.0074 at 128 (layer model alone,
            # heun-10; docs/calolatent.md), at 0.27 ms per shower (batch 1000)
            layer_model=LayerDiffusionConfig(hidden_dim=256),
            vae=ResNetVAE3dConfig(stem_channels=4, widths=(4, 16), bottleneck_width=32,
                                  n_bottleneck=1, block_depth=1, cond_dim=32),
            latent_model=LatentScoreConfig(hidden_dim=256),
            # ours: more of a small training file for training
            validation_fraction=0.05,
            # ours: the probability flow at 20 evaluations (rho = 3) beats the paper's
            # 200-step Euler-Maruyama on these models' layer energies, 10x faster
            layer_sampler="heun-10", latent_sampler="heun-10",
            training=CaloLatentTraining(layer=_tiny_trainer(40000, 128, 2e-3),
                                        vae=_tiny_trainer(2500, 32, 2e-3),
                                        latent=_tiny_trainer(4000, 128, 2e-3)),
        )
    if baseline:
        cfg.kl_weight = 1.0
        cfg.latent_prior = "normal"
    return cfg


_FACTORIES = {
    "calolatent-ds2": (lambda: _ds2(False, False),
                       "CaloLatent, ds2, paper sizes (layer diffusion, 3-D VAE, latent diffusion)"),
    "calolatent-ds2-tiny": (lambda: _ds2(True, False),
                            "small CPU variant of calolatent-ds2, trains in well under an hour"),
    "calolatent-ds2-vae-baseline": (lambda: _ds2(False, True),
                                    "the paper's baseline VAE: KL weight 1, z ~ N(0, I)"),
    "calolatent-ds2-vae-baseline-tiny": (lambda: _ds2(True, True),
                                         "small CPU variant of the baseline VAE"),
}

#: CaloLatent presets: name -> (factory, description), registered with the pipeline.
CALOLATENT_PRESETS = _FACTORIES
