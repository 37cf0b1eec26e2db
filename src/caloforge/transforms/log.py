"""The Calo-VQ log transform x = ln(a + b f) / c of normalised energies f (Eq. 5)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["LogTransform"]


@register_transform("log")
class LogTransform(Transform):
    """``x = ln(a + b f) / c``; inverse ``f = (exp(c x) - a) / b``. Stateless.

    With a = 1 an empty voxel (f = 0) maps to x = 0 (docs/calovq.md, A15). Paper values: ds1
    (1, 8000, 10), ds2 (1, 3000, 7), ds3 (1, 40000, 10).
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 1.0) -> None:
        if a <= 0 or b <= 0 or c == 0:
            raise ConfigError(f"log transform needs a > 0, b > 0, c != 0; got a={a}, b={b}, c={c}")
        self.a, self.b, self.c = float(a), float(b), float(c)

    def config(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c}

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        return torch.log(self.a + self.b * x) / self.c

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        return (torch.exp(self.c * y) - self.a) / self.b
