"""Convolutional VAE of CaloDREAM's latent path (CaloDREAM §3.3, App. A.2, Tab. 4).

Input: layer-normalised voxels x in [0, 1] as a volume (N, C=1, L, A, R) — layers, angular
bins, radial bins; ds2 is (1, 45, 16, 9), ds3 (1, 45, 50, 18). No logit or standardisation
is applied before the VAE (CaloDREAM §2), which is what makes the Bernoulli likelihood and
its sigmoid output possible.

Encoder (Tab. 4 "2 blocks (+ bottleneck)", channels (64, 64, 2)): each block is three
Conv3d ops, conv(3x3x3, pad 1) -> conv(3x3x3, pad 1) -> conv(the table's kernel, stride,
padding), each followed by a normalisation and SiLU; only the last op changes the size.
Then two bottleneck heads (3x3x3 convs) give mu and log sigma^2 of q(r | x, u, E_inc) with
``latent_channels`` (2) channels. ds2: (45, 16, 9) -> (15, 9, 9), latent (2, 15, 9, 9),
reduction factor F = 6480 / 2430 = 2.67.

Decoder: the mirror image — a 3x3x3 conv from the latent, then per block (deepest first)
two 3x3x3 convs and a ConvTranspose3d with the block's kernel / stride / padding, and an
``output_padding`` computed so the decoder returns exactly the encoder block's input size;
a last 3x3x3 conv to C channels gives the logits, and the sigmoid the Bernoulli means.
``decode`` is deterministic: it returns the sigmoid mean, not a Bernoulli draw
(CaloDREAM Eq. 14).

CoordConv: three channels holding the normalised (layer, alpha, r) position, each in
[-1, 1] at the current resolution, are appended to the input of every block, head and of
the decoder's first and last conv, to break the translation equivariance of the
convolutions (App. A.2): a shower's core and its tail layers look alike to a plain conv.

Conditioning: a separate network embeds the condition vector (scaled E_inc and the 45
preprocessed u's: ``cond_in_dim = 46``) once; every encoder and decoder block adds a
per-channel projection of it after its first conv and that conv's normalisation (§3.3;
added before the norm, a per-channel shift would be normalised away again).

Normalisation: GroupNorm by default (``norm="group"``). The paper does not state one;
BatchNorm is available (``norm="batch"``), but GroupNorm makes a shower's reconstruction
independent of the other showers in its batch, works for the small per-device batches of
DDP and needs no train/eval switch at sampling time.

The log-variance is clamped to [-30, 20] so that exp() can neither underflow to a zero
sigma with an infinite KL gradient nor overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import ConditionEmbedding, group_norm
from ._common import check_choice, check_positive

__all__ = [
    "ConvVAE3d",
    "VAEConfig",
    "coord_channels",
    "flat_to_volume",
    "volume_to_flat",
]

Triple = tuple[int, int, int]

#: log sigma^2 range of the posterior (see the module docstring)
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def flat_to_volume(x: Tensor, data_shape: Triple) -> Tensor:
    """(N, L*A*R) flat, CaloChallenge order (layer, alpha, r; r fastest) -> (N, 1, L, A, R)."""
    return x.reshape(x.shape[0], 1, *data_shape)


def volume_to_flat(v: Tensor) -> Tensor:
    """(N, 1, L, A, R) -> (N, L*A*R) flat in CaloChallenge order."""
    return v.reshape(v.shape[0], -1)


def coord_channels(spatial: Triple, like: Tensor) -> Tensor:
    """Normalised (layer, alpha, r) coordinates, (1, 3, L, A, R), each in [-1, 1].

    An axis of size 1 gets coordinate 0. dtype and device follow ``like``.
    """
    axes = [torch.linspace(-1.0, 1.0, s, dtype=like.dtype, device=like.device) for s in spatial]
    axes = [a if s > 1 else torch.zeros_like(a) for a, s in zip(axes, spatial)]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grids)[None]


def _triples(name: str, values) -> tuple[Triple, ...]:
    out = tuple(tuple(int(v) for v in t) for t in values)
    if any(len(t) != 3 for t in out):
        raise ConfigError(f"{name} must be (layer, alpha, r) triples, got {values!r}")
    return out  # type: ignore[return-value]


@dataclass
class VAEConfig:
    """Configuration of :class:`ConvVAE3d`; the defaults are CaloDREAM's ds2 VAE (Tab. 4).

    Fields:
        data_shape: (L, A, R) of the input volume (ds2 (45, 16, 9), ds3 (45, 50, 18)).
        in_channels: C of the input volume (1: normalised voxels).
        channels: width of each encoder block (Tab. 4: (64, 64)).
        latent_channels: bottleneck channels (Tab. 4: 2).
        kernels, strides, paddings: of each block's last (down-sampling) conv, one
            (layer, alpha, r) triple per block (Tab. 4).
        cond_in_dim: condition features (scaled E_inc + 45 u's = 46).
        cond_dim: width of the condition embedding (ours; not stated).
        cond_hidden_dim: hidden width of the condition network (ours; 0 = one Linear).
        norm: "group" (default, see the module docstring), "batch" or "none".
        coord_conv: append coordinate channels to every block input (App. A.2).
    """

    data_shape: Triple = (45, 16, 9)
    in_channels: int = 1
    channels: tuple[int, ...] = (64, 64)
    latent_channels: int = 2
    kernels: tuple[Triple, ...] = ((3, 2, 1), (1, 1, 1))
    strides: tuple[Triple, ...] = ((3, 2, 1), (1, 1, 1))
    paddings: tuple[Triple, ...] = ((0, 1, 0), (0, 0, 0))
    cond_in_dim: int = 46
    cond_dim: int = 64
    cond_hidden_dim: int = 64
    norm: str = "group"
    coord_conv: bool = True

    def __post_init__(self) -> None:
        self.data_shape = _triples("data_shape", [self.data_shape])[0]
        self.channels = tuple(int(c) for c in self.channels)
        self.kernels = _triples("kernels", self.kernels)
        self.strides = _triples("strides", self.strides)
        self.paddings = _triples("paddings", self.paddings)
        check_choice("norm", self.norm, ("group", "batch", "none"))
        check_positive(
            in_channels=self.in_channels,
            latent_channels=self.latent_channels,
            cond_in_dim=self.cond_in_dim,
            cond_dim=self.cond_dim,
        )
        if self.cond_hidden_dim < 0:
            raise ConfigError(f"cond_hidden_dim must be >= 0, got {self.cond_hidden_dim}")
        if any(s <= 0 for s in self.data_shape):
            raise ConfigError(f"data_shape must be positive, got {self.data_shape}")
        n = len(self.channels)
        if n == 0 or any(c <= 0 for c in self.channels):
            raise ConfigError(
                f"channels must be a non-empty tuple of positive widths, got {self.channels}"
            )
        if not len(self.kernels) == len(self.strides) == len(self.paddings) == n:
            raise ConfigError(
                f"need one kernel, stride and padding per block ({n} blocks), got "
                f"{len(self.kernels)}, {len(self.strides)}, {len(self.paddings)}"
            )
        for k, s, p in zip(self.kernels, self.strides, self.paddings):
            if min(k) < 1 or min(s) < 1 or min(p) < 0:
                raise ConfigError(f"bad kernel/stride/padding {k}/{s}/{p}")
        self.block_shapes  # noqa: B018 - raises when a block would leave no voxel

    @property
    def block_shapes(self) -> tuple[Triple, ...]:
        """(L, A, R) at the input of every block and after the last: n_blocks + 1 triples."""
        out = [self.data_shape]
        for k, s, p in zip(self.kernels, self.strides, self.paddings):
            size = tuple((d + 2 * pp - kk) // ss + 1 for d, kk, ss, pp in zip(out[-1], k, s, p))
            if min(size) < 1:
                raise ConfigError(
                    f"kernel {k}, stride {s}, padding {p} leave no voxel of {out[-1]}"
                )
            out.append(size)  # type: ignore[arg-type]
        return tuple(out)

    @property
    def output_paddings(self) -> tuple[Triple, ...]:
        """ConvTranspose3d output_padding per block so that the decoder returns exactly the
        encoder block's input size: size_in - ((size_out - 1) s - 2 p + k), always in [0, s)."""
        shapes = self.block_shapes
        ops = []
        for i, (k, s, p) in enumerate(zip(self.kernels, self.strides, self.paddings)):
            ops.append(
                tuple(
                    d_in - ((d_out - 1) * ss - 2 * pp + kk)
                    for d_in, d_out, kk, ss, pp in zip(shapes[i], shapes[i + 1], k, s, p)
                )
            )
        return tuple(ops)  # type: ignore[return-value]

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(latent_channels, L', A', R')."""
        return (self.latent_channels, *self.block_shapes[-1])

    @property
    def reduction_factor(self) -> float:
        """F = dim(x) / dim(r) (CaloDREAM §3.3; ds2: 2.67)."""
        return self.in_channels * math.prod(self.data_shape) / math.prod(self.latent_shape)

    @classmethod
    def ds2(cls, **overrides) -> VAEConfig:
        """CaloDREAM's ds2 VAE (Tab. 4): latent (2, 15, 9, 9)."""
        return cls(**overrides)

    @classmethod
    def ds3(cls, **overrides) -> VAEConfig:
        """CaloDREAM's ds3 VAE (Tab. 4) with strides as printed: latent (2, 21, 26, 16).

        Tab. 4 prints the bottleneck as (2, 9, 26, 16), which its own kernel (5, 2, 3) and
        stride (2, 2, 1) on (45, 50, 18) cannot give; we keep the printed kernels and
        strides (F = 2.32, near the text's "F ~ 2.5") and take the printed layer count 9
        for a misprint of 21.
        """
        base = dict(
            data_shape=(45, 50, 18),
            kernels=((5, 2, 3), (1, 1, 1)),
            strides=((2, 2, 1), (1, 1, 1)),
            paddings=((0, 1, 0), (0, 0, 0)),
        )
        base.update(overrides)
        return cls(**base)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return group_norm(channels)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.Identity()


class _Block(nn.Module):
    """Three conv ops with norm + SiLU; the condition is added per channel after the first
    conv's norm.

    The last op resizes: a Conv3d (encoder) or ConvTranspose3d (decoder) with the block's
    kernel, stride and padding. (N, c_in [+3], *S_in), c (N, cond_dim) -> (N, c_out, *S_out).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        cond_dim: int,
        resize: nn.Module,
        norm: str,
        coord_conv: bool,
    ) -> None:
        super().__init__()
        self.coord_conv = coord_conv
        extra = 3 if coord_conv else 0
        self.conv1 = nn.Conv3d(c_in + extra, c_out, 3, padding=1)
        self.cond = nn.Linear(cond_dim, c_out)
        self.norm1 = _norm(norm, c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.norm2 = _norm(norm, c_out)
        self.conv3 = resize
        self.norm3 = _norm(norm, c_out)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        h = self.norm1(self.conv1(_with_coords(h, self.coord_conv)))
        # after the norm: a per-channel constant added before it would be subtracted out
        # again (entirely so for GroupNorm groups of one channel)
        h = F.silu(h + self.cond(F.silu(c))[:, :, None, None, None])
        h = F.silu(self.norm2(self.conv2(h)))
        return F.silu(self.norm3(self.conv3(h)))


def _with_coords(h: Tensor, on: bool) -> Tensor:
    """Append the 3 coordinate channels: (N, C, L, A, R) -> (N, C + 3, L, A, R)."""
    if not on:
        return h
    xyz = coord_channels(tuple(h.shape[2:]), h).expand(h.shape[0], -1, -1, -1, -1)
    return torch.cat([h, xyz], dim=1)


class ConvVAE3d(nn.Module):
    """Conditional 3-D convolutional VAE with a Bernoulli (sigmoid) decoder.

    Shapes: x (N, C, L, A, R) in [0, 1]; cond (N, cond_in_dim); latents
    (N, *config.latent_shape). See the module docstring for the architecture.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = cfg = config
        cc = cfg.coord_conv
        extra = 3 if cc else 0
        self.cond_embed = ConditionEmbedding(cfg.cond_in_dim, cfg.cond_dim, cfg.cond_hidden_dim)
        ch = cfg.channels
        geo = list(zip(cfg.kernels, cfg.strides, cfg.paddings))
        # encoder: block i maps ch[i-1] (C for i = 0) -> ch[i] and downsamples
        enc = []
        prev = cfg.in_channels
        for i, (k, s, p) in enumerate(geo):
            down = nn.Conv3d(ch[i], ch[i], k, stride=s, padding=p)
            enc.append(_Block(prev, ch[i], cfg.cond_dim, down, cfg.norm, cc))
            prev = ch[i]
        self.enc_blocks = nn.ModuleList(enc)
        self.mu_head = nn.Conv3d(ch[-1] + extra, cfg.latent_channels, 3, padding=1)
        self.logvar_head = nn.Conv3d(ch[-1] + extra, cfg.latent_channels, 3, padding=1)
        # decoder: latent -> ch[-1], then block i (deepest first) maps ch[i] -> ch[i-1]
        # (ch[0] for i = 0) and upsamples to the encoder block i's input size
        self.dec_in = nn.Conv3d(cfg.latent_channels + extra, ch[-1], 3, padding=1)
        self.dec_in_norm = _norm(cfg.norm, ch[-1])
        dec = []
        for i in reversed(range(len(ch))):
            k, s, p = geo[i]
            out = ch[i - 1] if i > 0 else ch[0]
            up = nn.ConvTranspose3d(
                out, out, k, stride=s, padding=p, output_padding=cfg.output_paddings[i]
            )
            dec.append(_Block(ch[i], out, cfg.cond_dim, up, cfg.norm, cc))
        self.dec_blocks = nn.ModuleList(dec)
        self.dec_out = nn.Conv3d(ch[0] + extra, cfg.in_channels, 3, padding=1)

    # ------------------------------------------------------------------ interface
    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(latent_channels, L', A', R')."""
        return self.config.latent_shape

    def _check_input(self, x: Tensor) -> None:
        want = (self.config.in_channels, *self.config.data_shape)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"expected input (N, *{want}), got {tuple(x.shape)}")

    def encode_distribution(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, C, L, A, R), cond (N, cond_in_dim) -> (mu, logvar), each (N, *latent_shape)."""
        self._check_input(x)
        c = self.cond_embed(cond)
        h = x
        for b in self.enc_blocks:
            h = b(h, c)
        h = _with_coords(h, self.config.coord_conv)
        logvar = self.logvar_head(h).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return self.mu_head(h), logvar

    def encode(self, x: Tensor, cond: Tensor) -> Tensor:
        """The posterior mean mu (N, *latent_shape): deterministic; for draws use
        :meth:`sample_latent`."""
        return self.encode_distribution(x, cond)[0]

    @staticmethod
    def reparameterize(
        mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """r = mu + sigma z, z ~ N(0, 1) (differentiable in mu and logvar)."""
        z = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * z

    def sample_latent(
        self, x: Tensor, cond: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """A draw r ~ q(r | x, cond), (N, *latent_shape): the CFM training data (Eq. 13)."""
        mu, logvar = self.encode_distribution(x, cond)
        return self.reparameterize(mu, logvar, generator)

    def decode_logits(self, z: Tensor, cond: Tensor) -> Tensor:
        """z (N, *latent_shape), cond -> logits (N, C, L, A, R) (before the sigmoid)."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"expected latent (N, {self.latent_shape}), got {tuple(z.shape)}")
        c = self.cond_embed(cond)
        h = F.silu(self.dec_in_norm(self.dec_in(_with_coords(z, self.config.coord_conv))))
        for b in self.dec_blocks:
            h = b(h, c)
        return self.dec_out(_with_coords(h, self.config.coord_conv))

    def decode(self, z: Tensor, cond: Tensor) -> Tensor:
        """Bernoulli means in (0, 1), (N, C, L, A, R): deterministic, no Bernoulli draw
        (CaloDREAM Eq. 14). In float32 the sigmoid can round to exactly 0 or 1 for extreme
        logits; the normalised cut of the inverse transform handles the small end."""
        return torch.sigmoid(self.decode_logits(z, cond))

    def forward(
        self, x: Tensor, cond: Tensor, sample: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruct: x, cond -> (x_hat (N, C, L, A, R), mu, logvar).

        ``sample`` (default: ``self.training``) decodes a posterior draw r = mu + sigma z;
        otherwise the mean mu is decoded, so an eval-mode reconstruction is deterministic.
        """
        mu, logvar = self.encode_distribution(x, cond)
        if sample is None:
            sample = self.training
        r = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(r, cond), mu, logvar

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
