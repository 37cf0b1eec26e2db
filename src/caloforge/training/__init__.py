"""Training machinery: Trainer, stage protocol, EMA, schedule, data order.

The checkpoint format lives in :mod:`caloforge.checkpoints`; its names are re-exported here
for the trainer's users.
"""

from ..checkpoints import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Checkpoint,
    data_fingerprint,
    load_checkpoint,
    load_trainer_state,
    provenance,
    save_checkpoint,
    save_trainer_state,
)
from .config import TrainerConfig
from .data import ShardedBatchSampler, TensorDictDataset, collate_batch
from .distributed import DistInfo, init_distributed, resolve_device
from .ema import EMA
from .schedule import SCHEDULES, cosine_lr, learning_rate
from .stage import TrainingStage

# The Trainer (and its optimisation loop) is imported on first use, so that loading a
# model for generation, which reads TrainerConfig in its stored config, never imports it.
_LAZY = {"Trainer": "trainer", "seed_everything": "trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "EMA",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Checkpoint",
    "DistInfo",
    "ShardedBatchSampler",
    "TensorDictDataset",
    "Trainer",
    "TrainerConfig",
    "TrainingStage",
    "collate_batch",
    "SCHEDULES",
    "cosine_lr",
    "learning_rate",
    "data_fingerprint",
    "init_distributed",
    "load_checkpoint",
    "load_trainer_state",
    "provenance",
    "resolve_device",
    "save_checkpoint",
    "save_trainer_state",
    "seed_everything",
]
