"""Training machinery: Trainer, stage protocol, EMA, schedule, data order, checkpoints."""

from .checkpoint import (
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
from .schedule import cosine_lr
from .stage import TrainingStage
from .trainer import Trainer, seed_everything

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
    "cosine_lr",
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
