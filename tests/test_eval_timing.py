"""The timing harness on generators of known cost."""

import json
import time

import numpy as np
import pytest
import torch

from caloforge.errors import CaloforgeError
from caloforge.evaluation.timing import (
    TimingResult,
    machine_description,
    time_callable,
    time_generator,
)

OVERHEAD_S = 0.01  # fixed cost per call
PER_SHOWER_S = 2e-5  # cost per shower


def sleepy(e: torch.Tensor) -> torch.Tensor:
    """Costs OVERHEAD_S + PER_SHOWER_S * batch: per-shower time falls like 1/batch."""
    time.sleep(OVERHEAD_S + PER_SHOWER_S * len(e))
    return torch.zeros(len(e), 3)


def test_per_shower_time_scales_with_batch(tmp_path):
    path = tmp_path / "timing.json"
    res = time_generator(sleepy, batch_sizes=(1, 100, 1000), thread_counts=(1,),
                         devices=["cpu"], n_repeats=3, reference=0.5, json_path=path)
    t = {r.batch_size: r.median_s_per_shower for r in res.rows}
    for b, per in t.items():
        expect = OVERHEAD_S / b + PER_SHOWER_S
        # sleep() never returns early; scheduling may add a little.
        assert expect <= per < expect * 1.5 + 2e-3 / b, (b, per, expect)
    assert t[1] > 10 * t[100] > 10 * t[1000] * 0.5
    row = res.row("cpu", 1, 100)
    assert row.n_repeats == 3
    assert row.speedup == pytest.approx(0.5 / row.median_s_per_shower)
    # JSON written, with the machine description, and read back identically.
    d = json.loads(path.read_text())
    assert d["machine"]["cpu_count"] >= 1 and d["machine"]["torch"] == torch.__version__
    assert d["reference_s_per_shower"] == 0.5 and len(d["rows"]) == 3
    back = TimingResult.from_json(path)
    assert back.rows == res.rows and back.machine == res.machine
    table = res.to_table()
    assert "ms/shower" in table and len(table.splitlines()) == 3 + 3 + 1


def test_reference_callable_is_timed_on_one_thread():
    seen = []

    def reference(e: np.ndarray) -> np.ndarray:
        seen.append((type(e), torch.get_num_threads()))
        time.sleep(1e-3 * len(e))  # 1 ms per shower
        return np.zeros((len(e), 3))

    res = time_generator(sleepy, batch_sizes=(10,), thread_counts=(1,), devices=["cpu"],
                         n_repeats=2, reference=reference, reference_batch_size=20)
    assert all(kind is np.ndarray and threads == 1 for kind, threads in seen)
    assert 1e-3 <= res.reference_s_per_shower < 1.5e-3
    assert "1 CPU thread" in res.reference


def test_threads_are_set_and_restored():
    before = torch.get_num_threads()
    seen = {}

    def gen(e):
        seen.setdefault(torch.get_num_threads(), 0)
        seen[torch.get_num_threads()] += 1
        assert isinstance(e, torch.Tensor) and e.dtype == torch.float32 and e.ndim == 1
        return e

    counts = sorted({1, 2})
    res = time_generator(gen, batch_sizes=(1, 4), thread_counts=counts, devices=["cpu"],
                         n_repeats=2, n_warmup=1)
    assert set(seen) == set(counts)
    assert [(r.threads, r.batch_size) for r in res.rows] == [(t, b) for t in counts for b in (1, 4)]
    assert torch.get_num_threads() == before


def test_numpy_generator_and_energy_range():
    got = []

    def gen(e):
        got.append(e)
        return e

    time_generator(gen, batch_sizes=(500,), thread_counts=(1,), input_kind="numpy",
                   energy_range=(1000.0, 2000.0), n_repeats=1, n_warmup=0)
    e = got[0]
    assert isinstance(e, np.ndarray) and e.shape == (500,)
    assert e.min() >= 1000.0 and e.max() <= 2000.0


def test_time_budget_stops_repeats():
    times = time_callable(lambda x: time.sleep(0.02), lambda n: None, 1, n_warmup=0,
                          n_repeats=100, max_seconds=0.05)
    assert 1 <= len(times) <= 4


def test_machine_description_fields():
    m = machine_description()
    for key in ("cpu_model", "cpu_count", "memory_gib", "gpu", "torch", "numpy", "platform"):
        assert key in m
    assert m["numpy"] == np.__version__
    assert (m["gpu"] is not None) == torch.cuda.is_available()


def test_errors():
    with pytest.raises(CaloforgeError, match="batch"):
        time_generator(sleepy, batch_sizes=(0,))
    with pytest.raises(CaloforgeError, match="numpy generator"):
        time_generator(sleepy, input_kind="numpy", devices=["cuda"])
    with pytest.raises(CaloforgeError, match="failed"):
        time_generator(lambda e: 1 / 0, batch_sizes=(1,), thread_counts=(1,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_rows():
    def gen(e):
        assert e.is_cuda
        return torch.randn(len(e), 1000, device=e.device) @ torch.randn(1000, 100, device=e.device)

    res = time_generator(gen, batch_sizes=(1, 100), thread_counts=(1,), n_repeats=3)
    cuda_rows = [r for r in res.rows if r.device == "cuda"]
    assert len(cuda_rows) == 2 and all(r.threads is None for r in cuda_rows)
    assert res.machine["gpu"]
