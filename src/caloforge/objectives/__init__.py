"""Training objectives, separate from the networks: ``terms = objective(model, batch)``."""

from .adversarial import (
    VQGANObjective,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    warmup_factor,
)
from .consistency import (
    ConsistencyDistillation,
    cd_boundaries,
    consistency_distillation_loss,
    heun_step,
)
from .edm import EDMObjective, edm_denoising_loss, masked_mean
from .flow_matching import FlowMatchingObjective, flow_matching_loss
from .next_token import NextTokenObjective, next_token_cross_entropy
from .score_matching import ScoreMatchingObjective, denoising_score_matching_loss
from .vae import VAEObjective, gaussian_kl
from .vq import PhysicsAwareLoss, VQObjective, fractions_from_x, x_from_fractions

__all__ = [
    "ConsistencyDistillation",
    "EDMObjective",
    "FlowMatchingObjective",
    "NextTokenObjective",
    "PhysicsAwareLoss",
    "ScoreMatchingObjective",
    "VAEObjective",
    "VQGANObjective",
    "VQObjective",
    "adaptive_weight",
    "cd_boundaries",
    "consistency_distillation_loss",
    "denoising_score_matching_loss",
    "discriminator_loss",
    "edm_denoising_loss",
    "flow_matching_loss",
    "fractions_from_x",
    "gaussian_kl",
    "generator_loss",
    "heun_step",
    "masked_mean",
    "next_token_cross_entropy",
    "warmup_factor",
    "x_from_fractions",
]
