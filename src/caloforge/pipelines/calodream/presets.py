"""CaloDREAM presets: paper sizes (Tab. 1, 2, 4) and tiny CPU variants.

A-numbers are the readings of docs/calodream.md. Width reading (A9): the energy network
takes Tab. 1's widths (transformer FF 1024, head 256; 1.70 M parameters). With the ds2 ViT
(26.0 M) the full-space ds2 model has 27.7 M parameters, near the CaloChallenge entry's
28.4 M (which used the authors' wider 512/512 energy network). Schedules are the paper's
epochs (Tab. 1, 2, 4) converted to steps for 100k training showers; the optimiser is AdamW
with eps 1e-6 (A6), cosine from 1e-3 to 0 without warm-up (A8), gradient clipping 100
(ds2) / 50 (ds3) for the ViTs, no EMA (A7).
"""

from __future__ import annotations

from ...models import TransfusionConfig, VAEConfig, ViTConfig
from ...training import TrainerConfig
from .config import BNSConfig, CaloDREAMConfig, CaloDREAMTraining

__all__ = ["CALODREAM_PRESETS"]


def _trainer(steps: int, batch: int, lr: float = 1e-3, **kw) -> TrainerConfig:
    base = dict(max_steps=steps, batch_size=batch, lr=lr, min_lr=0.0, warmup_steps=0,
                schedule="cosine", optimizer="adamw", eps=1e-6, weight_decay=0.0,
                grad_clip=0.0, ema_decay=0.0, log_every=100, val_every=max(steps // 20, 1),
                val_batches=10, checkpoint_every=max(steps // 20, 1))
    base.update(kw)
    return TrainerConfig(**base)


def _paper(geometry: str, latent: bool) -> CaloDREAMConfig:
    ds3 = geometry == "ds3"
    volume = (45, 50, 18) if ds3 else (45, 16, 9)
    energy = _trainer(12_200, 4096)  # 500 epochs of 100k showers
    if not latent:
        shape = (ViTConfig(volume=volume, patch=(3, 5, 2), dim=240, n_heads=6, mlp_hidden=720,
                           n_blocks=6) if ds3 else ViTConfig())
        steps = 937_500 if ds3 else 1_250_000  # 600 / 800 epochs at batch 64
        training = CaloDREAMTraining(
            energy=energy,
            shape=_trainer(steps, 64, grad_clip=50.0 if ds3 else 100.0, weight_decay=1e-5),
        )
        return CaloDREAMConfig(geometry=geometry, space="full", shape=shape, training=training)
    vae = VAEConfig.ds3() if ds3 else VAEConfig.ds2()
    c, *lat = vae.latent_shape
    shape = ViTConfig(in_channels=c, volume=tuple(lat), patch=(3, 2, 2) if ds3 else (3, 1, 1),
                      dim=240, n_heads=6, mlp_hidden=960, n_blocks=10)
    steps = 312_500 if ds3 else 625_000  # 400 / 800 epochs at batch 128
    training = CaloDREAMTraining(
        energy=energy,
        # 200 epochs, OneCycle to 1e-3 (Tab. 4); batch 128 and wd 1e-4 as A20
        vae=_trainer(156_250, 128, schedule="onecycle", weight_decay=1e-4),
        shape=_trainer(steps, 128, grad_clip=50.0 if ds3 else 100.0, weight_decay=1e-5),
    )
    return CaloDREAMConfig(geometry=geometry, space="latent", vae=vae, shape=shape,
                           normalised_cut=1e-6, training=training)


def _tiny(latent: bool) -> CaloDREAMConfig:
    # ours: the paper's structure (one-hot + zero-pad tokens need d_model >= 47) with
    # fewer and narrower layers, schedules of minutes on a 2-core CPU
    energy = TransfusionConfig(d_model=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=1,
                               ff_dim=128, head_hidden=64, head_layers=4, time_embed_dim=32)
    training = CaloDREAMTraining(
        energy=_trainer(3000, 256, lr=2e-3, val_every=250, checkpoint_every=500, log_every=50),
        shape=_trainer(6000, 64, lr=1e-3, grad_clip=100.0, val_every=500,
                       checkpoint_every=500, log_every=50),
    )
    # ours: an RK4-10 reference (40 evaluations, fourth order) instead of midpoint-100 and
    # batches of 32: each iteration integrates the reference, which dominates on a CPU
    bns = BNSConfig(n_steps=8, max_iters=150, patience=40, batch_size=32, reference="rk4-10")
    if not latent:
        # ours: patches (3, 16, 3), 45 tokens instead of Tab. 2's 135, with tokens of 160
        # >= the 144 voxels of a patch, so the velocity reaches every direction of a patch
        # (a token narrower than its patch leaves part of the noise in the samples:
        # docs/calodream.md); a step costs about 0.6 of the 135-token ViT's on a CPU
        shape = ViTConfig(patch=(3, 16, 3), dim=160, n_heads=4, mlp_hidden=320, n_blocks=3,
                          time_freq_dim=64)
        return CaloDREAMConfig(energy=energy, shape=shape, training=training, bns=bns,
                               energy_solver="rk4-20", shape_solver="bns-8")
    vae = VAEConfig.ds2(channels=(16, 16), cond_dim=32, cond_hidden_dim=32)
    c, *lat = vae.latent_shape
    shape = ViTConfig(in_channels=c, volume=tuple(lat), patch=(3, 3, 3), dim=96, n_heads=4,
                      mlp_hidden=192, n_blocks=3, time_freq_dim=64)
    training.vae = _trainer(3000, 64, schedule="onecycle", val_every=500, checkpoint_every=500,
                            log_every=50)
    return CaloDREAMConfig(space="latent", energy=energy, vae=vae, shape=shape,
                           normalised_cut=1e-6, training=training, bns=bns,
                           energy_solver="rk4-20", shape_solver="bns-8")


#: name -> (factory, description), registered with the pipeline
CALODREAM_PRESETS = {
    "calodream-ds2": (lambda: _paper("ds2", False),
                      "CaloDREAM, ds2, full-space ViT, paper size (27.7 M parameters)"),
    "calodream-ds3": (lambda: _paper("ds3", False),
                      "CaloDREAM, ds3, full-space ViT, paper size"),
    "calodream-ds2-latent": (lambda: _paper("ds2", True),
                             "CaloDREAM, ds2, VAE + latent ViT (laViT), paper size"),
    "calodream-ds3-latent": (lambda: _paper("ds3", True),
                             "CaloDREAM, ds3, VAE + latent ViT (laViT), paper size"),
    "calodream-ds2-tiny": (lambda: _tiny(False),
                           "small CPU variant of calodream-ds2 (full space)"),
    "calodream-ds2-latent-tiny": (lambda: _tiny(True),
                                  "small CPU variant of calodream-ds2-latent"),
}
