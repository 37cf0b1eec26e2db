"""Logit with the affine regularisation of CaloDREAM Eq. 3 (not a clamp)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["Logit"]


@register_transform("logit")
class Logit(Transform):
    """``x_a = alpha + (1 - 2 alpha) x``, ``y = ln(x_a / (1 - x_a))`` for x in [0, 1].

    Inverse ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``, clipped to [0, 1] when ``clip``
    (docs/calodream.md, A4: negatives go to 0). Stateless.
    """

    def __init__(self, alpha: float = 1e-6, clip: bool = True) -> None:
        if not 0 <= alpha < 0.5:
            raise ConfigError(f"logit alpha must lie in [0, 0.5), got {alpha}")
        self.alpha, self.clip = float(alpha), bool(clip)

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "clip": self.clip}

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        xa = self.alpha + (1.0 - 2.0 * self.alpha) * x
        return torch.log(xa) - torch.log1p(-xa)

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        x = (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        return x.clamp(0.0, 1.0) if self.clip else x
