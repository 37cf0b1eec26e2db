"""Training objectives, separate from the networks: ``terms = objective(model, batch)``."""

from .adversarial import (
    VQGANObjective,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    warmup_factor,
)
from .next_token import NextTokenObjective, next_token_cross_entropy
from .vq import PhysicsAwareLoss, VQObjective, fractions_from_x, x_from_fractions

__all__ = [
    "NextTokenObjective",
    "PhysicsAwareLoss",
    "VQGANObjective",
    "VQObjective",
    "adaptive_weight",
    "discriminator_loss",
    "fractions_from_x",
    "generator_loss",
    "next_token_cross_entropy",
    "warmup_factor",
    "x_from_fractions",
]
