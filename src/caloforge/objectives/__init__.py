"""Training objectives, separate from the networks: ``terms = objective(model, batch)``."""

from .adversarial import (
    VQGANObjective,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    warmup_factor,
)
from .flow_matching import FlowMatchingObjective, flow_matching_loss
from .next_token import NextTokenObjective, next_token_cross_entropy
from .score_matching import ScoreMatchingObjective, denoising_score_matching_loss
from .vae import VAEObjective, gaussian_kl
from .vq import PhysicsAwareLoss, VQObjective, fractions_from_x, x_from_fractions

__all__ = [
    "FlowMatchingObjective",
    "NextTokenObjective",
    "PhysicsAwareLoss",
    "ScoreMatchingObjective",
    "VAEObjective",
    "VQGANObjective",
    "VQObjective",
    "adaptive_weight",
    "denoising_score_matching_loss",
    "discriminator_loss",
    "flow_matching_loss",
    "fractions_from_x",
    "gaussian_kl",
    "generator_loss",
    "next_token_cross_entropy",
    "warmup_factor",
    "x_from_fractions",
]
