"""Trainer configuration."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import ConfigError

__all__ = ["TrainerConfig"]


@dataclasses.dataclass
class TrainerConfig:
    """Optimisation and bookkeeping settings of one training stage.

    ``batch_size`` is per process: under torchrun with W processes a step sees
    ``W * batch_size`` samples. Intervals of 0 switch the action off (checkpoints are
    still written at the end when the trainer has an output directory).
    """

    max_steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    #: Learning rate per optimizer name, replacing ``lr`` for that optimizer (e.g. a
    #: discriminator with its own rate); the schedule scales it the same way.
    group_lr: dict[str, float] = dataclasses.field(default_factory=dict)
    min_lr: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    amp: Literal["none", "bf16", "fp16"] = "none"
    log_every: int = 50
    val_every: int = 0
    #: Validation batches per evaluation; 0 = the whole validation set.
    val_batches: int = 0
    checkpoint_every: int = 0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (all(v > 0 for v in self.group_lr.values()), "group_lr values must be > 0"),
            (0 <= self.min_lr <= self.lr, "min_lr must lie in [0, lr]"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (all(0 <= b < 1 for b in self.betas), "betas must lie in [0, 1)"),
            (0 <= self.warmup_steps <= self.max_steps, "warmup_steps must lie in [0, max_steps]"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1) (0 = off)"),
            (self.amp in ("none", "bf16", "fp16"), "amp must be none, bf16 or fp16"),
            (
                self.log_every >= 0 and self.val_every >= 0 and self.checkpoint_every >= 0,
                "log_every, val_every and checkpoint_every must be >= 0",
            ),
            (self.val_batches >= 0, "val_batches must be >= 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"TrainerConfig: {msg}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
