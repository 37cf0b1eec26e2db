"""Latent priors (stage 2 models)."""

from .gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
