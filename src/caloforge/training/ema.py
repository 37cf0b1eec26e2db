"""Exponential moving average of a module's weights."""

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
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.module, self.decay = module, float(decay)
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }
        self._params = {k for k, _ in module.named_parameters()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow one step toward the current weights."""
        for k, v in self.module.state_dict().items():
            s = self.shadow[k]
            if k in self._params and s.is_floating_point():
                s.lerp_(v.detach(), 1.0 - self.decay)
            else:
                s.copy_(v)

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
