"""Fitted affine scalings: standardisation and min-max, per feature or global."""

from __future__ import annotations

from typing import Any

import torch

from .base import Transform, register_transform

__all__ = ["MinMaxScale", "Standardize"]


def _reduce_dims(x: torch.Tensor, per_feature: bool) -> tuple[int, ...]:
    # Per feature: statistics over the batch axis only, one per position of x.shape[1:].
    return (0,) if per_feature else tuple(range(x.ndim))


@register_transform("standardize")
class Standardize(Transform):
    """``y = (x - mean) / std`` with training-set statistics.

    Per feature (default) the statistics have shape ``x.shape[1:]``. A feature with zero
    spread keeps std = 1, so it maps to 0 as in CaloScore v2.
    """

    stat_names = ("mean", "std")

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = bool(per_feature)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"per_feature": self.per_feature}

    def fit(self, x: Any, **cond: Any) -> Standardize:
        x = torch.as_tensor(x).to(torch.float64)
        dims = _reduce_dims(x, self.per_feature)
        self.mean = x.mean(dims).cpu()
        std = x.std(dims, unbiased=False).cpu()
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        return self

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        return (x - self._stat("mean", x)) / self._stat("std", x)

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        return y * self._stat("std", y) + self._stat("mean", y)


@register_transform("minmax")
class MinMaxScale(Transform):
    """``y = (x - min) / (max - min)`` into [0, 1] on the training range.

    A constant feature keeps a span of 1 (it maps to 0), as in CaloScore v2.
    """

    stat_names = ("low", "span")

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = bool(per_feature)
        self.low: torch.Tensor | None = None
        self.span: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"per_feature": self.per_feature}

    def fit(self, x: Any, **cond: Any) -> MinMaxScale:
        x = torch.as_tensor(x).to(torch.float64)
        dims = _reduce_dims(x, self.per_feature)
        low = x.amin(dims).cpu()
        span = x.amax(dims).cpu() - low
        self.low, self.span = low, torch.where(span > 0, span, torch.ones_like(span))
        return self

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        return (x - self._stat("low", x)) / self._stat("span", x)

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        return y * self._stat("span", y) + self._stat("low", y)
