"""CaloLatent's layer-energy diffusion network: a residual MLP predicting the VP-SDE noise.

The paper (CaloLatent §2) states "a ResNet architecture with 3 layers consisting of 512
hidden nodes", conditioned on the incident energy and the time; the structure below is
the reading of docs/calolatent.md:

* time: 16 sinusoid frequencies exp(-k ln(10^4) / 15), k = 0..15, applied to t in
  [1e-5, 1] *unscaled* (smooth, low-frequency features) -> [sin, cos] (32) -> Linear(128)
  -> SiLU -> Linear(64) (:class:`DiffusionTimeEmbedding`);
* condition: c_e = SiLU(Linear_64(cond)); c = SiLU(Linear_64([c_e, t_emb]));
* network (:class:`ConditionalResNetMLP`): e = LeakyReLU(Linear_H(c)); h = Linear_H(x);
  then ``n_layers - 1`` residual blocks
  ``h <- Linear_H(LeakyReLU(Linear_H(LeakyReLU(h)) + Linear_H(e))) + Linear_H(h)``;
  output Linear(dim). "3 layers" is the input layer plus two residual blocks. No
  normalisation, no dropout; LeakyReLU slope 0.01.

The same network, with the latent as x and (E_inc, u) as condition, is the latent score
model (:mod:`caloforge.models.priors.score_mlp`).

Shapes: x (N, dim), t (N,), cond (N, cond_in_dim) -> eps_hat (N, dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn import SinusoidalTimeEmbedding

__all__ = [
    "ConditionalResNetMLP",
    "DiffusionTimeEmbedding",
    "LayerDiffusionConfig",
    "LayerDiffusionMLP",
]


def check_score_mlp(dim: int, cond_in_dim: int, hidden_dim: int, n_layers: int,
                    embed_dim: int, time_freqs: int, time_hidden: int) -> None:
    """The range checks shared by the layer and the latent score configs."""
    for name, v in (("dim", dim), ("cond_in_dim", cond_in_dim), ("hidden_dim", hidden_dim),
                    ("embed_dim", embed_dim), ("time_freqs", time_freqs),
                    ("time_hidden", time_hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if n_layers < 1:
        raise ConfigError(f"n_layers must be >= 1 (input layer + residual blocks), got {n_layers}")
    if time_freqs < 2:
        raise ConfigError(f"time_freqs must be >= 2, got {time_freqs}")


@dataclass
class LayerDiffusionConfig:
    """Configuration of :class:`LayerDiffusionMLP`; defaults are CaloLatent's ds2 model.

    Fields:
        dim: features modelled (45 preprocessed layer ratios u).
        cond_in_dim: condition features (1: the scaled incident energy).
        hidden_dim: width of the residual MLP (paper: 512).
        n_layers: input layer + residual blocks (paper: 3).
        embed_dim: width of the time and condition embeddings (64).
        time_freqs: sinusoid frequencies of the time embedding (16).
        time_hidden: hidden width of the time embedding's MLP (128).
    """

    dim: int = 45
    cond_in_dim: int = 1
    hidden_dim: int = 512
    n_layers: int = 3
    embed_dim: int = 64
    time_freqs: int = 16
    time_hidden: int = 128

    def __post_init__(self) -> None:
        check_score_mlp(self.dim, self.cond_in_dim, self.hidden_dim, self.n_layers,
                        self.embed_dim, self.time_freqs, self.time_hidden)


class DiffusionTimeEmbedding(nn.Module):
    """t (N,) in [0, 1], unscaled -> (N, dim): sinusoids -> Linear -> SiLU -> Linear.

    Frequencies exp(-k ln(10^4) / (n_freqs - 1)), k = 0 .. n_freqs - 1, so the slowest is
    1e-4 rad per unit t and the fastest 1 rad (the shared sinusoidal features with a
    matching ``max_period`` and ``t_scale = 1``).
    """

    def __init__(self, dim: int = 64, n_freqs: int = 16, hidden: int = 128) -> None:
        super().__init__()
        # shared features use exp(-k ln(P) / n); P = 10^(4 n / (n - 1)) gives ln(10^4)/(n-1)
        period = math.exp(math.log(1e4) * n_freqs / (n_freqs - 1))
        self.features = SinusoidalTimeEmbedding(2 * n_freqs, max_period=period, t_scale=1.0)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t))


class _ResidualDense(nn.Module):
    """h -> Linear(LeakyReLU(Linear(LeakyReLU(h)) + Linear(e))) + Linear(h)."""

    def __init__(self, hidden: int, slope: float) -> None:
        super().__init__()
        self.skip = nn.Linear(hidden, hidden)
        self.inner = nn.Linear(hidden, hidden)
        self.cond = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.slope = slope

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        a = self.inner(F.leaky_relu(h, self.slope))
        a = F.leaky_relu(a + self.cond(e), self.slope)
        return self.out(a) + self.skip(h)


class ConditionalResNetMLP(nn.Module):
    """The residual MLP of CaloLatent's score models (see the module docstring).

    Args:
        dim: width of x and of the output.
        cond_in_dim: raw condition features.
        hidden_dim, n_layers: the residual MLP.
        embed_dim, time_freqs, time_hidden: the embeddings.

    Shapes: x (N, dim), t (N,), cond (N, cond_in_dim) -> (N, dim).
    """

    slope = 0.01

    def __init__(self, dim: int, cond_in_dim: int, hidden_dim: int = 512, n_layers: int = 3,
                 embed_dim: int = 64, time_freqs: int = 16, time_hidden: int = 128) -> None:
        super().__init__()
        check_score_mlp(dim, cond_in_dim, hidden_dim, n_layers, embed_dim, time_freqs,
                        time_hidden)
        self.dim, self.cond_in_dim = dim, cond_in_dim
        self.time_embed = DiffusionTimeEmbedding(embed_dim, time_freqs, time_hidden)
        self.cond_embed = nn.Linear(cond_in_dim, embed_dim)
        self.cond_time = nn.Linear(2 * embed_dim, embed_dim)
        self.cond_hidden = nn.Linear(embed_dim, hidden_dim)
        self.inp = nn.Linear(dim, hidden_dim)
        self.blocks = nn.ModuleList(_ResidualDense(hidden_dim, self.slope)
                                    for _ in range(n_layers - 1))
        self.head = nn.Linear(hidden_dim, dim)

    def embed(self, t: Tensor, cond: Tensor) -> Tensor:
        """The condition vector c (N, embed_dim) of time and condition."""
        if cond.dim() == 1:
            cond = cond[:, None]
        c = F.silu(self.cond_embed(cond.to(self.inp.weight.dtype)))
        temb = self.time_embed(t.to(self.inp.weight.dtype))
        return F.silu(self.cond_time(torch.cat([c, temb], dim=-1)))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        e = F.leaky_relu(self.cond_hidden(self.embed(t, cond)), self.slope)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.head(h)


class LayerDiffusionMLP(ConditionalResNetMLP):
    """CaloLatent's layer-energy model: eps_hat(u_t, t, E_inc) (§2; docs/calolatent.md, 'Networks').

    Shapes: x (N, dim) preprocessed u at time t, t (N,), cond (N, 1) scaled E_inc
    -> eps_hat (N, dim).
    """

    def __init__(self, config: LayerDiffusionConfig | None = None) -> None:
        cfg = config or LayerDiffusionConfig()
        super().__init__(cfg.dim, cfg.cond_in_dim, cfg.hidden_dim, cfg.n_layers,
                         cfg.embed_dim, cfg.time_freqs, cfg.time_hidden)
        self.config = cfg

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
