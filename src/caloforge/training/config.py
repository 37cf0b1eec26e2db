"""Trainer configuration."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..configs.schema import SPEED_SETTING
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
    #: optimiser by name: "adamw" (decoupled weight decay), "adam", "adamax"
    optimizer: Literal["adamw", "adam", "adamax"] = "adamw"
    #: learning-rate schedule by name: "cosine" (warm-up + cosine), "onecycle", "constant"
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
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
    #: mixed precision on CUDA: "auto" = bf16 where the GPU supports it, else none; on a
    #: CPU every setting trains in float32
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    #: keep a tensor training set on the training device and gather batches there (no
    #: DataLoader, no host-to-device copy per step): "auto" = when it is a tensor dataset,
    #: ``num_workers`` is 0 and it takes under a quarter of the device's free memory
    data_on_device: Literal["auto", "always", "never"] = dataclasses.field(
        default="auto", metadata=SPEED_SETTING)
    #: compile the training step with ``torch.compile`` (first steps slower; CUDA gains most)
    compile: bool = dataclasses.field(default=False, metadata=SPEED_SETTING)
    #: fused optimizer kernels (Adam, AdamW) on CUDA: "auto" = on CUDA, never on a CPU
    fused: Literal["auto", "never"] = dataclasses.field(default="auto", metadata=SPEED_SETTING)
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
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1) (0 = off)"),
            (self.amp in ("auto", "none", "bf16", "fp16"),
             f"amp must be auto, none, bf16 or fp16, got {self.amp!r}"),
            (self.data_on_device in ("auto", "always", "never"),
             f"data_on_device must be auto, always or never, got {self.data_on_device!r}"),
            (isinstance(self.compile, bool), "compile must be true or false"),
            (self.fused in ("auto", "never"), f"fused must be auto or never, got {self.fused!r}"),
            (self.optimizer in ("adamw", "adam", "adamax"),
             f"optimizer must be adamw, adam or adamax, got {self.optimizer!r}"),
            (self.schedule in ("cosine", "onecycle", "constant"),
             f"schedule must be cosine, onecycle or constant, got {self.schedule!r}"),
            (self.eps > 0, "eps must be > 0"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")
             or self.device == "mps",
             f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}"),
            (
                self.log_every >= 0 and self.val_every >= 0 and self.checkpoint_every >= 0,
                "log_every, val_every and checkpoint_every must be >= 0",
            ),
            (self.val_batches >= 0, "val_batches must be >= 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
        ]
        if self.warmup_steps < 0:
            checks.append((False, "warmup_steps must be >= 0"))
        # a short run (e.g. --set stage.max_steps=50 on a preset with 500 warm-up steps)
        # keeps a proportionate warm-up instead of failing on an internal check
        if self.warmup_steps > self.max_steps:
            self.warmup_steps = self.max_steps // 10
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"TrainerConfig: {msg}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
