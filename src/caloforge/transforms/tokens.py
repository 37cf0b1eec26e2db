"""Digit tokenisation of continuous values (Calo-VQ §5.1, docs/calovq.md, A4).

A value is mapped into a range fitted on the training set, quantised uniformly into
``base ** n_digits`` levels (default 1024**2 = 2**20, "20 bit") and written as
``n_digits`` base-``base`` digits, most significant first. Several values per row (e.g.
one R per layer) give their digit groups in feature order:
``[v0_d0, v0_d1, v1_d0, v1_d1, ...]``.

``mapping="linear"`` quantises the value itself (the paper-compatible reading);
``mapping="log"`` quantises ln(v + eps), which keeps the relative error small for tiny
layer fractions (a recorded deviation, docs/calovq.md, A4). Values outside the fitted range are
clipped to it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Transform, register_transform

__all__ = ["DigitTokenizer"]


@register_transform("digit_tokenizer")
class DigitTokenizer(Transform):
    """Continuous values (N, F) <-> integer tokens (N, F * n_digits) in [0, base).

    Args:
        n_digits: digits per value.
        base: token vocabulary used by the digits (the shared 1024-entry codebook).
        mapping: ``"linear"`` or ``"log"`` (quantise ln(v + log_eps)).
        log_eps: offset of the log mapping; values <= 0 map to the bottom of the range.
        per_feature: one fitted range per column (True) or one for all columns.
        margin: widen the fitted range by this fraction of its span on each side, so
            slightly larger values at generation time are not clipped.
    """

    stat_names = ("low", "high")

    def __init__(
        self,
        n_digits: int = 2,
        base: int = 1024,
        mapping: str = "linear",
        log_eps: float = 1e-8,
        per_feature: bool = True,
        margin: float = 0.0,
    ) -> None:
        if mapping not in ("linear", "log"):
            raise ConfigError(f"tokeniser mapping must be 'linear' or 'log', got {mapping!r}")
        if n_digits < 1 or base < 2:
            raise ConfigError(f"need n_digits >= 1 and base >= 2, got {n_digits}, {base}")
        if base**n_digits > 2**53:
            raise ConfigError("base ** n_digits exceeds the exact float64 integer range")
        self.n_digits, self.base, self.mapping = int(n_digits), int(base), mapping
        self.log_eps, self.per_feature, self.margin = (
            float(log_eps),
            bool(per_feature),
            float(margin),
        )
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {
            "n_digits": self.n_digits,
            "base": self.base,
            "mapping": self.mapping,
            "log_eps": self.log_eps,
            "per_feature": self.per_feature,
            "margin": self.margin,
        }

    @property
    def n_levels(self) -> int:
        return self.base**self.n_digits

    def _to_z(self, v: torch.Tensor) -> torch.Tensor:
        v = v.to(torch.float64)  # 2**20 levels need more than float32's 24-bit mantissa near 1
        if self.mapping == "log":
            return torch.log(v.clamp_min(0.0) + self.log_eps)
        return v

    def _from_z(self, z: torch.Tensor) -> torch.Tensor:
        if self.mapping == "log":
            return (torch.exp(z) - self.log_eps).clamp_min(0.0)
        return z

    @staticmethod
    def _as_2d(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, 1) if v.ndim == 1 else v

    def fit(self, x: Any, **cond: Any) -> DigitTokenizer:
        """Fit the range on training values, shape (N,) or (N, F)."""
        z = self._to_z(self._as_2d(torch.as_tensor(x)))
        if self.per_feature:
            low, high = z.amin(0), z.amax(0)
        else:
            low, high = z.min().reshape(1), z.max().reshape(1)
        pad = (high - low) * self.margin
        self.low, self.high = (low - pad).cpu(), (high + pad).cpu()
        return self

    def _span(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self._stat("low", like), self._stat("high", like)
        span = torch.where(high > low, high - low, torch.ones_like(high))
        return low, span

    def encode(self, values: Any) -> torch.Tensor:
        """Values (N,) or (N, F) -> LongTensor tokens (N, F * n_digits), MSB first."""
        return self.forward(values)

    def decode(self, tokens: Any) -> torch.Tensor:
        """Tokens (N, F * n_digits) -> values (N, F) as float64."""
        return self.inverse(tokens)

    def _forward(self, x: torch.Tensor, **cond: Any) -> torch.Tensor:
        z = self._to_z(self._as_2d(x))
        low, span = self._span(z)
        if low.numel() not in (1, z.shape[-1]):
            raise ValueError(f"tokeniser fitted on {low.numel()} features, got {z.shape[-1]}")
        level = torch.round((z - low) / span * (self.n_levels - 1))
        level = level.clamp(0, self.n_levels - 1).to(torch.long)
        powers = self.base ** torch.arange(self.n_digits - 1, -1, -1, device=z.device)
        digits = (level.unsqueeze(-1) // powers) % self.base  # (N, F, n_digits)
        return digits.reshape(z.shape[0], -1)

    def _inverse(self, y: torch.Tensor, **cond: Any) -> torch.Tensor:
        tokens = y.to(torch.long)
        if tokens.shape[-1] % self.n_digits:
            raise ValueError(
                f"token rows of length {tokens.shape[-1]} are not a multiple of {self.n_digits}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.base):
            raise ValueError(f"tokens must lie in [0, {self.base})")
        digits = tokens.reshape(tokens.shape[0], -1, self.n_digits)
        powers = self.base ** torch.arange(self.n_digits - 1, -1, -1, device=tokens.device)
        level = (digits * powers).sum(-1).to(torch.float64)
        low, span = self._span(level)
        return self._from_z(low + level / (self.n_levels - 1) * span)
