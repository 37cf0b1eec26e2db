"""benchmarks/bench_calolatent.py: the timing arithmetic, the target logic, the rows per
part and sampler, and a smoke run of ``run`` / ``format_table`` / the JSON on a micro
CaloLatent model with random weights."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError
from caloforge.pipelines.calolatent import micro_overrides

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_calolatent.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_calolatent", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_calolatent"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_calolatent", None)


@pytest.fixture(scope="module")
def micro(bench):
    cfg = override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides())
    model = bench.random_model(cfg, seed=0)
    return bench.BenchModel("tiny", "micro", model, "micro preset, random weights", False)


def _settings(bench, **kw):
    base = dict(tiny_batches=(2,), samplers=("em-4", "rk4-2"), repeats=2, threads=1,
                reference_showers=2, reference_runs=1, paper=False, gpu=False)
    base.update(kw)
    return bench.BenchSettings(**base)


def test_time_call_counts_calls_and_keeps_long_warmups(bench):
    calls = []

    def fn(dt=0.02):
        calls.append(1)
        time.sleep(dt)

    t = bench.time_call(fn, lambda: None, repeats=3, max_seconds=10.0, long_call_s=5.0)
    assert (t.runs, len(calls), t.kept_warmup) == (3, 4, False)  # warm-up + 3 timed
    assert 0.02 <= t.wall_s < 0.5 and t.cpu_s < t.wall_s  # sleeping costs no CPU
    calls.clear()
    t = bench.time_call(fn, lambda: None, repeats=3, max_seconds=10.0, long_call_s=0.01)
    assert (t.runs, len(calls), t.kept_warmup) == (1, 1, True)  # the warm-up is the figure
    assert t.wall_s >= 0.02
    calls.clear()
    t = bench.time_call(fn, lambda: None, repeats=5, max_seconds=0.001, long_call_s=5.0)
    assert (t.runs, len(calls)) == (1, 2)  # the budget stops after one timed call


def _rows(ms_by_sampler, batch=1000, role="tiny", device="cpu"):
    return [{"role": role, "device": device, "batch": batch, "part": "total", "sampler": s,
             "ms": ms} for s, ms in ms_by_sampler.items()]


def test_target_needs_time_and_fidelity_measured(bench):
    rows = _rows({"heun-10": 1.5, "rk4-10": 3.0})
    fid = {"delta_vs_em200": {"heun-10": 0.03, "rk4-10": 0.01, "em-200": 0.0}}
    t = bench.target_status(rows, fid, trained=True, samplers=("heun-10", "rk4-10"))
    assert t["samplers"]["heun-10"]["time"] == "met"
    assert t["samplers"]["heun-10"]["fidelity"] == "MISSED"  # 0.03 > 0.02
    assert t["samplers"]["rk4-10"]["time"] == "MISSED"
    assert t["samplers"]["rk4-10"]["fidelity"] == "met"
    assert t["status"] == "MISSED"  # neither sampler meets both
    fid["delta_vs_em200"]["heun-10"] = -0.01  # better than em-200 counts as within
    assert bench.target_status(rows, fid, trained=True,
                               samplers=("heun-10", "rk4-10"))["status"] == "met"
    # 2 ms is "under 2 ms": equal misses
    assert bench.target_status(_rows({"heun-10": 2.0}), fid, trained=True,
                               samplers=("heun-10",))["samplers"]["heun-10"]["time"] == "MISSED"
    # time met, fidelity not measured: not judged, never "met"
    t = bench.target_status(rows, None, trained=True, samplers=("heun-10",))
    assert (t["samplers"]["heun-10"]["fidelity"], t["status"]) == ("not measured", "not judged")
    t = bench.target_status(rows, fid, trained=False, samplers=("heun-10",))
    assert t["samplers"]["heun-10"]["fidelity"].startswith("not judged")
    assert t["status"] == "not judged"
    # the wrong cell (batch 100, or the paper-size model) is not the target's
    for other in (_rows({"heun-10": 1.0}, batch=100), _rows({"heun-10": 1.0}, role="paper")):
        t = bench.target_status(other, fid, trained=True, samplers=("heun-10",))
        assert t["samplers"]["heun-10"]["time"] == "not measured"


def test_settings_and_energies(bench):
    with pytest.raises(ConfigError, match="repeats"):
        bench.BenchSettings(repeats=0)
    with pytest.raises(ConfigError, match="tiny_batches"):
        bench.BenchSettings(tiny_batches=(0,))
    with pytest.raises(ConfigError, match="sampler"):
        bench.BenchSettings(samplers=("rk5-3",))
    with pytest.raises(ConfigError, match="fidelity"):
        bench.BenchSettings(fidelity_showers=-1)
    with pytest.raises(SystemExit):  # one-line argparse error, exit status 2
        bench.main(["--samplers", "bogus-3"])
    assert bench.BenchSettings().samplers[0] == "em-200"
    e = bench.log_uniform_energies(2000, seed=3)
    assert e.dtype == torch.float64 and 1e3 <= float(e.min()) and float(e.max()) <= 1e6
    # log-uniform: the median of log E sits at the middle of [ln 1 GeV, ln 1 TeV]
    assert float(e.log().median()) == pytest.approx((6.9078 + 13.8155) / 2, abs=0.3)
    torch.testing.assert_close(e[:5], bench.log_uniform_energies(5, seed=3))  # shared prefix


def test_placeholder_statistics_have_the_ds2_shapes(bench):
    t = bench.placeholder_transforms(get_preset("calolatent-ds2-tiny"))
    assert t.u_minmax.low.shape == t.u_standardize.mean.shape == (45,)
    assert t.f_minmax.span.shape == t.f_standardize.std.shape == (6480,)
    f, soft = t.decode_voxels(torch.zeros(2, 6480))
    assert f.shape == (2, 6480) and bool((f >= 0).all()) and bool((soft > 0).all())


def test_time_model_rows_per_part_and_sampler(bench, micro):
    rows = bench.time_model(micro, torch.device("cpu"), [2], _settings(bench))
    got = [(r["part"], r["sampler"], r["nfe"]) for r in rows]
    # the decoder ignores the sampler: timed once per batch; NFE = steps x calls per step
    assert got == [("layer", "em-4", 4), ("latent", "em-4", 4), ("decoder", "any", 1),
                   ("total", "em-4", 9), ("layer", "rk4-2", 8), ("latent", "rk4-2", 8),
                   ("total", "rk4-2", 17)]
    for r in rows:
        assert r["batch"] == 2 and r["status"] == "ok" and 1 <= r["runs"] <= 2
        assert r["ms"] > 0 and r["threads"] == torch.get_num_threads()


def test_out_of_memory_only_caught_on_a_gpu(bench):
    oom = RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert bench._raise_unless_oom(oom, torch.device("cuda")) is True
    with pytest.raises(RuntimeError, match="out of memory"):  # never hidden on the CPU
        bench._raise_unless_oom(oom, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="shape"):
        bench._raise_unless_oom(RuntimeError("shape mismatch"), torch.device("cuda"))


def test_run_table_and_json(bench, micro, tmp_path):
    result = bench.run(_settings(bench), models=[micro], log=lambda msg: None)
    ref = result["reference"]
    assert ref["ms"] > 0 and ref["showers_per_run"] == 2
    for r in result["rows"]:  # speed-up = reference time / model time
        assert r["speedup"] == pytest.approx(ref["ms"] / r["ms"])
    # random weights and no batch-1000 cell: the target cannot be judged
    assert result["target"]["status"] == "not judged"
    assert set(result["target"]["samplers"]) == {"em-4", "rk4-2"}
    text = bench.format_table(result)
    assert "| micro | cpu | 2 | decoder | any | 1 |" in text
    assert "| micro | cpu | 2 | total | rk4-2 | 17 |" in text
    assert "fidelity: not measured" in text and "paper-size model not timed" in text
    path = tmp_path / "bench.json"
    bench.write_json(result, path)
    back = json.loads(path.read_text())
    assert len(back["rows"]) == 7 and back["settings"]["samplers"] == ["em-4", "rk4-2"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary


def test_fidelity_runs_and_deltas_are_against_em200(bench, micro, monkeypatch):
    fid = bench.measure_fidelity(micro, ["em-4", "em-2"], 24, epochs=1, min_per_class=10)
    assert set(fid["auc"]) == {"em-4", "em-2"} and fid["showers"] == 24
    assert all(0.0 <= a <= 1.0 for a in fid["auc"].values())
    assert fid["delta_vs_em200"] == {"em-4": None, "em-2": None}  # no em-200 baseline
    # known AUCs (one classifier per sampler, in order): delta = AUC - AUC(em-200)
    import caloforge.evaluation as ev

    aucs = iter([0.60, 0.63, 0.59])
    seen = []

    def fake_classifier(x_ref, x_gen, **kw):
        seen.append((x_ref.shape, x_gen.shape))
        return type("R", (), {"auc": next(aucs)})()

    monkeypatch.setattr(ev, "classifier_test", fake_classifier)
    fid = bench.measure_fidelity(micro, ["em-200", "em-4", "em-2"], 12)
    assert fid["auc"] == {"em-200": 0.60, "em-4": 0.63, "em-2": 0.59}
    assert fid["delta_vs_em200"] == pytest.approx({"em-200": 0.0, "em-4": 0.03, "em-2": -0.01})
    assert seen == [((12, 6481), (12, 6481))] * 3  # [log10 E, 6480 voxels / E] per shower
