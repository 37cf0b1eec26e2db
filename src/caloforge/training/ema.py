"""Exponential moving average of a module's weights, with an optional warm-up of the decay."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["EMA"]


class EMA:
    """Shadow copy ``s <- decay * s + (1 - decay) * p`` of every parameter.

    Buffers (e.g. normalisation statistics) are copied, not averaged. The shadow starts
    as a copy of the weights at construction. After k updates with constant weights p,
    ``s = p + (s0 - p) * decay**k``.

    Warm-up (``warmup_power`` set; CaloClouds II's diffusion EMA, docs/caloclouds.md, A13):
    update number k = 0, 1, ... uses

        decay_k = min(decay, 1 - (1 + k / inv_gamma) ** -warmup_power),

    with ``decay`` the maximum, so the shadow follows the weights closely early on and
    averages over ever longer windows later (power 2/3, inv_gamma 1, max 0.9999: 0 at the
    first update, 0.9 after 31, the maximum after about 10^6). Without ``warmup_power`` the
    decay is constant, as it always was. The update count ``num_updates`` is not part of
    ``state_dict`` (which holds only the averaged tensors); a caller that resumes a run
    sets it back, e.g. ``ema.num_updates = step``.
    """

    def __init__(self, module: torch.nn.Module, decay: float, *,
                 warmup_power: float | None = None, inv_gamma: float = 1.0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if warmup_power is not None and not warmup_power > 0:
            raise ValueError(f"EMA warmup_power must be > 0 (or None), got {warmup_power}")
        if not inv_gamma > 0:
            raise ValueError(f"EMA inv_gamma must be > 0, got {inv_gamma}")
        self.module, self.decay = module, float(decay)
        self.warmup_power = None if warmup_power is None else float(warmup_power)
        self.inv_gamma = float(inv_gamma)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }
        self._params = {k for k, _ in module.named_parameters()}

    def decay_at(self, k: int) -> float:
        """The decay used by update number k (0-based): constant, or the warm-up value."""
        if self.warmup_power is None:
            return self.decay
        warm = 1.0 - (1.0 + k / self.inv_gamma) ** -self.warmup_power
        return min(self.decay, max(0.0, warm))

    @property
    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        return self.decay_at(self.num_updates)

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow one step toward the current weights."""
        decay = self.current_decay
        for k, v in self.module.state_dict().items():
            s = self.shadow[k]
            if k in self._params and s.is_floating_point():
                s.lerp_(v.detach(), 1.0 - decay)
            else:
                s.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)}")
        for k, s in self.shadow.items():
            s.copy_(state[k])

    @contextlib.contextmanager
    def swapped(self) -> Iterator[torch.nn.Module]:
        """Temporarily load the EMA weights into the module (for validation / saving)."""
        backup = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.shadow)
        try:
            yield self.module
        finally:
            self.module.load_state_dict(backup)
