"""Vector quantiser with a learned codebook (VQ-VAE, Calo-VQ Eq. 1-2).

Contract (one return shape always)::

    quantized, indices, losses = quantizer(z)
    z_q = quantizer.decode_indices(indices)

``z`` is channel-first, (N, D, *spatial) — (N, D, Z', A') for the cylindrical model and
(N, D, L) for the dense one. Each spatial position is replaced by its nearest code (squared
Euclidean distance). The gradient is passed straight through from ``quantized`` to ``z``
([P] §4). ``losses`` carries the two codebook terms of Eq. 2 unweighted (the objective
applies beta) and batch statistics (perplexity, fraction of codes used).

Dead-code revival (a switch, off by default): an exponential moving average of how often
each code is chosen is kept; in training mode, codes whose average falls below
``dead_code_threshold`` are reset to randomly chosen encoder outputs of the current batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VectorQuantizer", "QuantizerLosses"]


@dataclass
class QuantizerLosses:
    """Loss terms and statistics of one quantiser call (all 0-d tensors).

    codebook:   mean ||sg[z] - e||^2, moves the codes ("dictionary learning").
    commitment: mean ||z - sg[e]||^2, keeps the encoder close to its codes.
    perplexity: exp(entropy) of the code histogram of this batch (1 … n_codes).
    usage:      fraction of codes chosen at least once in this batch.
    """

    codebook: Tensor
    commitment: Tensor
    perplexity: Tensor
    usage: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook quantiser with straight-through gradients.

    Args:
        n_codes: codebook size K (1024 in every Calo-VQ model).
        dim: code dimension D (Table 6 "VQ dim").
        revive_dead_codes: reset rarely used codes to batch encoder outputs in training.
        dead_code_threshold: EMA count per batch below which a code counts as dead.
        usage_decay: decay of the EMA of code counts.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        revive_dead_codes: bool = False,
        dead_code_threshold: float = 1e-3,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.n_codes, self.dim = int(n_codes), int(dim)
        self.revive_dead_codes = bool(revive_dead_codes)
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.codebook = nn.Embedding(self.n_codes, self.dim)
        # small uniform initialisation, as in the original VQ-VAE
        nn.init.uniform_(self.codebook.weight, -1.0 / self.n_codes, 1.0 / self.n_codes)
        # EMA of how often each code is chosen per batch; starts "alive"
        self.register_buffer("ema_counts", torch.ones(self.n_codes))

    def _flatten(self, z: Tensor) -> Tensor:
        # (N, D, *S) -> (N * prod(S), D)
        return z.movedim(1, -1).reshape(-1, self.dim)

    def nearest(self, z: Tensor) -> Tensor:
        """Indices of the nearest codes. z (N, D, *S) -> (N, *S) long."""
        # distances in float32 even under autocast: bf16 rounding would pick wrong codes
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._flatten(z).float()
            w = self.codebook.weight.float()
            # ||z||^2 - 2 z.e + ||e||^2, without forming all differences
            d = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ w.t() + w.pow(2).sum(1)[None, :]
            idx = d.argmin(dim=1)
        return idx.view((z.shape[0],) + tuple(z.shape[2:]))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code vectors of given indices. (N, *S) long -> (N, D, *S)."""
        return self.codebook(indices).movedim(-1, 1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerLosses]:
        """Quantise ``z``.

        Args:
            z: encoder output (N, D, *S).

        Returns:
            quantized (N, D, *S) with straight-through gradient to z, indices (N, *S),
            and :class:`QuantizerLosses`.
        """
        if z.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in dim 1, got shape {tuple(z.shape)}")
        indices = self.nearest(z.detach())
        e = self.decode_indices(indices)
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        quantized = z + (e - z).detach()  # straight-through: forward e, backward identity

        counts = torch.bincount(indices.reshape(-1), minlength=self.n_codes).to(z.dtype)
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        losses = QuantizerLosses(
            codebook=codebook_loss,
            commitment=commitment_loss,
            perplexity=entropy.exp().detach(),
            usage=(counts > 0).to(z.dtype).mean().detach(),
        )
        if self.training:
            with torch.no_grad():
                self.ema_counts.mul_(self.usage_decay).add_(
                    counts.float(), alpha=1 - self.usage_decay
                )
                if self.revive_dead_codes:
                    self._revive(self._flatten(z.detach()))
        return quantized, indices, losses

    @torch.no_grad()
    def _revive(self, flat: Tensor) -> int:
        dead = (self.ema_counts < self.dead_code_threshold).nonzero().flatten()
        if dead.numel() == 0 or flat.shape[0] == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        self.codebook.weight.data[dead] = flat[pick].to(self.codebook.weight.dtype)
        self.ema_counts[dead] = 1.0  # give revived codes time to be chosen
        return int(dead.numel())

    @torch.no_grad()
    def codebook_usage(self) -> float:
        """Fraction of codes whose usage EMA is above the dead-code threshold."""
        return float((self.ema_counts >= self.dead_code_threshold).float().mean())

    def extra_repr(self) -> str:
        return f"n_codes={self.n_codes}, dim={self.dim}, revive_dead_codes={self.revive_dead_codes}"
