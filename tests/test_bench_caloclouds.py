"""benchmarks/bench_caloclouds.py: the timing arithmetic, the borrowed Shower Flow, the
split into parts, and a smoke run of the command on a micro model with random weights."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError
from caloforge.models import build_model
from caloforge.pipelines.caloclouds import CaloClouds2, micro_overrides
from caloforge.pipelines.caloclouds import model as cc_model
from caloforge.pipelines.caloclouds.radial_map import RadialMap

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_caloclouds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_caloclouds", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_caloclouds"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_caloclouds", None)


def _micro_model(seed: int = 0) -> CaloClouds2:
    cfg = override_config(get_preset("caloclouds2-ild-tiny"), overrides=micro_overrides())
    torch.manual_seed(seed)
    pw = build_model("pointwise_net", cfg.pointwise)
    g = cfg.planar_geometry()
    # an identity radial map (equal knots on both sides), so that borrowing can be checked
    knots = torch.arange(4.0).repeat(g.n_layers, 1, 1)
    radial = {"distilled": RadialMap(torch.zeros(0), knots, knots)}
    return CaloClouds2(cfg, g, build_model("shower_flow", cfg.shower_flow), pw,
                       copy.deepcopy(pw), radial_maps=radial).eval()


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_cc") / "micro"
    _micro_model().save(path)
    return path


def test_run_summary_is_ms_per_shower_over_runs(bench):
    s = bench.summarise_runs([0.2, 0.4], 10)  # 20 and 40 ms per shower
    assert s["runs"] == 2 and s["showers"] == 20 and s["showers_per_run"] == 10
    assert s["mean_ms"] == pytest.approx(30.0)
    assert s["std_ms"] == pytest.approx(2 ** 0.5 * 10.0)  # sample std (n - 1)
    assert s["run_ms"] == pytest.approx([20.0, 40.0])
    assert bench.summarise_runs([0.5], 5)["std_ms"] is None  # one run: no spread
    with pytest.raises(ValueError):
        bench.summarise_runs([], 5)


def test_targets_are_marked_only_from_measured_realistic_times(bench):
    assert bench.target_status(35.0, 40.0) == "met"
    assert bench.target_status(45.0, 40.0) == "MISSED"
    assert bench.target_status(40.0, 40.0) == "MISSED"  # "under 40 ms"
    assert bench.target_status(None, 1.0) == "not measured"
    assert bench.target_status(0.1, 1.0, realistic_n=False).startswith("not judged")


def test_settings_reject_bad_values(bench):
    with pytest.raises(ConfigError, match="repeats"):
        bench.BenchSettings(repeats=0)
    with pytest.raises(ConfigError, match="paper_flow"):
        bench.BenchSettings(paper_flow="tiny")
    with pytest.raises(ConfigError, match="max_seconds"):
        bench.BenchSettings(max_seconds=0)
    e = bench.uniform_energies(500, seed=3)
    assert e.dtype == torch.float64 and 1e4 <= float(e.min()) and float(e.max()) <= 9e4
    torch.testing.assert_close(e, bench.uniform_energies(500, seed=3))
    torch.testing.assert_close(e[:7], bench.uniform_energies(7, seed=3))  # shared prefix


def test_costed_flow_returns_the_borrowed_values_and_times_them(bench, one_thread):
    values, cost = _micro_model(1).shower_flow, _micro_model(2).shower_flow
    flow = bench.CostedShowerFlow(values, cost)
    ctx = torch.tensor([[0.2], [0.7]])
    out = flow.sample(ctx, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    cost.sample(ctx, generator=g)  # the costly flow draws first, from the same stream
    torch.testing.assert_close(out, values.sample(ctx, generator=g))
    assert not torch.allclose(out, cost.sample(ctx, generator=torch.Generator().manual_seed(0)))
    assert flow.calls == 1 and flow.borrowed_s > 0


def test_time_cell_subtracts_the_borrowed_flow_time(bench, one_thread):
    bm = bench.BenchModel("paper", "m", _micro_model(), "", trained_n=True)
    bm.costed_flow = bench.CostedShowerFlow(bm.model.shower_flow)
    real = bm.model.sample

    def sample(*args, **kwargs):
        bm.costed_flow.borrowed_s += 1000.0  # pretend the borrowed flow took 1000 s
        return real(*args, **kwargs)

    bm.model.sample = sample
    s = bench.BenchSettings(showers=1, repeats=1)
    row = bench.time_cell(bm, "consistency-1", torch.device("cpu"), 1, 1, s)
    # one shower per run: (wall - 1000 s) per shower; without the subtraction it is > 0
    assert -1e6 < row["mean_ms"] < -1e6 + 5e3
    assert row["nfe"] == 1 and row["runs"] == 1 and row["threads"] == 1


@pytest.mark.parametrize("sampler, nfe", [("heun-2", 3), ("consistency-1", 1)])
def test_parts_split_the_time_and_count_the_network_passes(bench, one_thread, sampler, nfe):
    bm = bench.BenchModel("small", "m", _micro_model(), "", trained_n=False)
    flow = bm.model.shower_flow
    calibrate = cc_model.calibrate
    p = bench.time_parts(bm, sampler, torch.device("cpu"), 1, 3)
    assert p["passes_per_flow_call"] == nfe  # NFE network passes per batch of 1
    for key in ("flow_ms", "network_ms", "calibrations_ms"):
        assert p[key] > 0, key
    assert p["other_ms"] >= 0  # the timed parts are disjoint pieces of the wall time
    total = p["flow_ms"] + p["network_ms"] + p["calibrations_ms"] + p["other_ms"]
    assert total == pytest.approx(p["total_ms"])
    assert p["excluded_ms"] == 0.0
    # the same seed gives the same draws: the generated points are what sample makes
    gen = torch.Generator().manual_seed(1)
    bm.model.set_solver(sampler)
    seen = []
    real_calibrate = cc_model.calibrate
    cc_model.calibrate = lambda pts, n, *a: (seen.append(int(n.sum())), real_calibrate(pts, n, *a))[1]
    try:
        bm.model.sample(bench.uniform_energies(3, 0), batch_size=1, generator=gen)
    finally:
        cc_model.calibrate = real_calibrate
    assert p["points_generated_per_shower"] == pytest.approx(sum(seen) / 3)
    # everything patched is restored
    assert "sample" not in vars(flow) and cc_model.calibrate is calibrate
    assert not bm.model.pointwise._forward_hooks and not bm.model.pointwise._forward_pre_hooks


class _SlowFlow(torch.nn.Module):
    """A flow that takes at least ``seconds`` per call (for a lower bound)."""

    def __init__(self, inner: torch.nn.Module, seconds: float):
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def sample(self, context, *, generator=None):
        time.sleep(self.seconds)
        return self.inner.sample(context, generator=generator)


def test_parts_leave_the_borrowed_flow_out_of_the_flow_and_the_total(bench, one_thread):
    model = _micro_model()
    costed = bench.CostedShowerFlow(_SlowFlow(model.shower_flow, 0.1))
    model.shower_flow = costed
    bm = bench.BenchModel("paper", "m", model, "", trained_n=True, costed_flow=costed)
    p = bench.time_parts(bm, "consistency-1", torch.device("cpu"), 1, 1)
    assert p["excluded_ms"] >= 100.0
    # the borrowed 100 ms are in neither the flow, the rest, nor the total
    assert 0 < p["flow_ms"] < 50 and 0 <= p["other_ms"] < 50 and p["total_ms"] < 100


def test_paper_size_model_borrows_the_flow_values_and_calibrations(bench, micro_checkpoint):
    small = bench.small_model(micro_checkpoint)
    assert small.trained_n and small.name == "micro"
    paper = bench.paper_size_model(small, flow="paper")
    m = paper.model
    assert bench.model_parameters(paper)["pointwise"] == 504_920  # the paper's net
    assert isinstance(m.shower_flow, bench.CostedShowerFlow) and paper.costed_flow is m.shower_flow
    assert m.shower_flow.cost.n_parameters() > 30e6  # the paper-size flow runs for its cost
    for a, b in zip(m.shower_flow.values.parameters(), small.model.shower_flow.parameters()):
        torch.testing.assert_close(a, b)
    assert m.calibrations.keys() == small.model.calibrations.keys()
    # the radial map is part of generation: borrowed like the N calibration
    assert small.model.radial_maps and m.radial_maps.keys() == small.model.radial_maps.keys()
    assert m.config.max_points == small.model.config.max_points  # the borrowed flow's range
    assert "BORROWED" in paper.description
    only = bench.paper_size_model(small, flow="borrowed")
    assert only.costed_flow is None and not isinstance(only.model.shower_flow,
                                                       bench.CostedShowerFlow)


def test_command_smoke_writes_every_figure(bench, micro_checkpoint, tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(micro_checkpoint), "--showers", "2",
                       "--showers-diffusion", "2", "--repeats", "2", "--reference-showers", "2",
                       "--samplers", "heun-2,consistency-1", "--no-gpu",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "BORROWED" in text and "Where the time goes" in text and "Targets" in text
    r = json.loads(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # atomic: no temporaries
    cells = {(row["model"], row["sampler"]) for row in r["rows"]}
    assert cells == {(m, s) for m in ("micro", "caloclouds2-ild")
                     for s in ("heun-2", "consistency-1")}
    for row in r["rows"]:
        assert row["runs"] == 2 and row["showers"] == 2 and row["std_ms"] is not None
        assert row["threads"] == 1 and row["batch"] == 1 and row["mean_ms"] > 0
        assert row["speedup"] == pytest.approx(r["reference"]["mean_ms"] / row["mean_ms"])
    assert {p["sampler"]: p["passes_per_flow_call"] for p in r["parts"]} == {
        "heun-2": 3, "consistency-1": 1}
    paper_cm = [p for p in r["parts"] if p["model"] == "caloclouds2-ild"
                and p["sampler"] == "consistency-1"][0]
    assert paper_cm["excluded_ms"] > 0  # the borrowed flow's time is left out
    cpu_target, gpu_target = r["targets"]
    assert cpu_target["status"] in ("met", "MISSED")
    assert gpu_target["status"] == "not measured"
