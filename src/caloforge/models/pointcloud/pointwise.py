"""CaloClouds II's PointWise Net: the per-point EDM denoiser network F (docs/caloclouds.md,
'PointWise Net and EDM').

Every point of a shower is processed independently by the same network, conditioned on a
context vector shared by all points of that shower:

* time: c_noise (= ln(sigma) / 4, the EDM convention) -> random Fourier features
  [sin(2 pi c_noise w), cos(2 pi c_noise w)] with 32 fixed frequencies w ~ N(0, 16^2)
  -> Linear(64, 64) -> LeakyReLU;
* context c = [time embedding (64), E', N'] (66 values);
* six ConcatSquash layers 4 -> 128 -> 256 -> 512 -> 256 -> 128 -> 4, each of which sees c
  (:class:`ConcatSquashLinear`), with LeakyReLU(0.01) between them and none after the last.

The paper-size network has 504,920 trainable parameters (counted from the authors' code);
the Fourier frequencies are a buffer, not a parameter.

Shapes: x (N, P, point_dim), c_noise (N,), cond (N, cond_dim) -> (N, P, point_dim). P may
be 0. The caller applies the EDM preconditioning (c_in, c_skip, c_out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import GaussianFourierEmbedding

__all__ = ["ConcatSquashLinear", "FOURIER_SEED", "PointWiseNet", "PointWiseNetConfig"]

#: seed of the private generator that draws the Fourier frequencies: a fresh network has
#: the same time features whatever the global RNG state (they are saved with the weights too)
FOURIER_SEED = 0


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class PointWiseNetConfig:
    """Configuration of :class:`PointWiseNet`; defaults are CaloClouds II's network.

    Fields:
        point_dim: features per point (X, Y, Z, E).
        widths: hidden widths; ``len(widths) + 1`` ConcatSquash layers in all.
        cond_dim: shower conditions (the normalised E' and N').
        time_dim: width of the time embedding (output of its Linear layer).
        fourier_frequencies: random Fourier frequencies (2x as many features: sin and cos).
        fourier_std: standard deviation of the frequencies.
        residual: add the input to the output (CaloClouds 1; CaloClouds II has none).
        negative_slope: LeakyReLU slope between layers and in the time embedding.
    """

    point_dim: int = 4
    widths: tuple[int, ...] = (128, 256, 512, 256, 128)
    cond_dim: int = 2
    time_dim: int = 64
    fourier_frequencies: int = 32
    fourier_std: float = 16.0
    residual: bool = False
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        # TOML / JSON give lists: store a tuple so configs compare and hash alike
        self.widths = tuple(self.widths)
        for name in ("point_dim", "cond_dim", "time_dim", "fourier_frequencies"):
            _positive_int(name, getattr(self, name))
        for w in self.widths:
            _positive_int("every entry of widths", w)
        if not self.fourier_std > 0:
            raise ConfigError(f"fourier_std must be positive, got {self.fourier_std!r}")
        if not 0 <= self.negative_slope < 1:
            raise ConfigError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        if not isinstance(self.residual, bool):
            raise ConfigError(f"residual must be a bool, got {self.residual!r}")

    @property
    def context_dim(self) -> int:
        """Width of the context every layer sees: time embedding + conditions."""
        return self.time_dim + self.cond_dim


class ConcatSquashLinear(nn.Module):
    """CSL(h, c) = (W h + b) * sigmoid(W_g c + b_g) + W_b c, with W_b without bias.

    The context gates every output feature multiplicatively and shifts it additively, so
    the condition acts on every layer it is used in (FFJORD's ConcatSquash layer).

    Shapes: h (..., P, in_dim), c (..., 1, context_dim) or broadcastable -> (..., P, out_dim).
    Computing the gate and shift on the (N, 1, context) tensor costs them once per shower,
    not once per point.

    Without autograd (generation), a shower's gate and shift are folded into its own copy
    of the weights, W' = diag(g) W and b' = g b + s, so each layer is one batched
    matrix product instead of a product and two passes over the (N, P, out) activations.
    The result is the same up to rounding; it is used where the copies cost less than
    the passes they save (in_dim < 2 P), and 5 of the 18 ms of the paper-size network on
    a 1906-point shower on one CPU thread were those passes. Training keeps the plain
    form: its backward would need a gradient per shower's weight copy.
    """

    def __init__(self, in_dim: int, out_dim: int, context_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(context_dim, out_dim)
        self.shift = nn.Linear(context_dim, out_dim, bias=False)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        if self._folds(h, c):
            return self._folded(h, c)
        return self.layer(h) * torch.sigmoid(self.gate(c)) + self.shift(c)

    def _folds(self, h: Tensor, c: Tensor) -> bool:
        return (not torch.is_grad_enabled() and h.dim() == 3 and c.dim() == 3
                and c.shape[1] == 1 and c.shape[0] == h.shape[0]
                and self.layer.in_features < 2 * h.shape[1])

    def _folded(self, h: Tensor, c: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(c))  # (N, 1, out)
        weight = self.layer.weight.t() * g  # (N, in, out): column j scaled by g_j
        bias = torch.addcmul(self.shift(c), self.layer.bias, g)  # (N, 1, out)
        return torch.baddbmm(bias, h, weight)


class PointWiseNet(nn.Module):
    """The per-point network F(x, c_noise; E', N') of CaloClouds II (module docstring)."""

    def __init__(self, config: PointWiseNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or PointWiseNetConfig()
        self.config = cfg
        self.fourier = GaussianFourierEmbedding(2 * cfg.fourier_frequencies, cfg.fourier_std)
        # redraw from a private seeded generator: the buffer must not depend on the caller's RNG
        gen = torch.Generator().manual_seed(FOURIER_SEED)
        with torch.no_grad():
            self.fourier.w.copy_(torch.randn(cfg.fourier_frequencies, generator=gen)
                                 * cfg.fourier_std)
        self.time_linear = nn.Linear(2 * cfg.fourier_frequencies, cfg.time_dim)
        dims = (cfg.point_dim, *cfg.widths, cfg.point_dim)
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b, cfg.context_dim) for a, b in zip(dims[:-1], dims[1:])
        )

    def context(self, c_noise: Tensor, cond: Tensor) -> Tensor:
        """The shared context [time embedding, cond]: (N,), (N, cond_dim) -> (N, context_dim)."""
        temb = F.leaky_relu(self.time_linear(self.fourier(c_noise)), self.config.negative_slope)
        return torch.cat([temb, cond.to(temb.dtype)], dim=-1)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor) -> Tensor:
        """Apply the network to every point.

        Args:
            x: (N, P, point_dim) points, already scaled by c_in.
            c_noise: (N,) noise conditioning ln(sigma) / 4 (a 0-d tensor is used for all).
            cond: (N, cond_dim) normalised shower conditions (E', N').

        Returns:
            (N, P, point_dim).
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != cfg.point_dim:
            raise ValueError(f"x must have shape (N, P, {cfg.point_dim}), got {tuple(x.shape)}")
        n = x.shape[0]
        if c_noise.dim() == 0:
            c_noise = c_noise.expand(n)
        if c_noise.shape != (n,):
            raise ValueError(f"c_noise must have shape ({n},), got {tuple(c_noise.shape)}")
        if cond.shape != (n, cfg.cond_dim):
            raise ValueError(f"cond must have shape ({n}, {cfg.cond_dim}), got {tuple(cond.shape)}")
        c = self.context(c_noise.to(x.dtype), cond)[:, None, :]  # (N, 1, context): one per shower
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, c)
            if i < last:
                # in place where no graph needs h (generation): one buffer less per layer
                h = F.leaky_relu(h, cfg.negative_slope, inplace=not torch.is_grad_enabled())
        return x + h if cfg.residual else h

    def n_parameters(self) -> int:
        """Trainable parameters (the Fourier frequencies are a buffer and not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
