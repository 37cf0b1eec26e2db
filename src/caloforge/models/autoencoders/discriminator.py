"""Discriminators for the adversarial term of stage 1 (Calo-VQ Eq. 3-4, "VQGAN").

The paper does not give the architecture. Our choice, documented in docs/calovq_networks.md
("Discriminator"):

* :class:`CylindricalDiscriminator` — a conditional *patch* discriminator on the x-space
  calo-image (N, C, Z, A): cylindrical convolutions (so it respects the angular symmetry
  as the generator does), Z down-sampled by stride 2, LeakyReLU, GroupNorm; the incident
  energy enters by a projection term (the logit of every patch gets <phi(h), embed(c)>)
  and by concatenating the embedding as an extra input channel. Output: one logit per
  patch, (N, 1, Z', A), so the generator gets local feedback (as in PatchGAN / VQGAN).
* :class:`DenseDiscriminator` — the same idea for flat ds1 vectors: an MLP on x (N, V)
  with the condition embedding concatenated; output (N, 1).

Both see the x-space input of Eq. 5 (real: the pre-processed shower; fake: ln(a + b f)/c
of the decoder's fractions) because that is the space of Eq. 2's reconstruction loss. Their
parameters are not counted in "stage 1 #pars" (docs/calovq.md, A19).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import ConditionEmbedding, CylindricalConv2d, group_norm
from ._common import check_positive

__all__ = [
    "CylindricalDiscriminatorConfig",
    "CylindricalDiscriminator",
    "DenseDiscriminatorConfig",
    "DenseDiscriminator",
]


@dataclass
class CylindricalDiscriminatorConfig:
    """Fields: in_channels (C), channels per stage (each stage halves Z), cond_in_dim,
    cond_dim (embedding width), n_classes."""

    in_channels: int = 9
    channels: tuple[int, ...] = (64, 128, 128)
    cond_in_dim: int = 1
    cond_dim: int = 16
    n_classes: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"channels must be positive, got {self.channels}")
        check_positive(
            in_channels=self.in_channels, cond_in_dim=self.cond_in_dim, cond_dim=self.cond_dim
        )


class CylindricalDiscriminator(nn.Module):
    """Conditional patch discriminator on calo-images.

    Shapes: x (N, C, Z, A), cond (N, cond_in_dim) -> logits (N, 1, Z', A) with
    Z' = Z halved (rounding up) once per stage after the first.
    """

    def __init__(self, config: CylindricalDiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.cond_embed = ConditionEmbedding(cfg.cond_in_dim, cfg.cond_dim, 0, cfg.n_classes)
        layers: list[nn.Module] = []
        prev = cfg.in_channels + cfg.cond_dim
        for i, ch in enumerate(cfg.channels):
            layers.append(CylindricalConv2d(prev, ch, 3, stride_z=1 if i == 0 else 2))
            if i > 0:
                layers.append(group_norm(ch))
            layers.append(nn.LeakyReLU(0.2))
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = CylindricalConv2d(prev, 1, 3)
        self.proj = nn.Linear(cfg.cond_dim, prev)

    def forward(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        c = self.cond_embed(cond, class_id)
        n, _, z, a = x.shape
        h = self.features(torch.cat([x, c[:, :, None, None].expand(n, -1, z, a)], dim=1))
        # projection conditioning: an energy-dependent direction in feature space per patch
        return (
            self.head(h)
            + (h * self.proj(c)[:, :, None, None]).sum(1, keepdim=True) / h.shape[1] ** 0.5
        )


@dataclass
class DenseDiscriminatorConfig:
    """Fields: n_voxels, hidden_dim, n_hidden, cond_in_dim, cond_dim, n_classes."""

    n_voxels: int = 368
    hidden_dim: int = 256
    n_hidden: int = 2
    cond_in_dim: int = 1
    cond_dim: int = 16
    n_classes: int = 0

    def __post_init__(self) -> None:
        check_positive(
            n_voxels=self.n_voxels,
            hidden_dim=self.hidden_dim,
            cond_in_dim=self.cond_in_dim,
            cond_dim=self.cond_dim,
        )
        if self.n_hidden < 1:
            raise ConfigError(f"n_hidden must be >= 1, got {self.n_hidden}")


class DenseDiscriminator(nn.Module):
    """Conditional MLP discriminator on flat x (N, V), cond (N, cond_in_dim) -> (N, 1)."""

    def __init__(self, config: DenseDiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.cond_embed = ConditionEmbedding(cfg.cond_in_dim, cfg.cond_dim, 0, cfg.n_classes)
        layers: list[nn.Module] = []
        prev = cfg.n_voxels + cfg.cond_dim
        for _ in range(cfg.n_hidden):
            layers += [nn.Linear(prev, cfg.hidden_dim), nn.LeakyReLU(0.2)]
            prev = cfg.hidden_dim
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        c = self.cond_embed(cond, class_id)
        return self.net(torch.cat([x, c], dim=-1))
