"""Vector quantiser with a learned codebook (VQ-VAE, Calo-VQ Eq. 1-2).

Contract (one return shape always)::

    quantized, indices, losses = quantizer(z)
    z_q = quantizer.decode_indices(indices)

``z`` is channel-first, (N, D, *spatial) — (N, D, Z', A') for the cylindrical model and
(N, D, L) for the dense one. Each spatial position is replaced by its nearest code (squared
Euclidean distance). The gradient is passed straight through from ``quantized`` to ``z``
([P] §4). ``losses`` carries the two codebook terms of Eq. 2 unweighted (the objective
applies beta) and batch statistics (perplexity, fraction of codes used).

Codebook health (the paper states no initialisation, update rule or dead-code handling;
docs/calovq.md, "Codebook health"). Each is a switch; all off reproduces the plain VQ-VAE:

* ``update="ema"``: codes are exponential moving averages of the encoder outputs
  assigned to them (k-means in the limit), with Laplace smoothing of the counts. The
  codebook is then a buffer, not a parameter: the optimiser does not touch it, the
  codebook term of Eq. 2 is 0, and a trainer's weight averaging copies it instead of
  blending old and new codes.
* :meth:`VectorQuantizer.init_from_data`: k-means initialisation from encoder outputs
  (called by the training code on the first batches, before training starts).
* ``revive_dead_codes``: an exponential moving average of how often each code is chosen
  per batch is kept; in training mode, codes whose average falls below
  ``dead_code_threshold`` are reset to randomly chosen encoder outputs of the batch.
* ``l2_normalize``: z and the codes are normalised to unit length before the look-up
  (cosine similarity), and the decoder receives the unit-length code.

Under ``torch.distributed`` the per-batch statistics are summed over ranks and the revived
codes broadcast from rank 0, so every rank keeps the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError

__all__ = ["CODEBOOK_UPDATES", "QuantizerLosses", "VectorQuantizer", "code_statistics"]

#: how codes move: by the gradient of Eq. 2's codebook term, or by moving averages
CODEBOOK_UPDATES = ("gradient", "ema")


@dataclass
class QuantizerLosses:
    """Loss terms and statistics of one quantiser call (all 0-d tensors).

    codebook:   mean ||sg[z] - e||^2, moves the codes ("dictionary learning"); 0 with
                EMA updates, which move the codes themselves.
    commitment: mean ||z - sg[e]||^2, keeps the encoder close to its codes.
    perplexity: exp(entropy) of the code histogram of this batch (1 … n_codes).
    usage:      fraction of codes chosen at least once in this batch.
    """

    codebook: Tensor
    commitment: Tensor
    perplexity: Tensor
    usage: Tensor


def _code_counts(indices: Tensor, n_codes: int) -> Tensor:
    """How often each code occurs, (n_codes,) long.

    A scatter-add rather than ``torch.bincount``: bincount reads the largest index back
    to the host to size its output, a synchronisation on every training step on a GPU.
    """
    flat = indices.reshape(-1)
    return torch.zeros(n_codes, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat))


def code_statistics(indices: Tensor, n_codes: int) -> tuple[Tensor, Tensor]:
    """(usage, perplexity) of a set of code indices (any shape, long).

    usage: fraction of the ``n_codes`` codes that occur at least once; perplexity:
    exp(entropy) of the code histogram, between 1 (one code) and ``n_codes`` (uniform).
    Both are float32 0-d tensors.
    """
    counts = _code_counts(indices, n_codes).float()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _CodebookBuffer(nn.Module):
    """A codebook held as a buffer, under the same state-dict key as ``nn.Embedding``
    (``codebook.weight``), for codes that the optimiser must not update."""

    def __init__(self, n_codes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.empty(n_codes, dim))

    def forward(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.weight)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook quantiser with straight-through gradients.

    Args:
        n_codes: codebook size K (1024 in every Calo-VQ model).
        dim: code dimension D (Table 6 "VQ dim").
        revive_dead_codes: reset rarely used codes to batch encoder outputs in training.
        dead_code_threshold: EMA count per batch below which a code counts as dead.
        usage_decay: decay of the EMA of code counts.
        update: ``"gradient"`` (Eq. 2's codebook term) or ``"ema"`` (moving averages).
        ema_decay: decay of the EMA codebook statistics.
        l2_normalize: look codes up by cosine similarity on unit vectors.
        eps: Laplace smoothing of the EMA counts.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        revive_dead_codes: bool = False,
        dead_code_threshold: float = 1e-3,
        usage_decay: float = 0.99,
        *,
        update: str = "gradient",
        ema_decay: float = 0.99,
        l2_normalize: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if update not in CODEBOOK_UPDATES:
            raise ConfigError(f"codebook update must be one of {CODEBOOK_UPDATES}, got {update!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"codebook EMA decay must be in [0, 1), got {ema_decay}")
        self.n_codes, self.dim = int(n_codes), int(dim)
        self.revive_dead_codes = bool(revive_dead_codes)
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.update, self.ema_decay = update, float(ema_decay)
        self.l2_normalize, self.eps = bool(l2_normalize), float(eps)
        if update == "ema":
            self.codebook = _CodebookBuffer(self.n_codes, self.dim)
        else:
            self.codebook = nn.Embedding(self.n_codes, self.dim)
        with torch.no_grad():
            # small uniform initialisation, as in the original VQ-VAE
            self.codebook.weight.uniform_(-1.0 / self.n_codes, 1.0 / self.n_codes)
        # EMA of how often each code is chosen per batch; starts "alive"
        self.register_buffer("ema_counts", torch.ones(self.n_codes))
        if update == "ema":
            # running cluster sizes and sums of assigned encoder outputs (code = sum / size)
            self.register_buffer("ema_cluster_size", torch.ones(self.n_codes))
            self.register_buffer("ema_embed_sum", self.codebook.weight.detach().clone())

    # ------------------------------------------------------------------ look-up
    def _flatten(self, z: Tensor) -> Tensor:
        # (N, D, *S) -> (N * prod(S), D)
        return z.movedim(1, -1).reshape(-1, self.dim)

    def _normalise(self, v: Tensor) -> Tensor:
        return F.normalize(v, dim=-1) if self.l2_normalize else v

    @property
    def codes(self) -> Tensor:
        """The code vectors as the decoder sees them, (K, D)."""
        return self._normalise(self.codebook.weight)

    def _nearest_flat(self, flat: Tensor, codes: Tensor) -> Tensor:
        # ||z||^2 - 2 z.e + ||e||^2, without forming all differences
        d = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ codes.t() + codes.pow(2).sum(1)[None, :]
        return d.argmin(dim=1)

    def nearest(self, z: Tensor) -> Tensor:
        """Indices of the nearest codes. z (N, D, *S) -> (N, *S) long."""
        # distances in float32 even under autocast: bf16 rounding would pick wrong codes
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._normalise(self._flatten(z).float())
            idx = self._nearest_flat(flat, self.codes.float())
        return idx.view((z.shape[0],) + tuple(z.shape[2:]))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code vectors of given indices. (N, *S) long -> (N, D, *S)."""
        e = self._normalise(self.codebook(indices))
        # an explicit permutation (movedim(-1, 1) exports a negative axis ONNX rejects)
        return e.permute(0, e.dim() - 1, *range(1, e.dim() - 1))

    # ------------------------------------------------------------------ forward
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
        if self.l2_normalize:
            z = F.normalize(z, dim=1)
        indices = self.nearest(z.detach())
        e = self.decode_indices(indices)
        if self.update == "ema":
            # the codes follow their assigned encoder outputs by moving averages
            codebook_loss = torch.zeros((), device=z.device, dtype=z.dtype)
        else:
            codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        quantized = z + (e - z).detach()  # straight-through: forward e, backward identity

        counts = _code_counts(indices, self.n_codes).to(z.dtype)
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        losses = QuantizerLosses(
            codebook=codebook_loss,
            commitment=commitment_loss,
            perplexity=entropy.exp().detach(),
            usage=(counts > 0).to(z.dtype).mean().detach(),
        )
        if self.training:
            self._train_updates(self._flatten(z.detach()).float(), indices.reshape(-1),
                                counts.detach().float())
        return quantized, indices, losses

    @torch.no_grad()
    def _train_updates(self, flat: Tensor, idx: Tensor, counts: Tensor) -> None:
        sums = None
        if self.update == "ema":
            sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, flat)
        if _distributed():
            # one codebook for all ranks: the statistics of the whole global batch
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        self.ema_counts.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if sums is not None:
            self._ema_step(counts, sums)
        if self.revive_dead_codes:
            self._revive(flat)

    @torch.no_grad()
    def _ema_step(self, counts: Tensor, sums: Tensor) -> None:
        g = self.ema_decay
        self.ema_cluster_size.mul_(g).add_(counts, alpha=1 - g)
        self.ema_embed_sum.mul_(g).add_(sums, alpha=1 - g)
        # Laplace smoothing: no code divides by a zero count
        n = self.ema_cluster_size.sum()
        size = (self.ema_cluster_size + self.eps) / (n + self.n_codes * self.eps) * n
        self.codebook.weight.copy_(self.ema_embed_sum / size[:, None])

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Put ``vectors`` (K, D) into the codes where the mask ``which`` (K,) is true,
        statistics included (masked, so no index set is read back to the host)."""
        def put(buf: Tensor, new: Tensor | float) -> None:
            mask = which.reshape((-1,) + (1,) * (buf.dim() - 1))
            new = torch.as_tensor(new, dtype=buf.dtype, device=buf.device)
            buf.copy_(torch.where(mask, new, buf))

        put(self.codebook.weight.data, vectors)
        put(self.ema_counts, 1.0)  # give new codes time to be chosen
        if self.update == "ema":
            put(self.ema_cluster_size, 1.0)
            put(self.ema_embed_sum, vectors)

    @torch.no_grad()
    def _revive(self, flat: Tensor) -> Tensor:
        """Put every dead code on a random encoder output of the batch; returns how many.

        Written without reading the dead set back to the host (no ``nonzero``, no Python
        branch on it): each step draws a candidate vector for every code and keeps it
        where the code is dead, so a GPU step never waits for the device.
        """
        dead = self.ema_counts < self.dead_code_threshold
        if flat.shape[0] == 0:
            return dead.sum()
        pick = torch.randint(0, flat.shape[0], (self.n_codes,), device=flat.device)
        vectors = flat[pick]
        if _distributed():
            # the dead set is the same everywhere (summed counts); the vectors are rank 0's
            dist.broadcast(vectors, 0)
        self._set_codes(dead, vectors)
        return dead.sum()

    @torch.no_grad()
    def init_from_data(self, z: Tensor, n_iter: int = 10) -> None:
        """k-means initialisation of the codebook from encoder outputs z (N, D, *S).

        The codes start from k-means++ seeding (each next code drawn with probability
        proportional to the squared distance to the nearest code so far) and take
        ``n_iter`` Lloyd steps; a code left without vectors is put on a random vector.
        With no more vectors than codes, every vector becomes a code and the remaining
        codes are jittered copies. Uses the global torch RNG.
        """
        flat = self._normalise(self._flatten(z.detach()).float())
        n = flat.shape[0]
        if n == 0:
            raise ValueError("init_from_data needs at least one encoder output")
        if n <= self.n_codes:
            # every vector is a code (zero k-means error); the other codes are jittered
            # copies of random vectors, on the scale of the data's spread
            extra = flat[torch.randint(0, n, (self.n_codes - n,), device=flat.device)]
            scale = 1e-2 * flat.std(0, unbiased=False).clamp_min(1e-6) if n > 1 else 1e-2
            codes = torch.cat([flat, extra + scale * torch.randn_like(extra)])
        else:
            codes = self._kmeans_pp(flat)
            for _ in range(n_iter):
                idx = self._nearest_flat(flat, codes)
                sums = torch.zeros_like(codes).index_add_(0, idx, flat)
                size = torch.bincount(idx, minlength=self.n_codes).to(flat.dtype)
                filled = size > 0
                codes[filled] = sums[filled] / size[filled, None]
                codes = self._normalise(codes)  # spherical k-means for cosine look-ups
                empty = (~filled).nonzero().flatten()
                if empty.numel():
                    codes[empty] = flat[torch.randint(0, n, (empty.numel(),),
                                                      device=flat.device)]
        codes = self._normalise(codes)
        if _distributed():
            dist.broadcast(codes, 0)
        self._set_codes(torch.ones(self.n_codes, dtype=torch.bool, device=codes.device), codes)

    def _kmeans_pp(self, flat: Tensor) -> Tensor:
        """k-means++ seeding: (n, D) vectors -> (K, D) distinct starting codes."""
        n = flat.shape[0]
        codes = torch.empty(self.n_codes, self.dim, device=flat.device, dtype=flat.dtype)
        pick = int(torch.randint(0, n, (1,)))
        codes[0] = flat[pick]
        d2 = (flat - codes[0]).pow(2).sum(1)
        for k in range(1, self.n_codes):
            total = d2.sum()
            if total > 0:
                pick = int(torch.multinomial(d2 / total, 1))
            else:  # every vector already is a code: any will do
                pick = int(torch.randint(0, n, (1,)))
            codes[k] = flat[pick]
            d2 = torch.minimum(d2, (flat - codes[k]).pow(2).sum(1))
        return codes

    @torch.no_grad()
    def codebook_usage(self) -> float:
        """Fraction of codes whose usage EMA is above the dead-code threshold."""
        return float((self.ema_counts >= self.dead_code_threshold).float().mean())

    def extra_repr(self) -> str:
        return (f"n_codes={self.n_codes}, dim={self.dim}, update={self.update!r}, "
                f"l2_normalize={self.l2_normalize}, revive_dead_codes={self.revive_dead_codes}")
