"""benchmarks/bench_training.py: the throughput arithmetic from a Trainer log, and a
smoke run of the whole command on the tiny Calo-VQ preset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_training"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_training", None)


def test_rate_and_loop_time_from_the_log(bench, tmp_path):
    # warm-up window of 3 steps at 10 showers/s, then 20 steps at 40 showers/s, batch 8
    records = [{"step": 3, "samples_per_s": 10.0, "loss": 1.0},
               {"step": 3, "val_loss": 2.0},
               {"step": 23, "samples_per_s": 40.0, "loss": 0.5}]
    (tmp_path / "gpt.log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rate, loop_s = bench._stage_rate(tmp_path, "gpt", batch=8, warmup=3)
    assert rate == 40.0
    assert loop_s == pytest.approx(3 * 8 / 10 + 20 * 8 / 40)


def test_smoke_run(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--presets", "calovq-ds2-tiny", "--devices", "cpu", "--showers", "300",
                       "--warmup", "1", "--steps", "2", "--threads", "1",
                       "--workdir", str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| calovq-ds2-tiny | cpu | vqvae |" in table
    assert "| calovq-ds2-tiny | cpu | gpt |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["vqvae", "gpt"]
    assert all(r["showers_per_s"] > 0 and r["startup_s"] >= 0 for r in rows)
    assert all(r["amp"] == "none" for r in rows)  # a CPU trains in float32
