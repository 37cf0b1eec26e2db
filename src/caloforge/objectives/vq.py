"""Stage-1 objective of Calo-VQ (Eq. 2, docs/calovq.md, A5, A7, A13).

    L_VQ = ||x - x_hat||^2 + ||sg[z] - e||^2 + beta ||z - sg[e]||^2

x is the pre-processed input of Eq. 5, x = ln(a + b E/R)/c. The decoder ends in a softmax
giving fractions f (used as E = f R, Eq. 6), so the reconstruction is mapped into the same
space before the L2: x_hat = ln(a + b f)/c (docs/calovq.md, A5). beta defaults to 1, as printed in Eq. 2
(docs/calovq.md, A13). The talk's physics-aware term (centres and widths per layer, docs/calovq.md, A7) is an
optional extra with weight 0 by default — it is not part of the paper's objective.

Objectives are callables separate from networks: ``terms = objective(model, batch)`` with
``batch = {"x": ..., "cond": ..., ["class_id": ...]}``; ``terms["loss"]`` is what to minimise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["x_from_fractions", "fractions_from_x", "PhysicsAwareLoss", "VQObjective"]


def x_from_fractions(f: Tensor, a: float, b: float, c: float) -> Tensor:
    """Eq. 5 applied to fractions: ln(a + b f) / c (any shape)."""
    return torch.log(a + b * f) / c


def fractions_from_x(x: Tensor, a: float, b: float, c: float) -> Tensor:
    """Inverse of :func:`x_from_fractions`: (exp(c x) - a) / b (any shape)."""
    return (torch.exp(c * x) - a) / b


class PhysicsAwareLoss(nn.Module):
    """Per-layer differences of shower centres and widths in eta and phi (talk only, docs/calovq.md, A7).

    For every layer l and coordinate u in (eta, phi), with fractions f normalised within
    the layer: centre = sum u f / sum f and width = sqrt(sum u^2 f / sum f - centre^2).
    The loss is the mean absolute difference of centres plus that of widths, over
    layers, both coordinates and the batch, with u divided by its largest |u| so that
    the terms are O(1). Layers with no energy in the target are ignored.

    Args:
        eta, phi: voxel coordinates shaped like one shower (e.g. (C, Z, A) or (V,)).
        layer_index: long tensor of the same shape, the layer of each voxel.
    """

    def __init__(self, eta: Tensor, phi: Tensor, layer_index: Tensor) -> None:
        super().__init__()
        scale = max(float(eta.abs().max()), float(phi.abs().max()), 1e-12)
        self.register_buffer("eta", eta.reshape(-1).float() / scale)
        self.register_buffer("phi", phi.reshape(-1).float() / scale)
        self.register_buffer("layer", layer_index.reshape(-1).long())
        self.n_layers = int(self.layer.max()) + 1

    def _moments(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = f.shape[0]

        def per_layer(v: Tensor) -> Tensor:
            return v.new_zeros(n, self.n_layers).index_add(1, self.layer, v)

        e = per_layer(f)
        safe = e.clamp_min(1e-12)
        stats = []
        for u in (self.eta, self.phi):
            m1 = per_layer(f * u) / safe
            m2 = per_layer(f * u * u) / safe
            stats += [m1, torch.sqrt((m2 - m1 * m1).clamp_min(1e-12))]
        return torch.stack(stats, dim=-1), e, safe

    def forward(self, f_pred: Tensor, f_true: Tensor) -> Tensor:
        """f_pred, f_true (N, *shower shape) fractions -> scalar loss."""
        s_pred, _, _ = self._moments(f_pred.reshape(f_pred.shape[0], -1))
        s_true, e_true, _ = self._moments(f_true.reshape(f_true.shape[0], -1))
        mask = (e_true > 1e-9).to(f_pred.dtype)[..., None]
        return ((s_pred - s_true).abs() * mask).sum() / (mask.sum() * s_pred.shape[-1]).clamp_min(1)


@dataclass
class VQObjective:
    """Eq. 2 (+ optional physics-aware term) as a callable ``objective(model, batch)``.

    Fields:
        a, b, c: constants of Eq. 5 (Table 6; ds2: 1, 3000, 7).
        beta: commitment weight (default 1, docs/calovq.md, A13).
        physics: a :class:`PhysicsAwareLoss`, or None.
        physics_weight: its weight (0 = off, the paper's objective).

    The returned dict always has the keys ``loss`` (to minimise), ``rec``, ``codebook``,
    ``commitment``, ``physics``, ``perplexity`` and ``usage`` (0-d tensors).
    """

    a: float = 1.0
    b: float = 3000.0
    c: float = 7.0
    beta: float = 1.0
    physics: PhysicsAwareLoss | None = None
    physics_weight: float = 0.0

    def reconstruction(self, x: Tensor, fractions: Tensor) -> Tensor:
        """Mean squared error between x and ln(a + b f)/c."""
        return F.mse_loss(x_from_fractions(fractions, self.a, self.b, self.c), x)

    def terms(self, x: Tensor, out) -> dict[str, Tensor]:
        """Loss terms from a model output (:class:`~caloforge.models.VQVAEOutput`)."""
        rec = self.reconstruction(x, out.fractions)
        q = out.losses
        loss = rec + q.codebook + self.beta * q.commitment
        if self.physics is not None and self.physics_weight != 0.0:
            f_true = fractions_from_x(x, self.a, self.b, self.c).clamp_min(0)
            phys = self.physics(out.fractions, f_true)
            loss = loss + self.physics_weight * phys
        else:
            phys = torch.zeros((), device=x.device, dtype=x.dtype)
        return {
            "loss": loss,
            "rec": rec,
            "codebook": q.codebook,
            "commitment": q.commitment,
            "physics": phys,
            "perplexity": q.perplexity,
            "usage": q.usage,
        }

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = batch["x"]
        out = model(x, batch["cond"], batch.get("class_id"))
        return self.terms(x, out)

    @property
    def x_max(self) -> float:
        """Largest x of Eq. 5 (all energy in one voxel)."""
        return math.log(self.a + self.b) / self.c
