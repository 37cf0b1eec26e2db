"""Non-overlapping 3-D patches of (C, L, A, R) volumes, their embedding and positions.

A volume (N, C, L, A, R) — channels, layers, angular bins, radial bins — is cut into
patches of (pL, pA, pR) voxels. Tokens are ordered layer-major, then angle, then radius:
token k of patch indices (l, a, r) has k = (l * nA + a) * nR + r, with nA = A / pA and
nR = R / pR. Inside a token the entries are ordered (C, pL, pA, pR).

Examples (CaloDREAM Tab. 2): the ds2 voxels (1, 45, 16, 9) with patches (3, 16, 1) give
135 tokens of 48 entries (each patch a full ring of 3 layers x 1 radial bin); the ds2
latent (2, 15, 9, 9) with patches (3, 1, 1) gives 405 tokens of 6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "patch_grid",
    "patchify3d",
    "unpatchify3d",
    "PatchEmbed3d",
    "LearnablePositionEncoding",
]

_AXES = ("layer", "alpha", "r")


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def patch_grid(volume: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """Number of patches (nL, nA, nR) along each axis of a volume (L, A, R).

    Raises:
        ConfigError: when a patch size is not positive or does not divide its axis.
    """
    volume, patch = tuple(int(v) for v in volume), tuple(int(p) for p in patch)
    if len(volume) != 3 or len(patch) != 3:
        raise ConfigError(
            f"volume and patch must be (L, A, R) triples, got volume {volume} and patch {patch}"
        )
    bad = [
        f"{ax} {v} % {p} = {v % p}" if p > 0 else f"{ax} patch size {p} is not positive"
        for ax, v, p in zip(_AXES, volume, patch)
        if p <= 0 or v % p
    ]
    if bad:
        raise ConfigError(
            f"patch {_fmt(patch)} does not divide the volume {_fmt(volume)} "
            f"(layer, alpha, r): {'; '.join(bad)}"
        )
    return volume[0] // patch[0], volume[1] // patch[1], volume[2] // patch[2]


def patchify3d(x: Tensor, patch: Sequence[int]) -> Tensor:
    """Cut volumes into patch tokens.

    Shapes: x (N, C, L, A, R) -> (N, nL * nA * nR, C * pL * pA * pR).
    """
    if x.dim() != 5:
        raise ValueError(f"expected (N, C, L, A, R), got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    nl, na, nr = patch_grid(x.shape[2:], patch)
    pl, pa, pr = (int(p) for p in patch)
    x = x.reshape(n, c, nl, pl, na, pa, nr, pr)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (N, nL, nA, nR, C, pL, pA, pR)
    return x.reshape(n, nl * na * nr, c * pl * pa * pr)


def unpatchify3d(tokens: Tensor, patch: Sequence[int], shape: Sequence[int]) -> Tensor:
    """Reassemble volumes from patch tokens; the exact inverse of :func:`patchify3d`.

    Args:
        tokens: (N, nL * nA * nR, C * pL * pA * pR).
        patch: (pL, pA, pR).
        shape: the volume (C, L, A, R).

    Returns:
        (N, C, L, A, R).
    """
    c, *volume = (int(s) for s in shape)
    nl, na, nr = patch_grid(volume, patch)
    pl, pa, pr = (int(p) for p in patch)
    n = tokens.shape[0]
    if tokens.shape[1:] != (nl * na * nr, c * pl * pa * pr):
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit volume {_fmt(shape)} "
            f"with patch {_fmt(patch)}: expected (N, {nl * na * nr}, {c * pl * pa * pr})"
        )
    x = tokens.reshape(n, nl, na, nr, c, pl, pa, pr).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(n, c, nl * pl, na * pa, nr * pr)


class PatchEmbed3d(nn.Module):
    """Patchify and embed every patch with one shared Linear (Xavier weights, zero bias).

    Args:
        in_channels: C.
        volume: (L, A, R).
        patch: (pL, pA, pR), dividing ``volume``.
        dim: token width D.

    Shapes: x (N, C, L, A, R) -> (N, n_tokens, D).
    """

    def __init__(
        self, in_channels: int, volume: Sequence[int], patch: Sequence[int], dim: int
    ) -> None:
        super().__init__()
        self.grid = patch_grid(volume, patch)
        self.volume = tuple(int(v) for v in volume)
        self.patch = tuple(int(p) for p in patch)
        self.in_channels = int(in_channels)
        self.n_tokens = math.prod(self.grid)
        self.patch_dim = self.in_channels * math.prod(self.patch)
        self.proj = nn.Linear(self.patch_dim, dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.volume):
            raise ValueError(
                f"expected volumes {_fmt((self.in_channels, *self.volume))}, got {tuple(x.shape)}"
            )
        return self.proj(patchify3d(x, self.patch))


class LearnablePositionEncoding(nn.Module):
    """Learnable Fourier features of the normalised (layer, alpha, r) patch indices.

    Patch index i along an axis with n patches is mapped to i / (n - 1) in [0, 1] (0 when
    n = 1), giving p (n_tokens, 3). The encoding is [sin(2 pi p W), cos(2 pi p W)] with
    learnable frequencies W (3, D / 2), initialised N(0, 1) (about one cycle across an
    axis; training sharpens what it needs). It is added to the patch embeddings before the
    first block and breaks the permutation symmetry among patches (CaloDREAM §3.2).

    Args:
        grid: (nL, nA, nR) patches per axis.
        dim: token width D (even).

    Shapes: x (N, n_tokens, D) -> x + encoding, (N, n_tokens, D).
    """

    def __init__(self, grid: Sequence[int], dim: int) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"dim must be positive and even, got {dim}")
        self.grid = tuple(int(g) for g in grid)
        axes = [torch.arange(g, dtype=torch.float32) / max(g - 1, 1) for g in self.grid]
        pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        # a deterministic function of the grid: not saved with the weights
        self.register_buffer("positions", pos, persistent=False)
        self.freqs = nn.Parameter(torch.randn(3, dim // 2))

    def encoding(self) -> Tensor:
        """The encodings of all tokens, (n_tokens, D)."""
        angle = 2 * torch.pi * self.positions @ self.freqs
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.encoding().to(x.dtype)
