"""Pieces shared by the VQ-VAE variants: output container, softmax heads, validation."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...errors import ConfigError
from .quantizer import QuantizerLosses

__all__ = ["VQVAEOutput", "check_choice", "check_positive", "segment_softmax"]


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
