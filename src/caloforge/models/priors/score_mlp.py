"""CaloLatent's latent score model: the layer model's residual MLP on the VAE latent.

"Identical to the layer model; however, it is additionally conditioned on the energy per
layer" (CaloLatent §2): x is the 144-d latent z, the condition is (scaled E_inc, the 45
preprocessed u) and the network predicts the VP-SDE noise.

Mixed score (docs/calolatent.md): the prediction blends the noise of a standard
normal latent with the network's,

    eps_hat = (1 - sigmoid(m)) * sigma(t) x_t + sigmoid(m) * NN(x_t, t, cond),

with a learnable mixing logit m per latent dimension, initialised to 0. sigma(t) x_t is
E[eps | x_t] exactly when z ~ N(0, I) (then x_t ~ N(0, I) for every t), so the network
only has to learn how the VAE's latent departs from the prior the VAE was trained toward.

Shapes: x (N, latent_dim), t (N,), cond (N, cond_in_dim) -> eps_hat (N, latent_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...paths import VPSDEPath, broadcast_time
from ..energy.layer_diffusion import ConditionalResNetMLP, check_score_mlp

__all__ = ["LatentScoreConfig", "LatentScoreMLP"]


@dataclass
class LatentScoreConfig:
    """Configuration of :class:`LatentScoreMLP`; defaults are CaloLatent's ds2 model.

    Fields:
        latent_dim: VAE latent size (144 = 12 x 4 x 3).
        cond_in_dim: condition features (46: scaled E_inc and 45 preprocessed u).
        hidden_dim, n_layers, embed_dim, time_freqs, time_hidden: as the layer model.
        mixed_score: blend with the standard-normal noise through a learnable logit.
        beta_min, beta_max, t_min: the VP-SDE the model is trained on (sigma(t) of the
            mixed score); must equal the objective's.
    """

    latent_dim: int = 144
    cond_in_dim: int = 46
    hidden_dim: int = 512
    n_layers: int = 3
    embed_dim: int = 64
    time_freqs: int = 16
    time_hidden: int = 128
    mixed_score: bool = True
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-5

    def __post_init__(self) -> None:
        check_score_mlp(self.latent_dim, self.cond_in_dim, self.hidden_dim, self.n_layers,
                        self.embed_dim, self.time_freqs, self.time_hidden)
        self.path  # noqa: B018 - raises ConfigError for a bad schedule

    @property
    def path(self) -> VPSDEPath:
        return VPSDEPath(self.beta_min, self.beta_max, self.t_min)


class LatentScoreMLP(nn.Module):
    """eps_hat(z_t, t, cond) with the mixed-score parameterisation (module docstring)."""

    def __init__(self, config: LatentScoreConfig | None = None) -> None:
        super().__init__()
        cfg = config or LatentScoreConfig()
        self.config = cfg
        self.path = cfg.path
        self.net = ConditionalResNetMLP(cfg.latent_dim, cfg.cond_in_dim, cfg.hidden_dim,
                                        cfg.n_layers, cfg.embed_dim, cfg.time_freqs,
                                        cfg.time_hidden)
        self.mixing_logit = (nn.Parameter(torch.zeros(cfg.latent_dim)) if cfg.mixed_score
                             else None)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        out = self.net(x, t, cond)
        if self.mixing_logit is None:
            return out
        w = torch.sigmoid(self.mixing_logit).to(x.dtype)
        prior_eps = self.path.sigma(broadcast_time(t, x)) * x
        return (1.0 - w) * prior_eps + w * out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
