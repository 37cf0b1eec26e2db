"""VQ-VAE for irregular geometries (CaloChallenge ds1 photons and pions), Calo-VQ §4.2.

"1D convolutional layer and fully connected layer are combined to handle the irregular
geometry" ([P] §4.2); Fig. 2's content is not in the text, so this layout is ours:

Encoder: flat x (N, V) -> Linear to ``hidden_dim`` -> ``n_hidden`` FiLM-conditioned
residual MLP blocks -> Linear to (n_shower_codes * conv_channels), viewed as a sequence
(N, conv_channels, L) -> a 1-D residual block (kernel 3) -> 1-D conv to ``vq_dim``.
Decoder: mirror image; the last Linear gives V logits, and a softmax runs over the whole
shower (global) or over each layer's voxel slice (layer-wise, slices from ``layer_sizes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import ConditionEmbedding, FiLM, ResidualBlock
from ._common import (
    VQVAEBase,
    check_choice,
    check_codebook_options,
    check_positive,
    segment_softmax,
)
from .quantizer import VectorQuantizer

__all__ = ["DenseVQVAEConfig", "DenseVQVAE"]


@dataclass
class DenseVQVAEConfig:
    """Configuration of :class:`DenseVQVAE`; defaults are our ds1-photon paper-size model.

    Fields:
        layer_sizes: voxels per layer, in the flat order (ds1 photons: 8, 160, 190, 5, 5 ->
            368 voxels; empty layers may be listed as 0); layer offsets are their
            cumulative sums.
        hidden_dim: width of the fully connected part (ours).
        n_hidden: residual MLP blocks per side (Table 6 "hidden layers", 5 for ds1).
        conv_channels: channels of the 1-D convolutional part (ours).
        n_shower_codes: latent sequence length L (Table 6: 32 for ds1).
        vq_dim, n_codes: code dimension (256) and codebook size (1024).
        cond_in_dim, cond_dim, cond_hidden_dim, n_classes: condition embedding (Table 6
            "cond. dim" is 3 for ds1, docs/calovq.md, A10).
        normalisation: "layer" (ds1 presets, Table 6) or "global".
        revive_dead_codes, dead_code_threshold, dead_code_decay, codebook_init, codebook_update,
            codebook_decay, l2_normalize_codes: codebook health, as in
            :class:`~caloforge.models.autoencoders.VQVAEConfig`.
        dropout: in the residual blocks.
    """

    layer_sizes: tuple[int, ...] = (8, 160, 190, 5, 5)
    hidden_dim: int = 352
    n_hidden: int = 5
    conv_channels: int = 32
    n_shower_codes: int = 32
    vq_dim: int = 256
    n_codes: int = 1024
    cond_in_dim: int = 1
    cond_dim: int = 3
    cond_hidden_dim: int = 64
    n_classes: int = 0
    normalisation: str = "layer"
    revive_dead_codes: bool = False
    dead_code_threshold: float = 1e-3
    dead_code_decay: float = 0.99
    codebook_init: str = "uniform"
    codebook_update: str = "gradient"
    codebook_decay: float = 0.99
    l2_normalize_codes: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.layer_sizes = tuple(int(s) for s in self.layer_sizes)
        check_choice("normalisation", self.normalisation, ("global", "layer"))
        check_codebook_options(self)
        # zero-sized layers are allowed, so a geometry's per-layer counts (with its
        # inactive layers) can be passed as they are
        if (
            not self.layer_sizes
            or any(s < 0 for s in self.layer_sizes)
            or sum(self.layer_sizes) == 0
        ):
            raise ConfigError(
                f"layer_sizes must be voxel counts >= 0, not all 0; got {self.layer_sizes}"
            )
        check_positive(
            hidden_dim=self.hidden_dim,
            conv_channels=self.conv_channels,
            n_shower_codes=self.n_shower_codes,
            vq_dim=self.vq_dim,
            n_codes=self.n_codes,
            cond_in_dim=self.cond_in_dim,
            cond_dim=self.cond_dim,
        )
        if self.n_hidden < 0:
            raise ConfigError(f"n_hidden must be >= 0, got {self.n_hidden}")

    @property
    def n_voxels(self) -> int:
        return sum(self.layer_sizes)

    @property
    def layer_offsets(self) -> tuple[int, ...]:
        out = [0]
        for s in self.layer_sizes:
            out.append(out[-1] + s)
        return tuple(out)

    @property
    def latent_shape(self) -> tuple[int]:
        return (self.n_shower_codes,)


class _ResMLP(nn.Module):
    """LayerNorm -> Linear -> FiLM -> SiLU -> Linear, with a residual. (N, d) -> (N, d)."""

    def __init__(self, d: int, cond_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, d)
        self.film = FiLM(cond_dim, d)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d, d)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        y = self.film(self.fc1(self.norm(h)), c)
        return h + self.fc2(self.drop(F.silu(y)))


class DenseVQVAE(VQVAEBase):
    """Conditional VQ-VAE on flat voxel vectors (N, V) with layer-wise or global softmax."""

    def __init__(self, config: DenseVQVAEConfig) -> None:
        super().__init__()
        self.config = cfg = config
        v, d, ch, n_l = cfg.n_voxels, cfg.hidden_dim, cfg.conv_channels, cfg.n_shower_codes
        self.cond_embed = ConditionEmbedding(
            cfg.cond_in_dim, cfg.cond_dim, cfg.cond_hidden_dim, cfg.n_classes
        )
        # encoder
        self.enc_in = nn.Linear(v, d)
        self.enc_blocks = nn.ModuleList(
            _ResMLP(d, cfg.cond_dim, cfg.dropout) for _ in range(cfg.n_hidden)
        )
        self.enc_to_seq = nn.Linear(d, n_l * ch)
        self.enc_conv = ResidualBlock(
            ch, ch, cfg.cond_dim, dims=1, kernel_size=3, dropout=cfg.dropout
        )
        self.enc_out = nn.Conv1d(ch, cfg.vq_dim, 1)
        self.quantizer = VectorQuantizer(
            cfg.n_codes, cfg.vq_dim, cfg.revive_dead_codes, cfg.dead_code_threshold,
            cfg.dead_code_decay, update=cfg.codebook_update, ema_decay=cfg.codebook_decay,
            l2_normalize=cfg.l2_normalize_codes,
        )
        # decoder
        self.dec_in = nn.Conv1d(cfg.vq_dim, ch, 1)
        self.dec_conv = ResidualBlock(
            ch, ch, cfg.cond_dim, dims=1, kernel_size=3, dropout=cfg.dropout
        )
        self.dec_from_seq = nn.Linear(n_l * ch, d)
        self.dec_blocks = nn.ModuleList(
            _ResMLP(d, cfg.cond_dim, cfg.dropout) for _ in range(cfg.n_hidden)
        )
        self.dec_norm = nn.LayerNorm(d)
        self.dec_out = nn.Linear(d, v)

    def encode(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """x (N, V), cond (N, cond_in_dim) -> z_e (N, vq_dim, L)."""
        c = self.embed_condition(cond, class_id)
        h = self.enc_in(x)
        for b in self.enc_blocks:
            h = b(h, c)
        s = self.enc_to_seq(F.silu(h)).view(
            x.shape[0], self.config.conv_channels, self.config.n_shower_codes
        )
        return self.enc_out(F.silu(self.enc_conv(s, c)))

    def decode_logits(self, z_q: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """z_q (N, vq_dim, L) -> logits (N, V)."""
        c = self.embed_condition(cond, class_id)
        s = self.dec_conv(self.dec_in(z_q), c)
        h = self.dec_from_seq(F.silu(s).flatten(1))
        for b in self.dec_blocks:
            h = b(h, c)
        return self.dec_out(F.silu(self.dec_norm(h)))

    def normalise(self, logits: Tensor) -> Tensor:
        """Softmax over all voxels (global) or each layer's slice (layer-wise). (N, V) -> (N, V)."""
        if self.config.normalisation == "global":
            return torch.softmax(logits, dim=-1)
        return segment_softmax(logits, list(self.config.layer_sizes))

    def decode(self, z_q: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """z_q (N, vq_dim, L) -> fractions (N, V)."""
        return self.normalise(self.decode_logits(z_q, cond, class_id))

    def decode_indices(
        self, indices: Tensor, cond: Tensor, class_id: Tensor | None = None
    ) -> Tensor:
        """Codes (N, L) -> fractions (N, V)."""
        return self.decode(self.quantizer.decode_indices(indices), cond, class_id)
