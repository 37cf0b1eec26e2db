"""A 2-process gloo DDP run under torchrun trains and keeps the ranks in step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caloforge.training import load_checkpoint

HERE = Path(__file__).resolve().parent


def test_torchrun_two_processes_gloo(tmp_path):
    if shutil.which("torchrun") is None and not _has_module_runner():
        pytest.skip("torchrun not available")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "_ddp_train_script.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    g0 = json.loads((tmp_path / "rank0.json").read_text())
    g1 = json.loads((tmp_path / "rank1.json").read_text())
    r0, r1 = g0["reg"], g1["reg"]
    assert r0["world"] == r1["world"] == 2
    assert r0["ddp"] and not g0["gan"]["ddp"]  # one optimizer: DDP; two: per-optimizer all-reduce
    assert r0["weights"] == r1["weights"]  # averaged gradients keep the replicas identical
    assert g0["gan"]["weights"] == g1["gan"]["weights"]
    assert r0["val_mse"] == pytest.approx(r1["val_mse"])  # validation is reduced over ranks
    assert r0["losses"][-1] < 0.3 * r0["losses"][0]
    assert load_checkpoint(tmp_path / "gan").stage_info("gan")["step"] == 20
    tmp_path = tmp_path / "reg"
    ck = load_checkpoint(tmp_path)
    info = ck.stage_info("regressor")
    assert info["step"] == 60 and info["extra"]["world_size"] == 2
    assert (tmp_path / "regressor.trainer" / "state.json").exists()
    state = json.loads((tmp_path / "regressor.trainer" / "state.json").read_text())
    assert len(state["rng"]) == 2 and state["rng"][0] != state["rng"][1]


def _has_module_runner() -> bool:
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        return False
    return True
