"""CaloLatent's 3-D ResNet-like VAE (CaloLatent §2; docs/calolatent.md, 'Networks').

Input: the preprocessed voxel fractions as a volume (N, 1, L, A, R) = (N, 1, 45, 16, 9) for
ds2 (layers, angular bins, radial bins), in standardised-logit space; condition (N, 46):
the scaled incident energy and the 45 preprocessed layer ratios u.

Encoder:

* zero-pad (45, 16, 9) -> (48, 16, 12) (``padding``: 2 + 1 layers, 2 + 1 radial bins), so
  that two 2x poolings divide the volume; a 1x1x1 stem conv to ``stem_channels`` (32);
* one down block per entry of ``widths`` (64, 128): ``block_depth`` (2) residual blocks,
  then AvgPool3d(2): (48, 16, 12) -> (24, 8, 6) -> (12, 4, 3);
* ``n_bottleneck`` (2) residual blocks of ``bottleneck_width`` (256);
* heads: two zero-initialised 1x1x1 convs to ``latent_channels`` (1) channels, flattened
  and soft-clamped to 5 tanh(x / 5): the posterior mean and log sigma. Latent
  1 x 12 x 4 x 3 = 144 (a 45x compression of 6480).

Residual block (width W, condition embedding e): ``res = x`` (1x1x1 conv if the channel
count changes); ``h = conv3(SiLU(x)) + Linear_W(e)``; ``h = conv3(SiLU(h))``; ``x = res + h``;
with attention, ``x = x + MHA(GN(x))`` over all positions (one head, GroupNorm of 4
groups without affine parameters in the encoder, none in the decoder).

Attention placement (``attention``): "bottleneck" (default) in the 256-wide blocks, on the
12 x 4 x 3 = 144 positions; "first" in the first down block, as the paper's text reads,
on 48 x 16 x 12 = 9216 positions, which costs 85 M attention weights per shower and head;
"none". Recorded in docs/calolatent.md.

Decoder: the latent as (latent_channels, 12, 4, 3); with ``mirror_decoder`` first
``n_bottleneck`` blocks of ``bottleneck_width`` (a true mirror); then per width in reverse
(128, 64): nearest-neighbour upsampling x2 and ``block_depth`` residual blocks; crop back
to (45, 16, 9); a zero-initialised 1x1x1 conv to one channel. The first block of each level
takes the low-resolution input and upsamples inside (``_ResBlock3d``): the same function,
3x faster on CPU for the tiny decoder. The output is linear (the
mean of a fixed-width Gaussian in preprocessed space). The reference decoder has no
bottleneck blocks, hence ``mirror_decoder=False`` by default.

Condition embedding: SiLU(Linear_64(cond)), one per encoder and one per decoder (the
reference shares a single layer between the networks; here each network owns its own so
that the three CaloLatent models train independently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.upsample_conv import nearest_up2, nearest_up2_conv3d, prefers_folded
from ._common import check_choice, check_positive

__all__ = ["ResNetVAE3d", "ResNetVAE3dConfig", "soft_clamp"]

Triple = tuple[int, int, int]
Pad = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """bound * tanh(x / bound): the identity near 0, smoothly limited to (-bound, bound)."""
    return bound * torch.tanh(x / bound)


@dataclass
class ResNetVAE3dConfig:
    """Configuration of :class:`ResNetVAE3d`; defaults are CaloLatent's ds2 VAE.

    Fields:
        data_shape: (L, A, R) of the input volume (ds2 (45, 16, 9)).
        padding: ((before, after) per axis) zero padding so that the padded volume is
            divisible by 2^len(widths) (ds2: 48 x 16 x 12).
        stem_channels: width of the 1x1x1 stem conv (32).
        widths: width of each down block (64, 128).
        bottleneck_width, n_bottleneck: the blocks after the last pooling (256, 2).
        block_depth: residual blocks per down / up block (2).
        attention: "bottleneck", "first" or "none" (see the module docstring).
        attention_heads: heads of the attention (1).
        norm_groups: groups of the GroupNorm before the encoder's attention (4).
        latent_channels: channels of the latent grid (1 -> 144 latent dimensions).
        cond_in_dim: condition features (46).
        cond_dim: width of the condition embedding (64).
        clamp: bound of the soft clamp of mean and log sigma (5).
        mirror_decoder: give the decoder the encoder's bottleneck blocks too.
    """

    data_shape: Triple = (45, 16, 9)
    padding: Pad = ((2, 1), (0, 0), (2, 1))
    stem_channels: int = 32
    widths: tuple[int, ...] = (64, 128)
    bottleneck_width: int = 256
    n_bottleneck: int = 2
    block_depth: int = 2
    attention: str = "bottleneck"
    attention_heads: int = 1
    norm_groups: int = 4
    latent_channels: int = 1
    cond_in_dim: int = 46
    cond_dim: int = 64
    clamp: float = 5.0
    mirror_decoder: bool = False

    def __post_init__(self) -> None:
        self.data_shape = tuple(int(s) for s in self.data_shape)  # type: ignore[assignment]
        self.padding = tuple(tuple(int(v) for v in p) for p in self.padding)  # type: ignore
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.data_shape) != 3 or min(self.data_shape) < 1:
            raise ConfigError(f"data_shape must be three positive sizes, got {self.data_shape}")
        if len(self.padding) != 3 or any(len(p) != 2 or min(p) < 0 for p in self.padding):
            raise ConfigError(f"padding must be three (before, after) pairs >= 0, "
                              f"got {self.padding}")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"widths must be a non-empty tuple of positive widths, "
                              f"got {self.widths}")
        check_positive(stem_channels=self.stem_channels, bottleneck_width=self.bottleneck_width,
                       block_depth=self.block_depth, attention_heads=self.attention_heads,
                       norm_groups=self.norm_groups, latent_channels=self.latent_channels,
                       cond_in_dim=self.cond_in_dim, cond_dim=self.cond_dim, clamp=self.clamp)
        if self.n_bottleneck < 0:
            raise ConfigError(f"n_bottleneck must be >= 0, got {self.n_bottleneck}")
        check_choice("attention", self.attention, ("bottleneck", "first", "none"))
        if self.attention == "bottleneck" and self.n_bottleneck == 0:
            raise ConfigError("attention 'bottleneck' needs n_bottleneck >= 1")
        f = 2 ** len(self.widths)
        if any(s % f for s in self.padded_shape):
            raise ConfigError(f"padded shape {self.padded_shape} must be divisible by {f} "
                              f"({len(self.widths)} poolings); adjust padding")
        if self.attention != "none":
            w = self.widths[0] if self.attention == "first" else self.bottleneck_width
            if w % self.attention_heads or w % self.norm_groups:
                raise ConfigError(f"attention width {w} must be divisible by attention_heads "
                                  f"({self.attention_heads}) and norm_groups ({self.norm_groups})")

    @property
    def padded_shape(self) -> Triple:
        return tuple(s + a + b for s, (a, b) in zip(self.data_shape, self.padding))  # type: ignore

    @property
    def latent_grid(self) -> Triple:
        f = 2 ** len(self.widths)
        return tuple(s // f for s in self.padded_shape)  # type: ignore[return-value]

    @property
    def latent_dim(self) -> int:
        """Flat latent size (ds2: 1 x 12 x 4 x 3 = 144)."""
        return self.latent_channels * math.prod(self.latent_grid)


class _Attention3d(nn.Module):
    """x + MHA(GN(x)) over all positions of a (N, C, D, H, W) volume."""

    def __init__(self, channels: int, heads: int, groups: int | None) -> None:
        super().__init__()
        self.norm = (nn.GroupNorm(groups, channels, affine=False) if groups
                     else nn.Identity())
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        h = self.norm(x).reshape(n, c, -1).transpose(1, 2)  # (N, positions, C)
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2).reshape(x.shape)


class _ResBlock3d(nn.Module):
    """Conditioned residual block of two 3x3x3 convs (+ attention); see the module docstring."""

    def __init__(self, in_ch: int, width: int, cond_dim: int, attention: bool, heads: int,
                 groups: int | None) -> None:
        super().__init__()
        self.res = nn.Identity() if in_ch == width else nn.Conv3d(in_ch, width, 1)
        self.cond = nn.Linear(cond_dim, width)
        self.conv1 = nn.Conv3d(in_ch, width, 3, padding=1)
        self.conv2 = nn.Conv3d(width, width, 3, padding=1)
        self.attn = _Attention3d(width, heads, groups) if attention else None

    def forward(self, x: Tensor, e: Tensor, upsample: bool = False) -> Tensor:
        """The block on x, or with ``upsample`` on the 2x nearest upsampling of x.

        Upsampled, the pointwise maps (SiLU, the 1x1x1 residual conv) run before the
        upsampling, with which they commute, and a wide-to-narrow first conv folds the
        upsampling into its kernel (``caloforge.nn.upsample_conv``): the same function, computed
        without the wide full-resolution tensors that dominated the decoder's time.
        """
        if not upsample:
            h = self.conv1(F.silu(x))
            res = self.res(x)
        else:
            a = F.silu(x)
            if prefers_folded(self.conv1.in_channels, self.conv1.out_channels):
                h = nearest_up2_conv3d(a, self.conv1)
            else:
                h = self.conv1(nearest_up2(a))
            res = nearest_up2(self.res(x))
        h = self.conv2(F.silu(h + self.cond(e)[:, :, None, None, None]))
        x = res + h
        return x if self.attn is None else self.attn(x)


def _pointwise_channels_last(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 ``conv`` of x (N, C, D, H, W) as a matrix product over the channels, with a
    channels-last result. The same function as ``conv(x)``; for the one-channel input of
    the stem the convolution kernel was 14 % of a tiny training step, this is a fraction of
    it (measured on CPU)."""
    w = conv.weight.reshape(conv.out_channels, conv.in_channels)
    h = x.permute(0, 2, 3, 4, 1) @ w.t()                   # (N, D, H, W, C_out), contiguous
    if conv.bias is not None:
        h = h + conv.bias
    return h.permute(0, 4, 1, 2, 3)                        # channels-last strides


def _zero(conv: nn.Conv3d) -> nn.Conv3d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResNetVAE3d(nn.Module):
    """CaloLatent's VAE. Data (N, 1, L, A, R); condition (N, cond_in_dim); latent (N, D).

    Methods:
        encode_posterior(x, cond) -> (mu, log_sigma), each (N, D), soft-clamped;
        encode_distribution(x, cond) -> (mu, logvar) (the shared VAE protocol);
        encode(x, cond) -> mu;  sample_latent(x, cond) -> mu + sigma * eps;
        decode(z, cond) -> x_hat (N, 1, L, A, R), linear in the preprocessed space;
        forward(x, cond) -> (x_hat, mu, logvar) at one reparameterised draw.
    """

    def __init__(self, config: ResNetVAE3dConfig | None = None) -> None:
        super().__init__()
        cfg = config or ResNetVAE3dConfig()
        self.config = cfg
        heads, groups = cfg.attention_heads, cfg.norm_groups

        def block(cin: int, w: int, att: bool, enc: bool) -> _ResBlock3d:
            return _ResBlock3d(cin, w, cfg.cond_dim, att, heads, groups if enc else None)

        # ---- encoder
        self.enc_cond = nn.Linear(cfg.cond_in_dim, cfg.cond_dim)
        self.stem = nn.Conv3d(1, cfg.stem_channels, 1)
        self.down = nn.ModuleList()
        cin = cfg.stem_channels
        for i, w in enumerate(cfg.widths):
            att = cfg.attention == "first" and i == 0
            self.down.append(nn.ModuleList(block(cin if j == 0 else w, w, att, True)
                                           for j in range(cfg.block_depth)))
            cin = w
        self.enc_mid = nn.ModuleList(
            block(cin if j == 0 else cfg.bottleneck_width, cfg.bottleneck_width,
                  cfg.attention == "bottleneck", True) for j in range(cfg.n_bottleneck))
        cin = cfg.bottleneck_width if cfg.n_bottleneck else cin
        self.head_mu = _zero(nn.Conv3d(cin, cfg.latent_channels, 1))
        self.head_log_sigma = _zero(nn.Conv3d(cin, cfg.latent_channels, 1))

        # ---- decoder
        self.dec_cond = nn.Linear(cfg.cond_in_dim, cfg.cond_dim)
        cin = cfg.latent_channels
        self.dec_mid = nn.ModuleList()
        if cfg.mirror_decoder:
            self.dec_mid = nn.ModuleList(
                block(cin if j == 0 else cfg.bottleneck_width, cfg.bottleneck_width,
                      cfg.attention == "bottleneck", False) for j in range(cfg.n_bottleneck))
            cin = cfg.bottleneck_width if cfg.n_bottleneck else cin
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(cfg.widths))):
            att = cfg.mirror_decoder and cfg.attention == "first" and i == 0
            self.up.append(nn.ModuleList(block(cin if j == 0 else w, w, att, False)
                                         for j in range(cfg.block_depth)))
            cin = w
        self.head_out = _zero(nn.Conv3d(cin, 1, 1))

    # ------------------------------------------------------------------ shapes
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(latent_dim,): the latent is flat (ds2: 144)."""
        return (self.config.latent_dim,)

    def _check(self, x: Tensor) -> None:
        want = (1, *self.config.data_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (N, {', '.join(map(str, want))}), "
                             f"got {tuple(x.shape)}")

    def _pad(self, x: Tensor) -> Tensor:
        (l0, l1), (a0, a1), (r0, r1) = self.config.padding
        return F.pad(x, (r0, r1, a0, a1, l0, l1))

    def _crop(self, x: Tensor) -> Tensor:
        (l0, _), (a0, _), (r0, _) = self.config.padding
        ll, aa, rr = self.config.data_shape
        return x[:, :, l0:l0 + ll, a0:a0 + aa, r0:r0 + rr]

    # ------------------------------------------------------------------ encoder
    def encode_posterior(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_sigma) of q(z | x, cond), each (N, latent_dim), soft-clamped."""
        self._check(x)
        e = F.silu(self.enc_cond(cond))
        # channels-last activations: 2-3x faster 3-D convolutions at the narrow widths
        # of the full-resolution blocks (measured on CPU); the weights keep their layout
        h = _pointwise_channels_last(self.stem, self._pad(x))
        for blocks in self.down:
            for b in blocks:
                h = b(h, e)
            h = F.avg_pool3d(h, 2)
        for b in self.enc_mid:
            h = b(h, e)
        n, c = x.shape[0], self.config.clamp
        mu = soft_clamp(self.head_mu(h).reshape(n, -1), c)
        log_sigma = soft_clamp(self.head_log_sigma(h).reshape(n, -1), c)
        return mu, log_sigma

    def encode_distribution(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2), each (N, latent_dim)."""
        mu, log_sigma = self.encode_posterior(x, cond)
        return mu, 2.0 * log_sigma

    def encode(self, x: Tensor, cond: Tensor) -> Tensor:
        """Posterior mean (N, latent_dim)."""
        return self.encode_posterior(x, cond)[0]

    def sample_latent(self, x: Tensor, cond: Tensor) -> Tensor:
        """One reparameterised draw mu + sigma * eps (N, latent_dim)."""
        mu, log_sigma = self.encode_posterior(x, cond)
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)

    # ------------------------------------------------------------------ decoder
    def decode(self, z: Tensor, cond: Tensor) -> Tensor:
        """z (N, latent_dim), cond (N, cond_in_dim) -> x_hat (N, 1, L, A, R)."""
        cfg = self.config
        if z.dim() != 2 or z.shape[1] != cfg.latent_dim:
            raise ValueError(f"z must have shape (N, {cfg.latent_dim}), got {tuple(z.shape)}")
        e = F.silu(self.dec_cond(cond))
        h = z.reshape(z.shape[0], cfg.latent_channels, *cfg.latent_grid)
        h = h.contiguous(memory_format=torch.channels_last_3d)
        for b in self.dec_mid:
            h = b(h, e)
        for blocks in self.up:
            # the first block of a level upsamples its own input (see _ResBlock3d)
            for j, b in enumerate(blocks):
                h = b(h, e, upsample=j == 0)
        return self.head_out(self._crop(h)).contiguous()

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x_hat, mu, logvar) at one reparameterised draw (torch's global generator)."""
        mu, log_sigma = self.encode_posterior(x, cond)
        z = mu + torch.exp(log_sigma) * torch.randn_like(mu)
        return self.decode(z, cond), mu, 2.0 * log_sigma

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
