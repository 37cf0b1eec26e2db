"""Run by test_training_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Trains a one-optimizer stage (through DistributedDataParallel) and a two-optimizer GAN
stage (gradients all-reduced per optimizer), and records per rank what the test checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch
import torch.distributed as dist
from _training_toys import RegressionStage, ToyGANStage, regression_data

from caloforge.training import TensorDictDataset, Trainer, TrainerConfig


def _hash(modules) -> str:
    h = hashlib.sha256()
    for name, m in sorted(modules.items()):
        for k, v in sorted(m.state_dict().items()):
            h.update(f"{name}.{k}".encode() + v.numpy().tobytes())
    return h.hexdigest()


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # one group for both trainers
    rank = dist.get_rank()
    report = {}
    # Different initial weights per rank: training must start all ranks from rank 0's.
    stage = RegressionStage(seed=rank)
    cfg = TrainerConfig(
        max_steps=60,
        batch_size=16,
        lr=2e-2,
        log_every=20,
        val_every=30,
        checkpoint_every=30,
        ema_decay=0.9,
        seed=1,
        device="cpu",
    )
    tr = Trainer(
        stage,
        cfg,
        regression_data(256),
        regression_data(64, seed=1),
        out_dir=os.path.join(out_dir, "reg"),
        progress=False,
    )
    res = tr.fit()
    report["reg"] = {
        "weights": _hash(stage.modules()),
        "losses": [r["main"] for r in tr.history if "main" in r],
        "val_mse": res["val_mse"],
        "world": tr.dist.world_size,
        "ddp": tr._ddp is not None,
    }

    gan = ToyGANStage(seed=10 + rank, disc_start=2)
    x = 3.0 + 0.5 * torch.randn(256, 1, generator=torch.Generator().manual_seed(0))
    cfg = TrainerConfig(max_steps=20, batch_size=16, lr=1e-2, seed=2, device="cpu", log_every=10)
    tr = Trainer(
        gan, cfg, TensorDictDataset(x=x), out_dir=os.path.join(out_dir, "gan"), progress=False
    )
    tr.fit()
    report["gan"] = {"weights": _hash(gan.modules()), "ddp": tr._ddp is not None}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(report, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
