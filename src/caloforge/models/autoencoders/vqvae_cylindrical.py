"""VQ-VAE for regular cylindrical geometries (CaloChallenge ds2 and ds3), Calo-VQ §4.2.

Input is the calo-image (N, C, Z, A): C = radial bins (channels), Z = 45 layers,
A = angular bins; ds2 is (9, 45, 16) and ds3 is (18, 45, 50) (docs/calovq.md, A1). The values are the
pre-processed x of Eq. 5. Every layer acting on (Z, A) is a cylindrical convolution.

Encoder: conv_in -> per level [residual blocks, resample to the level's (Z, A)] ->
middle [residual, self-attention, residual] -> norm, SiLU, conv to ``vq_dim``.
Decoder: the mirror image, ending in a cylindrical convolution to C channels (the last
layer, whose weight the adaptive GAN weight uses) and a softmax over the whole shower
(``normalisation="global"``) or over each layer (``"layer"``), giving energy fractions f.

Resampling is parameter-free: along the periodic angle by FFT (docs/calovq.md, A14), along Z (not
periodic) by linear interpolation with aligned end points — the paper gives no Z method.
The condition (scaled incident energy, optionally a class id) is embedded once and applied
by FiLM in every residual block of encoder and decoder.

The flat CaloChallenge vector of a regular geometry is ordered (layer, alpha, r) with r
fastest; :func:`flat_to_calo_image` / :func:`calo_image_to_flat` convert.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import (
    AttentionBlock,
    ConditionEmbedding,
    CylindricalConv2d,
    FFTResample,
    ResidualBlock,
    fft_resample_matrix,
    group_norm,
)
from ...nn.blocks import _inference_path, norm_film_silu
from ._common import VQVAEBase, check_choice, check_codebook_options, check_positive
from .quantizer import VectorQuantizer

__all__ = [
    "VQVAEConfig",
    "CylindricalVQVAE",
    "flat_to_calo_image",
    "calo_image_to_flat",
    "Resample2d",
]


def flat_to_calo_image(x: Tensor, n_layers: int, n_alpha: int, n_r: int) -> Tensor:
    """(N, Z*A*R) flat, ordered (layer, alpha, r) -> calo-image (N, R, Z, A)."""
    return x.reshape(x.shape[0], n_layers, n_alpha, n_r).permute(0, 3, 1, 2)


def calo_image_to_flat(img: Tensor) -> Tensor:
    """Calo-image (N, R, Z, A) -> (N, Z*A*R) flat, ordered (layer, alpha, r)."""
    return img.permute(0, 2, 3, 1).reshape(img.shape[0], -1)


@dataclass
class VQVAEConfig:
    """Configuration of :class:`CylindricalVQVAE`; the defaults are our ds2 paper-size model.

    Fields:
        in_channels: radial bins C (ds2 9, ds3 18).
        n_layers: Z (45).
        n_alpha: angular bins A (ds2 16, ds3 50).
        channels: feature width at each resolution level (ours; chosen to land near
            Table 6's 3.1 M stage-1 parameters for ds2).
        resolutions: (Z, A) after each level's resampling; the last one is the latent grid,
            whose size is Table 6's "shower codes" (ds2: 17 x 4 = 68; ours, not stated).
        n_res_blocks: residual blocks per level on each side.
        attention: self-attention block in the middle of encoder and decoder.
        n_heads: heads of that attention block.
        vq_dim: code dimension D (Table 6 "VQ dim").
        n_codes: codebook size K (1024).
        cond_in_dim: continuous condition features (1: scaled E_inc).
        cond_dim: width of the condition embedding (Table 6 "cond. dim", docs/calovq.md, A10).
        cond_hidden_dim: hidden width of the condition MLP (ours).
        n_classes: class ids (particle type); 0 = none.
        normalisation: "global" (softmax over the shower) or "layer" (within each layer).
        revive_dead_codes, dead_code_threshold, dead_code_decay, codebook_init, codebook_update,
            codebook_decay, l2_normalize_codes: codebook health (not stated in the paper;
            the defaults are the plain VQ-VAE, the presets switch them on: see
            :func:`~caloforge.models.autoencoders._common.check_codebook_options` and
            docs/calovq.md).
        dropout: in residual blocks.
    """

    in_channels: int = 9
    n_layers: int = 45
    n_alpha: int = 16
    channels: tuple[int, ...] = (128, 128)
    resolutions: tuple[tuple[int, int], ...] = ((23, 8), (17, 4))
    n_res_blocks: int = 1
    attention: bool = True
    n_heads: int = 1
    vq_dim: int = 256
    n_codes: int = 1024
    cond_in_dim: int = 1
    cond_dim: int = 1
    cond_hidden_dim: int = 64
    n_classes: int = 0
    normalisation: str = "global"
    revive_dead_codes: bool = False
    dead_code_threshold: float = 1e-3
    dead_code_decay: float = 0.99
    codebook_init: str = "uniform"
    codebook_update: str = "gradient"
    codebook_decay: float = 0.99
    l2_normalize_codes: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.resolutions = tuple((int(z), int(a)) for z, a in self.resolutions)
        check_choice("normalisation", self.normalisation, ("global", "layer"))
        check_codebook_options(self)
        check_positive(
            in_channels=self.in_channels,
            n_layers=self.n_layers,
            n_alpha=self.n_alpha,
            vq_dim=self.vq_dim,
            n_codes=self.n_codes,
            cond_in_dim=self.cond_in_dim,
            cond_dim=self.cond_dim,
            n_heads=self.n_heads,
        )
        if len(self.channels) != len(self.resolutions) or not self.channels:
            raise ConfigError(
                f"channels {self.channels} and resolutions {self.resolutions} need the same, "
                "non-zero length (one entry per level)"
            )
        if self.n_res_blocks < 0:
            raise ConfigError(f"n_res_blocks must be >= 0, got {self.n_res_blocks}")

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.resolutions[-1]

    @property
    def n_shower_codes(self) -> int:
        z, a = self.latent_shape
        return z * a

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.n_layers, self.n_alpha)


def linear_interp_matrix(z_in: int, z_out: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The (z_out, z_in) matrix of ``F.interpolate(mode="linear", align_corners=True)``.

    Linear interpolation is linear in its input, so interpolating the identity gives its
    exact weights (each row has at most two non-zero entries summing to 1).
    """
    eye = torch.eye(z_in, dtype=torch.float64)[None]  # (1, z_in channels, z_in samples)
    m = F.interpolate(eye, size=z_out, mode="linear", align_corners=True)[0]  # (z_in, z_out)
    return m.t().contiguous().to(dtype)


class Resample2d(nn.Module):
    """Resample a calo-image to (Z_out, A_out): linear along Z, FFT along A.

    With ``a_in`` known, the FFT resampling is applied as its exact (A_out, A_in) matrix
    (see :class:`~caloforge.nn.FFTResample`), and the whole resampling, being linear and
    separable, as matrix products: one product with the Kronecker matrix of both axes when
    that is small, otherwise one product per axis. This equals interpolation followed by
    the angular matrix up to float rounding, and avoids ``F.interpolate``'s permute/copy and
    a batched product with an inner size of A (both slow on CPU). No parameters.

    Shapes: (N, C, Z, A_in) -> (N, C, Z_out, A_out).
    """

    # Use the single Kronecker product while it costs at most this many times the
    # multiply-adds of the two separate products: one large GEMM runs several times faster
    # per multiply-add than two thin ones (measured on CPU for ds2's (17, 4) -> (23, 8)).
    kron_max_ratio = 4.0

    def __init__(self, z_out: int, a_out: int, a_in: int | None = None) -> None:
        super().__init__()
        self.z_out, self.a_out = int(z_out), int(a_out)
        self.angular = FFTResample(self.a_out, dim=-1, in_size=a_in)
        # per (z_in, device, dtype): matrices built on first use (z_in is known only then)
        self._mats: dict[tuple, tuple[str, Tensor, Tensor | None]] = {}

    def _matrices(self, z_in: int, ref: Tensor) -> tuple[str, Tensor, Tensor | None]:
        # a tracer (ONNX export) hands sizes over as 0-d tensors: the matrices are
        # constants of the graph, found under the same key as in eager calls
        z_in = int(z_in)
        key = (z_in, ref.device, ref.dtype)
        got = self._mats.get(key)
        if got is None:
            a_in = self.angular.in_size
            mz = linear_interp_matrix(z_in, self.z_out)  # (Zo, Zi), float64
            ma = fft_resample_matrix(a_in, self.a_out)  # (Ao, Ai), float64
            kron_macs = z_in * a_in * self.z_out * self.a_out
            sep_macs = z_in * a_in * self.a_out + z_in * self.z_out * self.a_out
            opts = {"device": ref.device, "dtype": ref.dtype}
            if kron_macs <= self.kron_max_ratio * sep_macs:
                got = ("kron", torch.kron(mz, ma).t().contiguous().to(**opts), None)
            else:
                got = ("sep", ma.t().contiguous().to(**opts), mz.to(**opts))
            self._mats[key] = got
        return got

    def forward(self, x: Tensor) -> Tensor:
        n, c, z, a = x.shape
        if self.angular.in_size is not None and a == self.angular.in_size:
            if z == self.z_out and a == self.a_out:
                return x
            kind, m1, m2 = self._matrices(z, x)
            if kind == "kron":
                # (N C, Zi Ai) @ (Zi Ai, Zo Ao)
                y = x.reshape(n * c, z * a) @ m1
                return y.view(n, c, self.z_out, self.a_out)
            # angle first (A_in -> A_out), then Z as a product broadcast over N C
            y = (x.reshape(n * c * z, a) @ m1).view(n * c, z, self.a_out)
            return torch.matmul(m2, y).view(n, c, self.z_out, self.a_out)
        if z != self.z_out:
            # interpolate along Z only: treat A as part of the batch
            h = x.permute(0, 3, 1, 2).reshape(n * a, c, z)
            h = F.interpolate(h, size=self.z_out, mode="linear", align_corners=True)
            x = h.reshape(n, a, c, self.z_out).permute(0, 2, 3, 1)
        return self.angular(x)

    def extra_repr(self) -> str:
        return f"z_out={self.z_out}, a_out={self.a_out}"


class _Stage(nn.Module):
    """Residual blocks (FiLM-conditioned) followed by an optional resampling."""

    def __init__(
        self,
        cin: int,
        cout: int,
        n_blocks: int,
        cond_dim: int,
        dropout: float,
        resample: Resample2d | None,
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(n_blocks):
            blocks.append(ResidualBlock(cin if i == 0 else cout, cout, cond_dim, 2, 3, dropout))
        self.blocks = nn.ModuleList(blocks)
        # with no residual block, a 1x1 conv still changes the width
        self.proj = CylindricalConv2d(cin, cout, 1) if (n_blocks == 0 and cin != cout) else None
        self.resample = resample

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        for b in self.blocks:
            h = b(h, c)
        if self.proj is not None:
            h = self.proj(h)
        return self.resample(h) if self.resample is not None else h


class _Middle(nn.Module):
    def __init__(self, ch: int, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.res1 = ResidualBlock(ch, ch, cfg.cond_dim, 2, 3, cfg.dropout)
        self.attn = AttentionBlock(ch, cfg.n_heads) if cfg.attention else nn.Identity()
        self.res2 = ResidualBlock(ch, ch, cfg.cond_dim, 2, 3, cfg.dropout)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return self.res2(self.attn(self.res1(h, c)), c)


class CylindricalVQVAE(VQVAEBase):
    """Conditional VQ-VAE on calo-images (N, C, Z, A) with a softmax output.

    Use:
        out = model(x, cond)                       # VQVAEOutput
        f = model.decode_indices(codes, cond)      # codes (N, L) raster order or (N, Z', A')
    """

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch = cfg.channels
        self.cond_embed = ConditionEmbedding(
            cfg.cond_in_dim, cfg.cond_dim, cfg.cond_hidden_dim, cfg.n_classes
        )

        # ---- encoder
        self.enc_in = CylindricalConv2d(cfg.in_channels, ch[0], 3)
        enc = []
        prev, a_in = ch[0], cfg.n_alpha
        for c_out, (z, a) in zip(ch, cfg.resolutions):
            enc.append(
                _Stage(
                    prev, c_out, cfg.n_res_blocks, cfg.cond_dim, cfg.dropout, Resample2d(z, a, a_in)
                )
            )
            prev, a_in = c_out, a
        self.enc_stages = nn.ModuleList(enc)
        self.enc_mid = _Middle(ch[-1], cfg)
        self.enc_norm = group_norm(ch[-1])
        self.enc_out = CylindricalConv2d(ch[-1], cfg.vq_dim, 1)

        self.quantizer = VectorQuantizer(
            cfg.n_codes, cfg.vq_dim, cfg.revive_dead_codes, cfg.dead_code_threshold,
            cfg.dead_code_decay, update=cfg.codebook_update, ema_decay=cfg.codebook_decay,
            l2_normalize=cfg.l2_normalize_codes,
        )

        # ---- decoder (mirror)
        self.dec_in = CylindricalConv2d(cfg.vq_dim, ch[-1], 3)
        self.dec_mid = _Middle(ch[-1], cfg)
        targets = [(cfg.n_layers, cfg.n_alpha)] + list(cfg.resolutions[:-1])
        dec = []
        prev = ch[-1]
        for i in reversed(range(len(ch))):
            a_in = cfg.resolutions[i][1]
            dec.append(
                _Stage(
                    prev,
                    ch[i],
                    cfg.n_res_blocks,
                    cfg.cond_dim,
                    cfg.dropout,
                    Resample2d(*targets[i], a_in),
                )
            )
            prev = ch[i]
        self.dec_stages = nn.ModuleList(dec)
        self.dec_norm = group_norm(ch[0])
        self.dec_out = CylindricalConv2d(ch[0], cfg.in_channels, 3)

    # ------------------------------------------------------------------ parts
    def encode(self, x: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """x (N, C, Z, A), cond (N, cond_in_dim) -> z_e (N, vq_dim, Z', A')."""
        c = self.embed_condition(cond, class_id)
        h = self.enc_in(x)
        for s in self.enc_stages:
            h = s(h, c)
        h = self.enc_mid(h, c)
        return self.enc_out(F.silu(self.enc_norm(h)))

    def decode_logits(self, z_q: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """z_q (N, vq_dim, Z', A'), cond -> logits x* (N, C, Z, A)."""
        if self._chunked(z_q, cond):
            return self._in_chunks(self.decode_logits, z_q, cond, class_id)
        c = self.embed_condition(cond, class_id)
        h = self.dec_mid(self.dec_in(z_q), c)
        for s in self.dec_stages:
            h = s(h, c)
        if _inference_path(self, h):
            return self.dec_out(norm_film_silu(h, self.dec_norm))
        return self.dec_out(F.silu(self.dec_norm(h)))

    # Showers per chunk when decoding without gradients. Every operation acts on each
    # shower separately, so chunking changes nothing but speed: on CPU the activations of
    # a few dozen showers stay in cache, and large batches ran about twice slower per
    # shower (8.8 ms at 1000 against 4.6 ms at 32, one thread). GPUs want whole batches.
    inference_chunk_size: int | None = 64

    def _chunked(self, x: Tensor, cond: Tensor) -> bool:
        k = self.inference_chunk_size
        return (
            k is not None
            and x.shape[0] > k
            and cond.shape[0] == x.shape[0]
            and x.device.type == "cpu"
            and _inference_path(self, x)
        )

    def _in_chunks(self, fn, x: Tensor, cond: Tensor, class_id: Tensor | None) -> Tensor:
        k = int(self.inference_chunk_size)
        outs = []
        for i in range(0, x.shape[0], k):
            cid = None if class_id is None else class_id[i : i + k]
            outs.append(fn(x[i : i + k], cond[i : i + k], cid))
        return torch.cat(outs)

    def normalise(self, logits: Tensor) -> Tensor:
        """Softmax over the shower (global) or each layer (layer-wise): (N,C,Z,A) -> same."""
        n, c, z, a = logits.shape
        if self.config.normalisation == "global":
            return torch.softmax(logits.reshape(n, -1), dim=-1).view(n, c, z, a)
        per_layer = logits.permute(0, 2, 1, 3).reshape(n, z, c * a)
        return torch.softmax(per_layer, dim=-1).view(n, z, c, a).permute(0, 2, 1, 3)

    def decode(self, z_q: Tensor, cond: Tensor, class_id: Tensor | None = None) -> Tensor:
        """z_q (N, vq_dim, Z', A') -> fractions f (N, C, Z, A)."""
        if self._chunked(z_q, cond):
            # the softmax of each chunk runs while its logits are still in cache
            return self._in_chunks(self.decode, z_q, cond, class_id)
        return self.normalise(self.decode_logits(z_q, cond, class_id))

    def decode_indices(
        self, indices: Tensor, cond: Tensor, class_id: Tensor | None = None
    ) -> Tensor:
        """Codes (N, L) in raster order (Z' outer, A' inner; docs/calovq.md, A17) or (N, Z', A')
        -> fractions f (N, C, Z, A)."""
        if indices.dim() == 2:
            indices = indices.view(indices.shape[0], *self.config.latent_shape)
        return self.decode(self.quantizer.decode_indices(indices), cond, class_id)
