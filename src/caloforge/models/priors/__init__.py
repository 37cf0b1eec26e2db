"""Latent priors (stage 2 models): the GPT token prior and the ViT velocity field."""

from .gpt import GPT, GPTConfig
from .vit import ViTConfig, ViTVelocityField

__all__ = ["GPT", "GPTConfig", "ViTConfig", "ViTVelocityField"]
