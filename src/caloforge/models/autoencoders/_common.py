"""Pieces shared by the VQ-VAE variants: output container, softmax heads, validation."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .quantizer import QuantizerLosses

__all__ = ["VQVAEBase", "VQVAEOutput", "check_choice", "check_positive", "segment_softmax"]


class VQVAEOutput(NamedTuple):
    """What a VQ-VAE forward pass returns (same fields for every variant).

    fractions: energy fractions f, input-shaped, summing to 1 over the shower (global) or
        over each layer (layer-wise): showers are E = f * R (Eq. 6).
    logits:    the decoder's pre-softmax output x* (input-shaped).
    indices:   code indices (N, *latent_shape).
    losses:    :class:`QuantizerLosses` of the quantiser.
    """

    fractions: Tensor
    logits: Tensor
    indices: Tensor
    losses: QuantizerLosses


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def check_positive(**values: int | float) -> None:
    for k, v in values.items():
        if v <= 0:
            raise ConfigError(f"{k} must be positive, got {v!r}")


def segment_softmax(logits: Tensor, sizes: list[int]) -> Tensor:
    """Softmax over consecutive segments of the last axis (layer-wise normalisation).

    logits (N, V) with sum(sizes) == V -> (N, V), each segment summing to 1.
    """
    parts = torch.split(logits, sizes, dim=-1)
    return torch.cat([torch.softmax(p, dim=-1) for p in parts], dim=-1)


class VQVAEBase(nn.Module):
    """What every VQ-VAE variant shares once it has built its parts.

    A subclass sets ``cond_embed``, ``quantizer`` and ``dec_out`` (the decoder's last layer)
    and implements ``encode``, ``decode_logits`` and ``normalise`` in its own layout.
    """

    @property
    def last_layer(self) -> Tensor:
        """Weight of the decoder's last layer before the softmax (for the adaptive GAN weight)."""
        return self.dec_out.weight

    def embed_condition(self, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """cond (N, cond_in_dim) -> (N, cond_dim)."""
        return self.cond_embed(cond, class_id)

    def forward(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None) -> VQVAEOutput:
        """x in Eq. 5's space (input layout), cond (N, cond_in_dim) -> :class:`VQVAEOutput`."""
        z_e = self.encode(x, cond, class_id)
        z_q, indices, losses = self.quantizer(z_e)
        logits = self.decode_logits(z_q, cond, class_id)
        return VQVAEOutput(self.normalise(logits), logits, indices, losses)

    def n_parameters(self, include_codebook: bool = True) -> int:
        """Trainable parameters (encoder + codebook + decoder; the discriminator is separate)."""
        n = sum(p.numel() for p in self.parameters())
        return n if include_codebook else n - self.quantizer.codebook.weight.numel()
