"""Datasets of tensors and a resumable, rank-sharded batch order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..errors import ConfigError

__all__ = ["ShardedBatchSampler", "TensorDictDataset", "collate_batch"]


class TensorDictDataset(Dataset):
    """Rows of equally long tensors as dict samples: ``ds[i] == {k: t[i] for k, t}``.

    Batched indexing (``__getitems__``, used by DataLoader) gathers a whole batch with
    one index operation per tensor instead of stacking single rows.

    Example:
        ``TensorDictDataset(showers=x, energy=e)`` with x (N, V) and e (N, 1).
    """

    def __init__(self, tensors: Mapping[str, Any] | None = None, **kw: Any) -> None:
        data = dict(tensors or {}, **kw)
        if not data:
            raise ValueError("TensorDictDataset needs at least one tensor")
        self.tensors = {
            k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            for k, v in data.items()
        }
        lengths = {k: len(v) for k, v in self.tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self._n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            for k, v in self.tensors.items()
        )
        return f"TensorDictDataset(n={self._n}; {parts})"


def collate_batch(items: Any) -> Any:
    """Collate: a batch already gathered by ``__getitems__`` passes as is."""
    if isinstance(items, Mapping):
        return items
    return default_collate(items)


class ShardedBatchSampler:
    """Infinite sequence of index batches, reproducible and resumable from any step.

    Epoch ``e`` uses the permutation ``numpy.random.default_rng([seed, e])``; each global
    batch of ``batch_size * world_size`` consecutive indices is split by rank. Incomplete
    global batches at the end of an epoch are dropped, so every rank takes the same number
    of steps. The state is (epoch, position) = divmod(step, batches_per_epoch): batch
    number ``step`` is the same whether or not training stopped and resumed in between.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size, self.shuffle = int(rank), int(world_size), shuffle
        self.start_step = int(start_step)
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"the training set has {n} samples, fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def state_at(self, step: int) -> tuple[int, int]:
        """(epoch, position within the epoch) of batch number ``step``."""
        return divmod(int(step), self.batches_per_epoch)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _epochs(self) -> Iterator[tuple[np.ndarray, range]]:
        """(permutation, starts of this rank's batches in it) per epoch, from start_step."""
        epoch, pos = self.state_at(self.start_step)
        g = self.batch_size * self.world_size
        while True:
            starts = range(pos * g + self.rank * self.batch_size, self.batches_per_epoch * g, g)
            yield self._order(epoch), starts
            epoch, pos = epoch + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        for order, starts in self._epochs():
            for start in starts:
                yield order[start : start + self.batch_size].tolist()

    def index_tensors(self, device: torch.device | str) -> Iterator[torch.Tensor]:
        """The batches of ``iter(self)`` as long tensors on ``device``.

        Each epoch's permutation is copied to the device once, so a training set resident
        on a GPU is indexed there without a host-to-device copy per step.
        """
        for order, starts in self._epochs():
            order_t = torch.as_tensor(order, dtype=torch.long).to(device)
            for start in starts:
                yield order_t[start : start + self.batch_size]
