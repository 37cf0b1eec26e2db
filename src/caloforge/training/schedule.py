"""Learning-rate schedules by name: warm-up + cosine decay, one-cycle, constant.

Each is a pure function of the step, so a resumed run needs no schedule state.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "constant_lr", "cosine_lr", "learning_rate", "onecycle_lr"]


def cosine_lr(
    step: int, *, base_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> float:
    """Learning rate for optimisation step ``step`` (0-based).

    Warm-up: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``; then a
    half cosine from ``base_lr`` to ``min_lr`` reached at ``max_steps``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def onecycle_lr(
    step: int, *, base_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> float:
    """One-cycle: cosine rise from ``base_lr / 25`` to ``base_lr`` over the warm-up (30 %
    of the steps when ``warmup_steps`` is 0), then cosine annealing to ``min_lr`` (or
    ``base_lr / 1e4`` when 0), the shape of the usual one-cycle policy."""
    rise = warmup_steps or max(1, int(0.3 * max_steps))
    start, end = base_lr / 25.0, (min_lr or base_lr / 1e4)
    if step < rise:
        return start + 0.5 * (base_lr - start) * (1.0 - math.cos(math.pi * step / rise))
    progress = min(1.0, (step - rise) / max(1, max_steps - rise))
    return end + 0.5 * (base_lr - end) * (1.0 + math.cos(math.pi * progress))


def constant_lr(
    step: int, *, base_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> float:
    """``base_lr`` after an optional linear warm-up."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr


#: schedule name -> function (the ``schedule`` field of ``TrainerConfig``)
SCHEDULES = {"cosine": cosine_lr, "onecycle": onecycle_lr, "constant": constant_lr}


def learning_rate(name: str, step: int, **kw: float) -> float:
    """The named schedule's learning rate at ``step``."""
    return SCHEDULES[name](step, **kw)
