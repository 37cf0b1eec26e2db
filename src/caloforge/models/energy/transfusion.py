"""Autoregressive "transfusion" energy network p(u | E_inc) (CaloDREAM §3.1, Fig. 1, Tab. 1).

The 45 layer-energy features u_0 … u_44 are generated one at a time, each by its own 1-D
conditional flow, conditioned on a vector c_i that an encoder-decoder transformer
computes from E_inc and the earlier u's (Eq. 9):

    c_0 = c_0(E_inc),    c_i = c_i(u_0, …, u_{i-1}, E_inc)  for i > 0.

Token embeddings have no learned projection: a value is embedded as
[value, one-hot position, zeros] up to d_model. The encoder sees one token per condition
value (E_inc alone in the paper, where its self-attention is a trivial 1x1 matrix); the
decoder sees the u sequence shifted right, [start = 0, u_0, …, u_{L-2}] at positions
0 … L-1, with a causal mask, so its output at position i is c_i. One shared dense head
gives the velocity of every 1-D flow (Eq. 10):

    v(u_i(t), c_i, t) = MLP(concat[u_i(t), Linear(GaussianFourier(t)), c_i])  (a scalar).

Training is parallel over i with teacher forcing (c_i from the true u's). Sampling is
sequential: for i = 0 … L-1, the decoder processes one new position through its
key/value cache to give c_i, then a full ODE solve from u_i(0) ~ N(0, 1) to t = 1 gives
u_i, which becomes the next decoder input.

Parameter count (defaults, Tab. 1 widths): about 1.70 M.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...nn.embeddings import GaussianFourierEmbedding
from ...nn.encoder_decoder import EncoderDecoderTransformer

__all__ = ["TransfusionConfig", "TransfusionEnergyNet"]

#: ``solve(f, x0)`` integrates dx/dt = f(x, t) from t = 0 to 1 and returns x(1); x0 is (N,)
#: and f is called with x (N,) and t a 0-d or (N,) tensor.
FlowSolver = Callable[[Callable[[Tensor, Tensor], Tensor], Tensor], Tensor]


@dataclass
class TransfusionConfig:
    """Configuration of :class:`TransfusionEnergyNet`; defaults are CaloDREAM Tab. 1.

    Fields:
        n_layers_energy: number of u features L (45 calorimeter layers).
        n_cond: condition values, one encoder token each (1: scaled E_inc).
        d_model: token width (64); must hold [value, one-hot of L + 1 slots].
        n_heads: attention heads (4).
        n_encoder_layers, n_decoder_layers: "num layers 4", read as 4 of each.
        ff_dim: transformer MLP width ("intermediate dim 1024").
        head_hidden: width of the dense CFM head ("intermediate dim 256").
        head_layers: Linear layers in the head ("num layers 8"), SiLU and LayerNorm
            between them.
        time_embed_dim: width of the Gaussian Fourier time features and their Linear.
        fourier_scale: standard deviation of the Fourier frequencies.
        dropout: transformer dropout (0 in the paper's training).

    Widths, an ambiguity: Tab. 1 gives ff_dim 1024 and head width 256 (about 1.70 M
    parameters), while the parameter count of the CaloDREAM CaloChallenge entry fits
    ff_dim 512 and head_hidden 512 (about 2.38 M). We follow the paper's table; both are
    fields. With one condition token the encoder's attention and the decoder's
    cross-attention are softmaxes over one key (always 1), so their query and key
    projections never receive a gradient; they are kept to match the paper's network.
    """

    n_layers_energy: int = 45
    n_cond: int = 1
    d_model: int = 64
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    ff_dim: int = 1024
    head_hidden: int = 256
    head_layers: int = 8
    time_embed_dim: int = 64
    fourier_scale: float = 30.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for k in (
            "n_layers_energy",
            "n_cond",
            "d_model",
            "n_heads",
            "n_encoder_layers",
            "n_decoder_layers",
            "ff_dim",
            "head_hidden",
            "head_layers",
            "time_embed_dim",
        ):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be positive, got {getattr(self, k)!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.d_model < 1 + self.n_slots:
            raise ConfigError(
                f"d_model {self.d_model} cannot hold a value and a one-hot of {self.n_slots} "
                f"positions: it must be at least {1 + self.n_slots}"
            )
        if self.time_embed_dim % 2:
            raise ConfigError(f"time_embed_dim must be even, got {self.time_embed_dim}")
        if self.fourier_scale <= 0:
            raise ConfigError(f"fourier_scale must be positive, got {self.fourier_scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def n_slots(self) -> int:
        """Width of the one-hot part of a token: L + 1 decoder slots (or n_cond, if more)."""
        return max(self.n_layers_energy + 1, self.n_cond)


class TransfusionEnergyNet(nn.Module):
    """Encoder-decoder transformer conditions plus one shared 1-D CFM velocity head."""

    def __init__(self, config: TransfusionConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.transformer = EncoderDecoderTransformer(
            cfg.d_model,
            cfg.n_heads,
            cfg.n_encoder_layers,
            cfg.n_decoder_layers,
            cfg.ff_dim,
            cfg.dropout,
        )
        # fixed [one-hot, zeros] parts of the tokens; slot p marks position p
        slots = torch.zeros(cfg.n_slots, cfg.d_model - 1)
        slots[:, : cfg.n_slots] = torch.eye(cfg.n_slots)
        self.register_buffer("slots", slots, persistent=False)
        self.fourier = GaussianFourierEmbedding(cfg.time_embed_dim, cfg.fourier_scale)
        self.time_proj = nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim)
        # The head's first Linear acts on concat[u, emb(t), c]; it is written as the sum of
        # three Linears on the parts (the same function and parameter count) so that the
        # c part, fixed during a 1-D solve, is computed once per layer when sampling.
        width = cfg.head_hidden if cfg.head_layers > 1 else 1
        self.head_u = nn.Linear(1, width, bias=False)
        self.head_t = nn.Linear(cfg.time_embed_dim, width, bias=False)
        self.head_c = nn.Linear(cfg.d_model, width)
        self.head_norms = nn.ModuleList(
            nn.LayerNorm(cfg.head_hidden) for _ in range(cfg.head_layers - 1)
        )
        self.head_linears = nn.ModuleList(
            nn.Linear(cfg.head_hidden, cfg.head_hidden if i < cfg.head_layers - 2 else 1)
            for i in range(cfg.head_layers - 1)
        )

    # ---------------------------------------------------------------- embeddings
    def _tokens(self, values: Tensor, first_slot: int = 0) -> Tensor:
        """[value, one-hot(slot), zeros] tokens: values (N, T) -> (N, T, d_model)."""
        n, t = values.shape
        onehot = self.slots[first_slot : first_slot + t].to(values.dtype)
        return torch.cat([values[..., None], onehot.expand(n, t, -1)], dim=-1)

    def _check_cond(self, e_inc: Tensor) -> Tensor:
        if e_inc.dim() == 1 and self.config.n_cond == 1:
            e_inc = e_inc[:, None]
        if e_inc.dim() != 2 or e_inc.shape[1] != self.config.n_cond:
            raise ValueError(
                f"condition must have shape (N, {self.config.n_cond}), got {tuple(e_inc.shape)}"
            )
        return e_inc

    # ---------------------------------------------------------------- conditions
    def conditions(self, e_inc: Tensor, u: Tensor) -> Tensor:
        """Teacher-forced conditions c_0 … c_{T-1}.

        Args:
            e_inc: (N, n_cond) scaled condition (E_inc).
            u: (N, T), 1 <= T <= L, the u's in order. c_i depends on E_inc and u[:, :i]
                only, so the last column is not used (it is what c_{T-1} conditions);
                pass the full u to get all L conditions.

        Returns:
            c (N, T, d_model).
        """
        e_inc = self._check_cond(e_inc)
        n, t = u.shape
        if not 1 <= t <= self.config.n_layers_energy:
            raise ValueError(f"u must have 1 … {self.config.n_layers_energy} columns, got {t}")
        shifted = torch.cat([u.new_zeros(n, 1), u[:, :-1]], dim=1)  # start token 0
        return self.transformer(self._tokens(e_inc), self._tokens(shifted))

    # ---------------------------------------------------------------- CFM head
    def _head(self, u: Tensor, t: Tensor | float, c_proj: Tensor) -> Tensor:
        """Velocity from u (…), t broadcastable to u, and head_c(c) (…, width) -> (…)."""
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device)
        if t.dim() == 0:
            t = t.reshape(1)  # one time for all: embed once, broadcast below
        elif t.dim() < u.dim():
            t = t.reshape(t.shape + (1,) * (u.dim() - t.dim()))
        temb = self.fourier(t.reshape(-1)).view(*t.shape, -1)
        h = c_proj + self.head_u(u[..., None]) + self.head_t(self.time_proj(temb))
        for norm, lin in zip(self.head_norms, self.head_linears):
            h = lin(norm(F.silu(h)))
        return h[..., 0]

    def velocity(self, u_t: Tensor, t: Tensor | float, c: Tensor) -> Tensor:
        """The shared head v(u_i(t), c_i, t) (Eq. 10).

        Shapes: u_t (N, T); t a number, 0-d, (N,) or (N, T); c (N, T, d_model) -> (N, T).
        Also u_t (N,) with c (N, d_model) -> (N,).
        """
        return self._head(u_t, t, self.head_c(c))

    def forward(self, u_t: Tensor, t: Tensor, e_inc: Tensor, u_data: Tensor) -> Tensor:
        """Teacher-forced velocities of all L flows.

        Args:
            u_t: (N, L) points on the flow paths.
            t: (N, L) one time per layer (independent draws in training), or (N,).
            e_inc: (N, n_cond) scaled condition.
            u_data: (N, L) the true u's, from which the conditions are computed.

        Returns:
            v (N, L).
        """
        L = self.config.n_layers_energy
        if u_t.shape[1:] != (L,) or u_data.shape[1:] != (L,):
            raise ValueError(
                f"u_t and u_data must be (N, {L}), got {tuple(u_t.shape)} and {tuple(u_data.shape)}"
            )
        return self.velocity(u_t, t, self.conditions(e_inc, u_data))

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self, e_inc: Tensor, solve: FlowSolver, generator: torch.Generator | None = None
    ) -> Tensor:
        """Generate u layer by layer.

        Args:
            e_inc: (N, n_cond) scaled condition.
            solve: ``solve(f, x0) -> x(1)`` for dx/dt = f(x, t) from t = 0 to 1, e.g.
                ``lambda f, x0: solve_ode(f, x0, uniform_times(0, 1, 50), "rk4")``.
            generator: draws the N(0, 1) starting points (one (N,) draw per layer, in
                layer order); the global generator when None.

        Returns:
            u (N, L): u_i is the end of a full 1-D solve conditioned on c_i, which the
            decoder computes from the already finished u_0 … u_{i-1} (one new position
            through its cache per layer).
        """
        e_inc = self._check_cond(e_inc)
        n, L = e_inc.shape[0], self.config.n_layers_energy
        state = self.transformer.start(self._tokens(e_inc), max_len=L)
        u = e_inc.new_empty(n, L)
        prev = e_inc.new_zeros(n, 1)  # the start token's value
        for i in range(L):
            c = self.transformer.step(state, self._tokens(prev, first_slot=i)[:, 0])
            x0 = torch.randn(n, generator=generator, dtype=e_inc.dtype, device=e_inc.device)
            u[:, i] = solve(partial(self._head, c_proj=self.head_c(c)), x0)
            prev = u[:, i : i + 1]
        return u

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
