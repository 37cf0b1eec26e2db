"""Learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

__all__ = ["cosine_lr"]


def cosine_lr(
    step: int, *, base_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> float:
    """Learning rate for optimisation step ``step`` (0-based).

    Warm-up: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``; then a
    half cosine from ``base_lr`` to ``min_lr`` reached at ``max_steps``. A pure function
    of the step, so the schedule needs no state of its own to resume.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
