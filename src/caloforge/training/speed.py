"""Choices that make a training step fast on its device, without changing what it computes.

Precision (``amp``), where the training set lives (``data_on_device``), fused optimizer
kernels (``fused``) and compilation (``compile``) are resolved here from the
:class:`TrainerConfig` and the device, so the Trainer's loop stays one code path. On a
CPU every choice keeps float32 arithmetic and the batch order of the DataLoader path, so
a CPU run is the same with any setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .config import TrainerConfig
from .data import ShardedBatchSampler, TensorDictDataset

__all__ = ["effective_amp", "fused_options", "resident_batches", "wants_resident_data"]

#: share of the device's free memory a resident training set may take ("auto")
RESIDENT_SHARE = 0.25


def effective_amp(amp: str, device: torch.device) -> str:
    """The precision a run actually uses: ``"none"``, ``"bf16"`` or ``"fp16"``.

    Autocast is applied on CUDA only; ``"auto"`` takes bf16 where the GPU supports it
    (no loss scaling needed) and float32 elsewhere.
    """
    if device.type != "cuda" or amp == "none":
        return "none"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return amp


def fused_options(config: TrainerConfig, device: torch.device) -> dict[str, Any]:
    """Keyword arguments selecting fused optimizer kernels where they exist.

    torch has fused Adam and AdamW kernels for CUDA (one kernel for all parameters instead
    of several per tensor); Adamax has none, and on a CPU the default ``foreach`` path is
    kept.
    """
    if config.fused == "never" or device.type != "cuda" or config.optimizer == "adamax":
        return {}
    return {"fused": True}


def _nbytes(dataset: TensorDictDataset) -> int:
    return sum(t.numel() * t.element_size() for t in dataset.tensors.values())


def wants_resident_data(config: TrainerConfig, dataset: Dataset, device: torch.device) -> bool:
    """Whether the training set is gathered on ``device`` instead of by a DataLoader."""
    tensor_set = isinstance(dataset, TensorDictDataset)
    if config.data_on_device == "never":
        return False
    if config.data_on_device == "always":
        if not tensor_set:
            raise ConfigError(
                f"data_on_device='always' needs a tensor training set (TensorDictDataset); "
                f"this stage gives a {type(dataset).__name__}"
            )
        return True
    if not tensor_set or config.num_workers > 0:
        return False
    if device.type == "cpu":
        return True  # already in memory: skip the DataLoader's per-batch overhead
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return _nbytes(dataset) < RESIDENT_SHARE * free
    return False


def resident_batches(
    dataset: TensorDictDataset, sampler: ShardedBatchSampler, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The DataLoader's batches (same order, same rows), gathered on ``device``.

    The tensors are copied to the device once; each step indexes them with an index
    tensor already there, so no host-device transfer or synchronisation happens per step.
    """
    tensors = {k: v.to(device) for k, v in dataset.tensors.items()}
    for idx in sampler.index_tensors(device):
        yield {k: v[idx] for k, v in tensors.items()}
