"""3-D vision-transformer velocity field over calorimeter volumes (CaloDREAM §3.2, Tab. 2).

The same network serves the full voxel space (C = 1 on (L, A, R) = (45, 16, 9) for ds2)
and a VAE latent space (C = 2 on (15, 9, 9) for ds2, "laViT", §3.3):

    x_t (N, C, L, A, R) --patchify + one shared Linear--> (N, T, D) + learnable positions
    c = TimestepEmbedder(t) + MLP(cond)            (separate dense networks, summed)
    tokens --DiT blocks (adaLN-Zero, Eq. 11)--> modulated final Linear --> unpatchify

``cond`` is [scaled E_inc, u_0 … u_44] (46 values), with the u's in the space the energy
network produces them. adaLN and output layers start at zero, so a fresh network is the
zero velocity field.

Paper sizes: ds2 full space, patch (3, 16, 1), D = 480, 6 heads, MLP 1920, 6 blocks:
135 tokens of 48, about 26.0 M parameters. ds2 latent, patch (3, 1, 1), D = 240,
6 heads, MLP 960, 10 blocks: 405 tokens of 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.dit import DiTBlock, DiTFinalLayer
from ...nn.embeddings import TimestepEmbedder
from ...nn.patch import LearnablePositionEncoding, PatchEmbed3d, patch_grid, unpatchify3d

__all__ = ["ViTConfig", "ViTVelocityField"]


@dataclass
class ViTConfig:
    """Configuration of :class:`ViTVelocityField`; defaults are the ds2 full-space ViT.

    Fields:
        in_channels: C (1 for voxels, the latent channels for a VAE latent).
        volume: (L, A, R).
        patch: (pL, pA, pR), dividing ``volume``.
        dim: token width D ("embedding dimension").
        n_heads: attention heads.
        mlp_hidden: hidden width of each block's MLP.
        n_blocks: DiT blocks.
        cond_dim: condition values, 1 + 45 (scaled E_inc and the u's).
        time_freq_dim: width of the sinusoidal time features before their MLP.
    """

    in_channels: int = 1
    volume: tuple[int, int, int] = (45, 16, 9)
    patch: tuple[int, int, int] = (3, 16, 1)
    dim: int = 480
    n_heads: int = 6
    mlp_hidden: int = 1920
    n_blocks: int = 6
    cond_dim: int = 46
    time_freq_dim: int = 256

    def __post_init__(self) -> None:
        # lists arrive from JSON/TOML configs; keep tuples so configs compare and hash
        self.volume = tuple(int(v) for v in self.volume)
        self.patch = tuple(int(p) for p in self.patch)
        for k in ("in_channels", "dim", "n_heads", "mlp_hidden", "n_blocks", "cond_dim"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be positive, got {getattr(self, k)!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} must be divisible by n_heads {self.n_heads}")
        if self.dim % 2:
            raise ConfigError(f"dim must be even (sin/cos position features), got {self.dim}")
        if self.time_freq_dim <= 0 or self.time_freq_dim % 2:
            raise ConfigError(f"time_freq_dim must be positive and even, got {self.time_freq_dim}")
        patch_grid(self.volume, self.patch)  # raises ConfigError when it does not divide
        if self.dim < self.patch_dim:
            # the velocity of a patch is a fixed linear map of a dim-wide token, so it spans
            # at most dim of the patch's patch_dim directions: the noise in the others is
            # never transported and reaches the samples unchanged
            raise ConfigError(
                f"dim {self.dim} is smaller than the patch size {self.patch_dim} "
                f"(channels x {'x'.join(map(str, self.patch))}): the velocity could not reach "
                f"every direction of a patch; use dim >= {self.patch_dim} or smaller patches")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Patches per axis (nL, nA, nR)."""
        return patch_grid(self.volume, self.patch)

    @property
    def n_tokens(self) -> int:
        nl, na, nr = self.grid
        return nl * na * nr

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch[0] * self.patch[1] * self.patch[2]


class ViTVelocityField(nn.Module):
    """Conditional velocity v(x_t, t, cond) on (C, L, A, R) volumes."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.patch_embed = PatchEmbed3d(cfg.in_channels, cfg.volume, cfg.patch, cfg.dim)
        self.pos = LearnablePositionEncoding(cfg.grid, cfg.dim)
        self.t_embed = TimestepEmbedder(cfg.dim, cfg.time_freq_dim)
        self.cond_embed = nn.Sequential(
            nn.Linear(cfg.cond_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim)
        )
        for m in self.cond_embed:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.dim, cfg.n_heads, cfg.mlp_hidden) for _ in range(cfg.n_blocks)
        )
        self.final = DiTFinalLayer(cfg.dim, cfg.patch_dim)

    def condition(self, t: Tensor, cond: Tensor) -> Tensor:
        """The condition vector: t (N,) and cond (N, cond_dim) -> (N, D)."""
        return self.t_embed(t) + self.cond_embed(cond)

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Tensor) -> Tensor:
        """Velocity at (x_t, t).

        Args:
            x_t: (N, C, L, A, R).
            t: (N,) or (N, 1) flow times in [0, 1]; a number or 0-d tensor (as ODE solvers
                pass it) is used for all N.
            cond: (N, cond_dim) scaled E_inc and u's.

        Returns:
            (N, C, L, A, R).
        """
        n = x_t.shape[0]
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        t = t.expand(n) if t.dim() == 0 else t.reshape(n)
        if cond.shape != (n, self.config.cond_dim):
            raise ValueError(
                f"cond must have shape ({n}, {self.config.cond_dim}), got {tuple(cond.shape)}"
            )
        c = self.condition(t, cond)
        h = self.pos(self.patch_embed(x_t))
        for blk in self.blocks:
            h = blk(h, c)
        out = self.final(h, c)
        return unpatchify3d(out, self.config.patch, (self.config.in_channels, *self.config.volume))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
