"""Pieces shared by the VQ-VAE variants: output container, softmax heads, validation."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .quantizer import CODEBOOK_UPDATES, QuantizerLosses

__all__ = [
    "CODEBOOK_INITS",
    "VQVAEBase",
    "VQVAEOutput",
    "check_choice",
    "check_codebook_options",
    "check_positive",
    "segment_softmax",
]

#: codebook initialisation: small uniform values, or k-means on encoder outputs
CODEBOOK_INITS = ("uniform", "data")


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


def check_codebook_options(cfg) -> None:
    """Range checks of the codebook fields shared by the VQ-VAE configs.

    ``codebook_init``: "uniform" (small uniform codes) or "data" (k-means on the encoder
    outputs of the first training batches, done by the training code);
    ``codebook_update``: "gradient" or "ema"; ``codebook_decay`` in [0, 1) (EMA only);
    ``dead_code_threshold`` >= 0 and ``dead_code_decay`` in [0, 1) (the per-batch usage
    average a code is revived below, and its decay); ``l2_normalize_codes``: cosine look-up.
    """
    check_choice("codebook_init", cfg.codebook_init, CODEBOOK_INITS)
    check_choice("codebook_update", cfg.codebook_update, CODEBOOK_UPDATES)
    if not 0.0 <= cfg.codebook_decay < 1.0:
        raise ConfigError(f"codebook_decay must be in [0, 1), got {cfg.codebook_decay}")
    if cfg.dead_code_threshold < 0:
        raise ConfigError(f"dead_code_threshold must be >= 0, got {cfg.dead_code_threshold}")
    if not 0.0 <= cfg.dead_code_decay < 1.0:
        raise ConfigError(f"dead_code_decay must be in [0, 1), got {cfg.dead_code_decay}")


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
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one shower's encoder output, (vq_dim, *code grid), as the shared
        :class:`~caloforge.models.autoencoders.base.Autoencoder` interface reports it."""
        return (self.config.vq_dim, *self.config.latent_shape)

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
        """Parameters (encoder + codebook + decoder; the discriminator is separate).

        The codebook counts whether the optimiser trains it or moving averages do (then
        it is a buffer).
        """
        n = sum(p.numel() for p in self.parameters())
        book = self.quantizer.codebook.weight
        if not isinstance(book, nn.Parameter):
            n += book.numel()
        return n if include_codebook else n - book.numel()

    @torch.no_grad()
    def init_codebook(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None,
                      n_iter: int = 10) -> None:
        """k-means initialisation of the codebook from the encoder outputs of a batch
        (``codebook_init="data"``). x, cond as in :meth:`forward`."""
        self.quantizer.init_from_data(self.encode(x, cond, class_id), n_iter=n_iter)
