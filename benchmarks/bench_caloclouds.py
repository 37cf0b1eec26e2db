"""Generation time per shower of CaloClouds II, the paper's protocol (Tab. 3 and §4.4 of the paper).

Usage::

    python benchmarks/bench_caloclouds.py                     # shipped tiny + paper size
    python benchmarks/bench_caloclouds.py --json bench_caloclouds.json
    python benchmarks/bench_caloclouds.py --model path/to/checkpoint --repeats 10

What is timed (the reference code's scope: the paper's Tab. 3 and §4.4; docs/caloclouds.md, A19): one ``CaloClouds2.sample``
call per run, i.e. Shower Flow -> N calibration -> PointWise Net -> calibrations, the
projection onto cells excluded; incident energies uniform in 10-90 GeV; on the CPU with
ONE thread (torch and the BLAS pools) at batch 1, and on the GPU at batch 64 when CUDA is
present; for the diffusion model with ``heun-13`` (25 network evaluations, NFE) and the
distilled model with ``consistency-1`` (1 NFE). Each figure is the mean +- std over
repeated runs of the milliseconds per shower (run wall time / showers in the run), after
one warm-up call. The paper times 10 runs of 2000 showers; the defaults here are
scaled down so that a CPU run ends in a few minutes (``--showers 200`` for 1-NFE cells,
``--showers-diffusion 40`` for the others, in ``--repeats 5`` runs, and no new run
starts after ``--max-seconds`` per cell); the table says how many showers and runs each
figure used. Beside the total, one more instrumented run per cell splits the time into
Shower Flow (sampling + post-processing), the network passes, the calibrations and the
rest (N calibration, noise, normalisation, batching); the total figure itself is taken
without instrumentation.

Models:

* the shipped ``caloclouds2-ild-tiny`` when installed (or ``--model PATH``), else the tiny
  preset with random weights (then N comes from an untrained Shower Flow);
* the paper size (``caloclouds2-ild`` preset): the PointWise Net has random weights
  (its cost does not depend on their values) and the distilled model is a copy of it.
  The number of points drives the cost, so the Shower Flow *values* (hence N) and the N
  calibration are borrowed from the trained small model; the paper-size Shower Flow (34 M
  parameters, random weights) still runs on every call for its cost and its output is
  discarded, and the time spent in the borrowed flow is measured inside the same runs
  and subtracted (``--paper-flow borrowed`` runs only the small flow instead). Without a
  trained small model the paper-size flow with random weights gives N.

The reference is ``caloforge.simulation.simulate_point_clouds`` (GFlash point clouds)
for the same energies, timed in the same process on one CPU thread; the speed-up is its
time per shower over the model's. GFlash is a fast parametrised simulator, not GEANT4
(3914.80 ms per shower on the paper's CPU), so the speed-ups are not the paper's.

Targets (issue), marked met / MISSED only where measured: paper-size distilled model under
40 ms per shower on one CPU thread at batch 1 (paper: 84.35 ms on one Xeon E5-2640 v4
core); under 1 ms per shower on a GPU at batch 64 (paper: 2.09 ms on an A100).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from caloforge.configs import get_preset
from caloforge.errors import ConfigError
from caloforge.evaluation.timing import limit_threads, machine_description
from caloforge.models import build_model
from caloforge.pipelines import load_generator, pretrained_models
from caloforge.pipelines.caloclouds import CaloClouds2
from caloforge.pipelines.caloclouds import model as cc_model

__all__ = [
    "PAPER_TAB3_MS",
    "TARGETS_MS",
    "BenchModel",
    "BenchSettings",
    "CostedShowerFlow",
    "format_table",
    "main",
    "model_parameters",
    "paper_size_model",
    "run",
    "small_model",
    "summarise_runs",
    "target_status",
    "time_cell",
    "time_parts",
    "time_reference",
    "uniform_energies",
]

SMALL_PRESET = "caloclouds2-ild-tiny"
PAPER_PRESET = "caloclouds2-ild"
#: the paper's samplers: EDM Heun with 13 levels (25 NFE) and the one-step distilled model
SAMPLERS = ("heun-13", "consistency-1")
#: (role, device, batch, sampler) -> ms per shower (the issue's targets)
TARGETS_MS = {("paper", "cpu", 1, "consistency-1"): 40.0,
              ("paper", "cuda", 64, "consistency-1"): 1.0}
#: Tab. 3 of the paper, (device, sampler) -> (ms per shower, std); CPU: one core of an
#: Intel Xeon E5-2640 v4 at batch 1, GPU: an A100 40 GB at batch 64
PAPER_TAB3_MS = {("cpu", "heun-13"): (651.68, 4.21), ("cpu", "consistency-1"): (84.35, 0.22),
                 ("cuda", "heun-13"): (6.12, 0.13), ("cuda", "consistency-1"): (2.09, 0.13)}
PAPER_GEANT4_CPU_MS = (3914.80, 74.09)
#: uniform incident energies of the timing workload (MeV)
E_MIN_MEV, E_MAX_MEV = 10_000.0, 90_000.0


@dataclass
class BenchSettings:
    """How much to time.

    Attributes:
        showers: showers per CPU cell of a 1-NFE sampler (split into ``repeats`` runs).
        showers_diffusion: showers per CPU cell of a multi-step sampler.
        gpu_showers: showers per GPU cell (rounded up to whole batches per run).
        cpu_batch, gpu_batch: showers per network batch (the paper: 1 and 64).
        repeats: runs per cell (the paper: 10); mean +- std are taken over runs.
        max_seconds: no new run of a cell starts once this much time was spent on it.
        reference_showers: reference-simulator showers, split into ``repeats`` runs.
        threads: CPU threads (torch and BLAS) for the CPU cells (the paper: 1).
        samplers: samplers timed for every model.
        paper: also time the paper-size model.
        paper_flow: "paper" runs the paper-size Shower Flow for its cost (values from
            the borrowed flow, whose time is subtracted); "borrowed" runs the small
            model's flow only.
        gpu: time on CUDA when available.
        seed: seed of the energies, random weights and sampling.
    """

    showers: int = 200
    showers_diffusion: int = 40
    gpu_showers: int = 1280
    cpu_batch: int = 1
    gpu_batch: int = 64
    repeats: int = 5
    max_seconds: float = 60.0
    reference_showers: int = 100
    threads: int = 1
    samplers: tuple[str, ...] = SAMPLERS
    paper: bool = True
    paper_flow: str = "paper"
    gpu: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.samplers = tuple(self.samplers)
        counts = {"showers": self.showers, "showers_diffusion": self.showers_diffusion,
                  "gpu_showers": self.gpu_showers, "cpu_batch": self.cpu_batch,
                  "gpu_batch": self.gpu_batch, "repeats": self.repeats,
                  "reference_showers": self.reference_showers, "threads": self.threads}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"bench: {name} must be an integer >= 1, got {value!r}")
        if not self.max_seconds > 0:
            raise ConfigError(f"bench: max_seconds must be > 0, got {self.max_seconds}")
        if not self.samplers:
            raise ConfigError("bench: give at least one sampler")
        if self.paper_flow not in ("paper", "borrowed"):
            raise ConfigError(f"bench: paper_flow must be 'paper' or 'borrowed', "
                              f"got {self.paper_flow!r}")


@dataclass
class BenchModel:
    """A model to time.

    Attributes:
        role: "small" or "paper" (the targets apply to "paper").
        name: what the table calls it.
        model: the generator.
        description: where its weights, Shower Flow and N calibration come from.
        trained_n: whether N comes from a trained Shower Flow.
        costed_flow: the wrapper whose borrowed-flow time is subtracted, if any.
    """

    role: str
    name: str
    model: CaloClouds2
    description: str
    trained_n: bool
    costed_flow: CostedShowerFlow | None = None


# --------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def uniform_energies(n: int, seed: int = 0) -> Tensor:
    """(n,) float64 incident energies in MeV, uniform in 10-90 GeV (the paper's workload).

    The first k of n energies are the k energies of ``uniform_energies(k, seed)``, so
    cells of different sizes and the reference share their energies."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(E_MIN_MEV, E_MAX_MEV, size=n))


def summarise_runs(walls_s: Sequence[float], showers_per_run: int) -> dict[str, Any]:
    """Mean, std (over runs, n - 1 in the denominator; None for one run) and median of
    the milliseconds per shower of runs of ``showers_per_run`` showers."""
    if not walls_s:
        raise ValueError("no timed runs")
    if showers_per_run < 1:
        raise ValueError(f"showers_per_run must be >= 1, got {showers_per_run}")
    ms = [1e3 * w / showers_per_run for w in walls_s]
    return {"runs": len(ms), "showers_per_run": showers_per_run,
            "showers": len(ms) * showers_per_run, "mean_ms": statistics.fmean(ms),
            "std_ms": statistics.stdev(ms) if len(ms) > 1 else None,
            "median_ms": statistics.median(ms), "run_ms": ms}


def target_status(ms: float | None, target_ms: float, *, realistic_n: bool = True) -> str:
    """"met" / "MISSED" for a measured time against a target; "not measured" without one;
    "not judged" when the number of points came from an untrained Shower Flow (the cost
    scales with it, so such a time says nothing about the target)."""
    if ms is None or not math.isfinite(ms):
        return "not measured"
    if not realistic_n:
        return "not judged (N from an untrained Shower Flow)"
    return "met" if ms < target_ms else "MISSED"


# torch and BLAS pools at n threads inside a block, the timing module's
_threads = limit_threads


# ---------------------------------------------------------------------------- models
class CostedShowerFlow(nn.Module):
    """A Shower Flow that costs what ``cost`` costs and returns what ``values`` returns.

    ``sample`` first runs ``cost.sample`` (the paper-size flow, random weights: its time
    is what a paper-size model pays) and discards the result, then returns
    ``values.sample`` (a trained flow: realistic N, layer fractions and energies). The
    time of the ``values`` call is added to :attr:`borrowed_s` (wall) and
    :attr:`borrowed_cpu_s` (process CPU), so that a caller can subtract it.
    ``cost=None`` just wraps ``values`` (and still times it).
    """

    def __init__(self, values: nn.Module, cost: nn.Module | None = None):
        super().__init__()
        self.values = values.eval()
        self.cost = cost.eval() if cost is not None else None
        self.borrowed_s = 0.0
        self.borrowed_cpu_s = 0.0
        self.calls = 0

    def sample(self, context: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.cost is not None:
            self.cost.sample(context, generator=generator)
        sync = _sync(context.device)
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        out = self.values.sample(context, generator=generator)
        sync()
        self.borrowed_s += time.perf_counter() - w0
        self.borrowed_cpu_s += time.process_time() - c0
        self.calls += 1
        return out

    def reset(self) -> None:
        self.borrowed_s = self.borrowed_cpu_s = 0.0
        self.calls = 0


def _fill_samplers(model: CaloClouds2) -> str:
    """Give a model without a diffusion or without a distilled network a copy of the
    other one (same architecture, hence the same cost); return a note, "" if none."""
    if model.distilled is None and model.pointwise is not None:
        model.distilled = copy.deepcopy(model.pointwise).eval()
        return "; no distilled model: consistency-1 timed on a copy of the diffusion weights"
    if model.pointwise is None and model.distilled is not None:
        model.pointwise = copy.deepcopy(model.distilled).eval()
        return "; no diffusion model: heun/euler timed on a copy of the distilled weights"
    return ""


def _calibration_note(model: CaloClouds2) -> str:
    fitted = sorted(k for k, c in model.calibrations.items() if c.fitted)
    note = f"N calibration fitted for {', '.join(fitted)}" if fitted else \
        "N calibration not fitted (identity)"
    if model.radial_maps:
        note += f"; radial map for {', '.join(sorted(model.radial_maps))}"
    return note


def small_model(spec: str | os.PathLike | None = None, *, seed: int = 0) -> BenchModel:
    """The small model: ``spec`` (a checkpoint or shipped name), else the shipped
    ``caloclouds2-ild-tiny``, else that preset with random weights."""
    if spec is None and SMALL_PRESET in pretrained_models():
        spec = SMALL_PRESET
    if spec is not None:
        model = load_generator(spec)
        if not isinstance(model, CaloClouds2):
            raise ConfigError(f"{spec}: not a CaloClouds II checkpoint "
                              f"({type(model).__name__})")
        shipped = str(spec) in pretrained_models()
        name = str(spec) if shipped else Path(spec).name
        desc = (f"{spec} ({'shipped' if shipped else 'checkpoint'} weights; "
                f"{_calibration_note(model)})")
        desc += _fill_samplers(model)
        return BenchModel("small", name, model.eval(), desc, trained_n=True)
    config = get_preset(SMALL_PRESET)
    torch.manual_seed(seed)
    pointwise = build_model("pointwise_net", config.pointwise)
    model = CaloClouds2(config, config.planar_geometry(),
                        build_model("shower_flow", config.shower_flow), pointwise,
                        copy.deepcopy(pointwise))
    desc = (f"{SMALL_PRESET} preset with RANDOM weights (no shipped model is installed): "
            "N comes from an untrained Shower Flow, N calibration identity")
    return BenchModel("small", f"{SMALL_PRESET} (random)", model.eval(), desc, trained_n=False)


def paper_size_model(source: BenchModel, *, flow: str = "paper", seed: int = 0) -> BenchModel:
    """The ``caloclouds2-ild`` model with a random-weight PointWise Net (its distilled
    model a copy), the Shower Flow values and N calibrations borrowed from ``source``
    when it is trained (``flow="paper"``: the paper-size flow still runs for its cost)."""
    if flow not in ("paper", "borrowed"):
        raise ConfigError(f"flow must be 'paper' or 'borrowed', got {flow!r}")
    paper = get_preset(PAPER_PRESET)
    torch.manual_seed(seed)
    pointwise = build_model("pointwise_net", paper.pointwise)
    distilled = copy.deepcopy(pointwise)
    big_flow = build_model("shower_flow", paper.shower_flow) if (
        flow == "paper" or not source.trained_n) else None
    n_pw = sum(p.numel() for p in pointwise.parameters())
    if not source.trained_n:
        assert big_flow is not None
        model = CaloClouds2(paper, paper.planar_geometry(), big_flow, pointwise, distilled)
        desc = (f"{PAPER_PRESET} preset, RANDOM weights throughout ({n_pw:,}-parameter "
                "PointWise Net): N comes from an untrained Shower Flow (no trained small "
                "model), N calibration identity")
        return BenchModel("paper", PAPER_PRESET, model.eval(), desc, trained_n=False)
    src = source.model
    # the borrowed flow's scales, N range and axis are the ones it was trained with
    config = copy.deepcopy(src.config)
    config.pointwise = paper.pointwise
    values = copy.deepcopy(src.shower_flow)
    costed = CostedShowerFlow(values, big_flow) if flow == "paper" else None
    model = CaloClouds2(config, src.geometry, costed if costed is not None else values,
                        pointwise, distilled, copy.deepcopy(src.calibrations),
                        copy.deepcopy(src.transforms), copy.deepcopy(src.radial_maps))
    if big_flow is not None:
        desc = (f"{PAPER_PRESET} size: PointWise Net with random weights ({n_pw:,} "
                f"parameters; distilled = a copy); N, layer fractions and energies from "
                f"{source.name}'s trained Shower Flow (BORROWED, its time subtracted) while "
                f"the paper-size Shower Flow ({_n_params(big_flow):,} parameters, random "
                f"weights) runs for its cost; {source.name}'s N calibration and radial "
                f"map (BORROWED)")
    else:
        desc = (f"{PAPER_PRESET} size: PointWise Net with random weights ({n_pw:,} "
                f"parameters; distilled = a copy); Shower Flow, N calibration and radial map BORROWED "
                f"from {source.name} (the flow's cost is the small flow's, not the paper's)")
    return BenchModel("paper", PAPER_PRESET, model.eval(), desc, trained_n=True,
                      costed_flow=costed)


def _n_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def model_parameters(bm: BenchModel) -> dict[str, int]:
    """Parameters of the networks whose cost is timed (a borrowed flow not counted)."""
    m = bm.model
    flow = m.shower_flow
    if isinstance(flow, CostedShowerFlow):
        flow = flow.cost if flow.cost is not None else flow.values
    return {"shower_flow": _n_params(flow), "pointwise": _n_params(m.pointwise),
            "distilled": _n_params(m.distilled)}


# ---------------------------------------------------------------------------- timing
def _excluded(bm: BenchModel) -> tuple[float, float]:
    f = bm.costed_flow
    return (f.borrowed_s, f.borrowed_cpu_s) if f is not None else (0.0, 0.0)


def time_cell(bm: BenchModel, sampler: str, device: torch.device, batch: int, showers: int,
              settings: BenchSettings) -> dict[str, Any]:
    """Mean +- std ms per shower of ``sample`` over repeated runs, after a warm-up.

    Run r samples showers r x size ... (r + 1) x size - 1 of :func:`uniform_energies`
    (so a cell's showers all have different energies, and the spread over runs includes
    the variation of the energies and of N). A borrowed flow's time, measured inside
    each run, is subtracted.
    """
    model = bm.model
    model.set_solver(sampler)
    sync = _sync(device)
    per_run = max(1, math.ceil(showers / settings.repeats))
    if device.type == "cuda":  # whole batches only
        per_run = batch * math.ceil(per_run / batch)
    e = uniform_energies(per_run * settings.repeats, settings.seed)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    model.sample(e[:min(per_run, 2 * batch)], batch_size=batch, generator=gen)  # warm-up
    sync()
    walls, cpus, points = [], [], []
    t_start = time.perf_counter()
    while len(walls) < settings.repeats and (
            not walls or time.perf_counter() - t_start < settings.max_seconds):
        ex0 = _excluded(bm)
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        lo = len(walls) * per_run
        clouds = model.sample(e[lo:lo + per_run], batch_size=batch, generator=gen)
        sync()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        ex1 = _excluded(bm)
        walls.append(w - (ex1[0] - ex0[0]))
        cpus.append(c - (ex1[1] - ex0[1]))
        points.append(float(np.mean(clouds.n_points)))
    out = summarise_runs(walls, per_run)
    out.update(model=bm.name, role=bm.role, device=device.type,
               threads=torch.get_num_threads() if device.type == "cpu" else None,
               batch=batch, sampler=sampler, nfe=model.nfe(),
               cpu_ms=1e3 * sum(cpus) / (len(cpus) * per_run),
               mean_points_kept=statistics.fmean(points))
    return out


@contextlib.contextmanager
def _instrumented(model: CaloClouds2, sync: Callable[[], None]) -> Iterator[dict[str, float]]:
    """Accumulate, while open, the wall seconds of the Shower Flow (sampling and
    decoding), of the network passes and of the calibrations inside ``model.sample``.

    Wraps ``model.shower_flow.sample`` (instance attribute), the ``decode_shower_flow``
    and ``calibrate`` names the generator module calls, and hooks the networks; all is
    restored on exit. A name the generator module lacks is simply not split out."""
    acc = {"flow_s": 0.0, "network_s": 0.0, "calibrations_s": 0.0, "passes": 0,
           "flow_calls": 0, "points_generated": 0}

    def timed(fn: Callable[..., Any], key: str, on_call: Callable[..., None] | None = None
              ) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if on_call is not None:
                on_call(*args, **kwargs)
            sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            acc[key] += time.perf_counter() - t0
            return out
        return wrapper

    def count_flow(*args: Any, **kwargs: Any) -> None:
        acc["flow_calls"] += 1

    def count_points(points: Tensor, n_valid: Tensor, *args: Any, **kwargs: Any) -> None:
        acc["points_generated"] += int(torch.as_tensor(n_valid).sum())

    starts: list[float] = []

    def pre_hook(module: nn.Module, args: Any) -> None:
        sync()
        starts.append(time.perf_counter())

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        sync()
        acc["network_s"] += time.perf_counter() - starts.pop()
        acc["passes"] += 1

    flow = model.shower_flow
    patched: list[tuple[Any, str, Any]] = []
    handles = []
    try:
        flow.sample = timed(flow.sample, "flow_s", count_flow)  # shadows the method
        for name, key, hook in (("decode_shower_flow", "flow_s", None),
                                ("calibrate", "calibrations_s", count_points)):
            if hasattr(cc_model, name):
                patched.append((cc_model, name, getattr(cc_model, name)))
                setattr(cc_model, name, timed(getattr(cc_model, name), key, hook))
        for net in {id(m): m for m in (model.pointwise, model.distilled) if m is not None
                    }.values():
            handles += [net.register_forward_pre_hook(pre_hook),
                        net.register_forward_hook(post_hook)]
        yield acc
    finally:
        for h in handles:
            h.remove()
        for mod, name, original in patched:
            setattr(mod, name, original)
        if "sample" in vars(flow):
            del flow.sample


def time_parts(bm: BenchModel, sampler: str, device: torch.device, batch: int, showers: int,
               seed: int = 0) -> dict[str, Any]:
    """One instrumented run (the energies of a cell's first run): ms per shower of the Shower Flow (sampling + post-processing),
    the network passes, the calibrations and the rest, and the network passes per batch
    (= NFE). A borrowed flow's time is reported as ``excluded_ms`` and left out of the
    flow and the total; ``flow_cost_ms`` is what the paper-size flow alone took."""
    model = bm.model
    model.set_solver(sampler)
    sync = _sync(device)
    e = uniform_energies(showers, seed)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    ex0 = _excluded(bm)[0]
    with _instrumented(model, sync) as acc:
        sync()
        t0 = time.perf_counter()
        model.sample(e, batch_size=batch, generator=gen)
        sync()
        wall = time.perf_counter() - t0
    excluded = _excluded(bm)[0] - ex0
    total = wall - excluded
    flow = acc["flow_s"] - excluded
    rest = total - flow - acc["network_s"] - acc["calibrations_s"]
    per = 1e3 / showers
    return {"model": bm.name, "role": bm.role, "device": device.type, "batch": batch,
            "sampler": sampler, "nfe": model.nfe(), "showers": showers,
            "total_ms": total * per, "flow_ms": flow * per, "network_ms": acc["network_s"] * per,
            "calibrations_ms": acc["calibrations_s"] * per, "other_ms": rest * per,
            "excluded_ms": excluded * per,
            "passes_per_flow_call": acc["passes"] / max(acc["flow_calls"], 1),
            "points_generated_per_shower": acc["points_generated"] / showers}


def time_reference(energies_mev: Tensor, repeats: int, max_seconds: float, seed: int = 0
                   ) -> dict[str, Any]:
    """GFlash point clouds (``simulate_point_clouds``) for ``energies_mev`` on ONE CPU
    thread, in ``repeats`` runs of equal size (the last energies are dropped when
    ``repeats`` does not divide their number), each with different energies: mean +-
    std ms per shower over the runs."""
    from caloforge.simulation import simulate_point_clouds

    e = energies_mev.numpy()
    per_run = max(1, len(e) // repeats)
    with _threads(1):
        simulate_point_clouds(energies=e[:min(2, len(e))], seed=seed)  # warm-up
        walls: list[float] = []
        t_start = time.perf_counter()
        for r in range(repeats):
            if walls and time.perf_counter() - t_start >= max_seconds:
                break
            chunk = e[r * per_run:(r + 1) * per_run]
            if not len(chunk):
                break
            t0 = time.perf_counter()
            simulate_point_clouds(energies=chunk, seed=seed + 1 + r)
            walls.append(time.perf_counter() - t0)
    out = summarise_runs(walls, per_run)
    out["simulator"] = "caloforge.simulation.simulate_point_clouds (GFlash point clouds)"
    return out


def _showers_for(settings: BenchSettings, device: torch.device, nfe: int) -> int:
    if device.type == "cuda":
        return settings.gpu_showers
    return settings.showers if nfe <= 1 else settings.showers_diffusion


def run(settings: BenchSettings, model_spec: str | os.PathLike | None = None, *,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every model, sampler and device of ``settings`` and the reference simulator."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    small = small_model(model_spec, seed=settings.seed)
    models = [small]
    if settings.paper:
        models.append(paper_size_model(small, flow=settings.paper_flow, seed=settings.seed))
    devices = [torch.device("cpu")]
    if settings.gpu and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows, parts = [], []
    with _threads(settings.threads):
        for bm in models:
            for device in devices:
                bm.model.to(device)
                batch = settings.gpu_batch if device.type == "cuda" else settings.cpu_batch
                for sampler in settings.samplers:
                    bm.model.set_solver(sampler)
                    n = _showers_for(settings, device, bm.model.nfe())
                    row = time_cell(bm, sampler, device, batch, n, settings)
                    rows.append(row)
                    parts.append(time_parts(bm, sampler, device, batch,
                                            row["showers_per_run"], settings.seed))
                    say(f"  {bm.name} {device.type} batch {batch} {sampler}: "
                        f"{row['mean_ms']:.3f} ms/shower ({row['showers']} showers)")
                bm.model.to("cpu")
        torch_threads = torch.get_num_threads()
    # equal runs of different energies, at least reference_showers in all
    n_ref = math.ceil(settings.reference_showers / settings.repeats) * settings.repeats
    reference = time_reference(uniform_energies(n_ref, settings.seed), settings.repeats,
                               settings.max_seconds, settings.seed)
    trained = {bm.name: bm.trained_n for bm in models}
    for r in rows:
        r["speedup"] = reference["mean_ms"] / r["mean_ms"] if r["mean_ms"] > 0 else None
        target = TARGETS_MS.get((r["role"], r["device"], r["batch"], r["sampler"]))
        r["target_ms"] = target
        r["target"] = None if target is None else target_status(
            r["mean_ms"], target, realistic_n=trained[r["model"]])
    targets = []
    for (role, dev, batch, sampler), ms in TARGETS_MS.items():
        got = [r for r in rows if (r["role"], r["device"], r["batch"], r["sampler"])
               == (role, dev, batch, sampler)]
        targets.append({"role": role, "device": dev, "batch": batch, "sampler": sampler,
                        "target_ms": ms, "measured_ms": got[0]["mean_ms"] if got else None,
                        "status": got[0]["target"] if got else target_status(None, ms)})
    return {
        "benchmark": "caloclouds2 generation time per shower (paper Tab. 3 protocol)",
        "scope": "CaloClouds2.sample: Shower Flow -> N calibration -> PointWise Net -> "
                 "calibrations; projection excluded",
        "energies": "uniform 10-90 GeV",
        "machine": machine_description(),
        "torch_threads_cpu": torch_threads,
        "load_average_start": load_start,
        "load_average_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "settings": dataclasses.asdict(settings),
        "models": {bm.name: {"role": bm.role, "description": bm.description,
                             "trained_n": bm.trained_n,
                             "parameters": model_parameters(bm)}
                   for bm in models},
        "reference": reference,
        "rows": rows,
        "parts": parts,
        "targets": targets,
        "paper_tab3_ms": {f"{d}/{s}": list(v) for (d, s), v in PAPER_TAB3_MS.items()},
        "paper_geant4_cpu_ms": list(PAPER_GEANT4_CPU_MS),
    }


# ---------------------------------------------------------------------------- output
def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.3f} +- {std:.3f}" if std is not None else f"{mean:.3f} (1 run)"


def format_table(result: dict[str, Any]) -> str:
    """The result as text: machine, models, the timing table, the parts, the targets."""
    m = result["machine"]
    ref = result["reference"]
    lines = [
        "CaloClouds II generation time per shower (paper Tab. 3 protocol; scope: "
        + result["scope"] + "; energies " + result["energies"] + ")",
        "machine: {} ({} usable cores, {} GiB), GPU: {}, torch {} ({} thread(s) on CPU), "
        "caloforge {}; load average {} at the start, {} at the end".format(
            m["cpu_model"], m["cpu_usable"], m["memory_gib"], m["gpu"] or "none", m["torch"],
            result["torch_threads_cpu"], m["caloforge"], result["load_average_start"],
            result["load_average_end"]),
    ]
    lines += [f"model {name}: {info['description']}" for name, info in result["models"].items()]
    lines += [
        f"reference: {ref['simulator']}, CPU, 1 thread: {_pm(ref['mean_ms'], ref['std_ms'])} "
        f"ms/shower ({ref['runs']} runs x {ref['showers_per_run']} showers); the paper's "
        f"GEANT4: {PAPER_GEANT4_CPU_MS[0]} +- {PAPER_GEANT4_CPU_MS[1]} ms",
        "",
        "| model | device | threads | batch | sampler | NFE | showers (runs x size) | "
        "ms/shower (mean +- std) | CPU ms/shower | points kept/shower | speed-up vs reference | "
        "paper Tab. 3 ms | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        # the paper's figures stand beside the paper-size model only
        paper = PAPER_TAB3_MS.get((r["device"], r["sampler"])) if r["role"] == "paper" else None
        tgt = "" if r["target"] is None else f"< {r['target_ms']:g} ms: {r['target']}"
        sp = f"x{r['speedup']:.3g}" if r["speedup"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['device']} | {r['threads'] or '-'} | {r['batch']} | "
            f"{r['sampler']} | {r['nfe']} | {r['showers']} ({r['runs']} x "
            f"{r['showers_per_run']}) | {_pm(r['mean_ms'], r['std_ms'])} | {r['cpu_ms']:.3f} | "
            f"{r['mean_points_kept']:.0f} | {sp} | "
            f"{'-' if paper is None else f'{paper[0]} +- {paper[1]}'} | {tgt} |")
    lines += [
        "",
        "Where the time goes (one instrumented run per cell, ms/shower; flow = Shower Flow "
        "sampling + post-processing; other = N calibration, noise, normalisation, batching):",
        "",
        "| model | device | batch | sampler | showers | Shower Flow | network passes | "
        "calibrations | other | total | passes per batch | points generated/shower | "
        "borrowed flow (excluded) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["parts"]:
        tot = p["total_ms"]

        def cell(v: float, tot: float = tot) -> str:
            return f"{v:.3f} ({100 * v / tot:.0f}%)" if tot > 0 else f"{v:.3f}"

        lines.append(
            f"| {p['model']} | {p['device']} | {p['batch']} | {p['sampler']} | {p['showers']} | "
            f"{cell(p['flow_ms'])} | {cell(p['network_ms'])} | {cell(p['calibrations_ms'])} | "
            f"{cell(p['other_ms'])} | {tot:.3f} | {p['passes_per_flow_call']:.3g} | "
            f"{p['points_generated_per_shower']:.0f} | {p['excluded_ms']:.3f} |")
    lines += ["", "Targets (marked only where measured):"]
    for t in result["targets"]:
        got = "-" if t["measured_ms"] is None else f"{t['measured_ms']:.3f} ms"
        lines.append(f"  {t['role']}-size {t['sampler']}, {t['device']}, batch {t['batch']}: "
                     f"< {t['target_ms']:g} ms/shower; measured {got}: {t['status']}")
    lines += ["", "ms/shower = run wall time / showers in the run, mean +- std over runs after a "
              "warm-up call; CPU ms = process CPU time (wall >> CPU means the core was shared); "
              "NFE = PointWise Net evaluations per batch (Shower Flow not counted, as the "
              "paper); points kept = mean points per output shower, after removing E <= 0 (random "
              "weights may drop most; the cost follows the points generated, see the parts); "
              "the reference is GFlash, not GEANT4, so speed-ups are not the paper's."]
    return "\n".join(lines)


def _write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    import json

    from caloforge.io import atomic_path

    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)


def _samplers(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    d = BenchSettings()
    p.add_argument("--model", default=None,
                   help=f"checkpoint or shipped name of the small model (default: {SMALL_PRESET} "
                        "when shipped, else that preset with random weights)")
    p.add_argument("--showers", type=int, default=d.showers,
                   help="showers per CPU cell of a 1-NFE sampler (paper: 10 x 2000)")
    p.add_argument("--showers-diffusion", type=int, default=d.showers_diffusion,
                   help="showers per CPU cell of a multi-step sampler")
    p.add_argument("--gpu-showers", type=int, default=d.gpu_showers)
    p.add_argument("--cpu-batch", type=int, default=d.cpu_batch)
    p.add_argument("--gpu-batch", type=int, default=d.gpu_batch)
    p.add_argument("--repeats", type=int, default=d.repeats, help="runs per cell (paper: 10)")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="time budget per cell: no new run starts after it")
    p.add_argument("--reference-showers", type=int, default=d.reference_showers)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads, torch and BLAS (the protocol: 1)")
    p.add_argument("--samplers", type=_samplers, default=d.samplers,
                   help="comma-separated samplers (default: heun-13,consistency-1)")
    p.add_argument("--no-paper", action="store_true", help="skip the paper-size model")
    p.add_argument("--paper-flow", choices=("paper", "borrowed"), default=d.paper_flow,
                   help="paper: run the paper-size Shower Flow for its cost (values and N "
                        "from the small model's flow, whose time is subtracted); borrowed: "
                        "only the small model's flow")
    p.add_argument("--no-gpu", action="store_true", help="CPU only")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    settings = BenchSettings(
        showers=args.showers, showers_diffusion=args.showers_diffusion,
        gpu_showers=args.gpu_showers, cpu_batch=args.cpu_batch, gpu_batch=args.gpu_batch,
        repeats=args.repeats, max_seconds=args.max_seconds,
        reference_showers=args.reference_showers, threads=args.threads,
        samplers=args.samplers, paper=not args.no_paper, paper_flow=args.paper_flow,
        gpu=not args.no_gpu, seed=args.seed)
    result = run(settings, args.model)
    print(format_table(result))
    if args.json:
        _write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
