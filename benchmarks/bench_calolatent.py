"""Generation time per ds2 shower of CaloLatent, part by part.

Usage::

    python benchmarks/bench_calolatent.py                       # tiny + paper size, CPU (+ GPU)
    python benchmarks/bench_calolatent.py --threads 1 --json bench_calolatent.json
    python benchmarks/bench_calolatent.py --paper-batches 1,100,1000 --max-seconds 120
    python benchmarks/bench_calolatent.py --fidelity-showers 10000   # + classifier AUCs

For each model (the shipped ``calolatent-ds2-tiny`` when installed, else the tiny preset
with random weights; the paper-size ``calolatent-ds2`` preset with random weights and
placeholder statistics: the time does not depend on the values), each device and batch
size, and each sampler, it prints the milliseconds per shower and the network
evaluations (NFE) per batch of

* the layer sampler (``sample_layer_features``: E_inc -> preprocessed layer ratios u);
* the latent sampler (``sample_latent``: z given E_inc and the sampled u);
* the decoder with the inverse preprocessing, per-layer renormalisation, threshold and,
  where the model has one, the fitted voxel map of its ``calibration`` stage (``decode``;
  one network call whatever the sampler, so timed once per batch);
* the whole ``sample`` (all of the above in one call, the same sampler for both models),

and the speed-up over the reference simulator (GFlash ds2, one CPU thread) timed in the
same run on the same log-uniform 1 GeV - 1 TeV energies.

Samplers (``--samplers``): ``em-200``, the paper's 200-step Euler-Maruyama (200 + 200 + 1
NFE), and three fast ones: ``em-50`` (the paper's own stochastic sampler with a quarter of
the steps: the obvious cut, first order), ``rk4-10`` (probability-flow ODE, fourth order,
40 NFE: the fast sampler of docs/calolatent.md) and ``heun-10`` (probability-flow ODE,
second order, 20 NFE: half of rk4-10's cost, the candidate for the 2 ms target).

Cells: CPU at batch 1, 100 and 1000 for the tiny model; the paper-size model on this CPU
at batch 1 and 100 only by default (its VAE decoder runs 64-channel 3-D convolutions on
48 x 16 x 12 positions: about 0.1 s per shower on one thread of the 2-core development
machine, so a batch of 1000 takes minutes per call; ``--paper-batches 1,100,1000`` times
it, ``--max-seconds`` and ``--long-call`` bound the repeats); a GPU at batch 100 and 10 000 when CUDA is
available (a cell that runs out of GPU memory is reported as such). Each figure is the
median over repeated calls after a warm-up call; no new call starts after
``--max-seconds`` per cell, and a warm-up call longer than ``--long-call`` seconds is
kept as the one measurement (the table gives the number of timed calls, "w" marks a
kept warm-up). The machine, the threads and the load average at the start and end are
printed beside the figures.

Targets (issue), marked met / MISSED only from numbers measured in the run:

* tiny model, this CPU, batch 1000: a fast sampler under 2 ms per shower (whole
  ``sample``) whose classifier AUC (low-level, GFlash reference) is within 0.02 of
  ``em-200``'s. The AUCs are measured only with ``--fidelity-showers N`` (off by default:
  it generates N showers per sampler and trains one classifier each), and only for
  trained weights; without them the target reads "not judged".
* for comparison, the paper: 19 ms per shower at batch 100 (1.9 s per 100 showers,
  em-200, hardware not stated), shown beside the paper-size em-200 totals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caloforge.configs import get_preset
from caloforge.errors import ConfigError
from caloforge.evaluation.timing import limit_threads, machine_description
from caloforge.geometry import get_geometry
from caloforge.pipelines import load_generator, pretrained_models
from caloforge.pipelines.calolatent import (
    CaloLatent,
    CaloLatentConfig,
    CaloLatentTransforms,
    build_calolatent_models,
)
from caloforge.sampling import parse_sde_sampler
from caloforge.threads import available_cpus

__all__ = [
    "FAST_SAMPLERS",
    "PAPER_MS_PER_SHOWER",
    "PAPER_PRESET",
    "PAPER_SAMPLER",
    "SAMPLERS",
    "SMALL_PRESET",
    "TARGET_AUC_DELTA",
    "TARGET_MS",
    "BenchModel",
    "BenchSettings",
    "TimedCall",
    "format_table",
    "log_uniform_energies",
    "main",
    "measure_fidelity",
    "paper_model",
    "placeholder_transforms",
    "random_model",
    "run",
    "small_model",
    "target_status",
    "time_call",
    "time_model",
    "time_reference",
    "write_json",
]

SMALL_PRESET = "calolatent-ds2-tiny"
PAPER_PRESET = "calolatent-ds2"
#: the paper's sampler: 200-step Euler-Maruyama for both diffusion models
PAPER_SAMPLER = "em-200"
FAST_SAMPLERS = ("em-50", "rk4-10", "heun-10")
SAMPLERS = (PAPER_SAMPLER, *FAST_SAMPLERS)
#: the issue's target: (role, device, batch) of the cell, ms per shower of the whole sample
TARGET_CELL = ("tiny", "cpu", 1000)
TARGET_MS = 2.0
#: ... with a classifier AUC at most this much above em-200's
TARGET_AUC_DELTA = 0.02
#: the paper (§3): 1.9 s per 100 showers with em-200, hardware not stated
PAPER_MS_PER_SHOWER = 19.0
PAPER_BATCH = 100
#: incident energies of the workload: ds2's log-uniform spectrum, 1 GeV - 1 TeV (MeV)
E_MIN_MEV, E_MAX_MEV = 1e3, 1e6


@dataclass
class BenchSettings:
    """What to time and for how long.

    Attributes:
        threads: torch and BLAS threads for the CPU cells (None: the usable cores).
        tiny_batches: CPU batch sizes of the tiny model.
        paper_batches: CPU batch sizes of the paper-size model.
        gpu_batches: GPU batch sizes of both models (when CUDA is available).
        samplers: samplers timed for every cell (the first fast ones are judged against
            the target; ``em-200`` is the fidelity baseline).
        repeats: timed calls per measurement (after one warm-up call).
        max_seconds: no new timed call of a measurement starts after this many seconds.
        long_call_s: a warm-up call longer than this is kept as the one measurement.
        reference_showers: GFlash showers per reference run.
        reference_runs: reference runs (median over them).
        paper: also time the paper-size model.
        gpu: time on CUDA when available.
        fidelity_showers: showers per sampler for the classifier AUCs (0: off).
        seed: seed of the energies, the random weights and the sampling.
    """

    threads: int | None = None
    tiny_batches: tuple[int, ...] = (1, 100, 1000)
    paper_batches: tuple[int, ...] = (1, 100)
    gpu_batches: tuple[int, ...] = (100, 10_000)
    samplers: tuple[str, ...] = SAMPLERS
    repeats: int = 5
    max_seconds: float = 30.0
    long_call_s: float = 5.0
    reference_showers: int = 100
    reference_runs: int = 3
    paper: bool = True
    gpu: bool = True
    fidelity_showers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.tiny_batches = tuple(self.tiny_batches)
        self.paper_batches = tuple(self.paper_batches)
        self.gpu_batches = tuple(self.gpu_batches)
        self.samplers = tuple(self.samplers)
        for name in ("tiny_batches", "paper_batches", "gpu_batches"):
            for b in getattr(self, name):
                if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                    raise ConfigError(f"bench: {name} must hold integers >= 1, got {b!r}")
        counts = {"repeats": self.repeats, "reference_showers": self.reference_showers,
                  "reference_runs": self.reference_runs}
        if self.threads is not None:
            counts["threads"] = self.threads
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"bench: {name} must be an integer >= 1, got {value!r}")
        if self.fidelity_showers < 0:
            raise ConfigError(f"bench: fidelity_showers must be >= 0, got {self.fidelity_showers}")
        if not self.max_seconds > 0 or not self.long_call_s > 0:
            raise ConfigError("bench: max_seconds and long_call_s must be > 0")
        if not self.samplers:
            raise ConfigError("bench: give at least one sampler")
        for s in self.samplers:
            parse_sde_sampler(s)  # an unknown name raises ConfigError here, not mid-run


@dataclass
class BenchModel:
    """A model to time.

    Attributes:
        role: "tiny" or "paper" (the target applies to "tiny").
        name: what the table calls it.
        model: the generator.
        description: where its weights and statistics come from.
        trained: whether the weights are trained (fidelity is judged only then).
    """

    role: str
    name: str
    model: CaloLatent
    description: str
    trained: bool


@dataclass
class TimedCall:
    """Median wall and process-CPU seconds of repeated calls.

    Attributes:
        wall_s, cpu_s: medians over the timed calls.
        runs: timed calls.
        kept_warmup: the warm-up call was long and is the measurement.
    """

    wall_s: float
    cpu_s: float
    runs: int
    kept_warmup: bool


# --------------------------------------------------------------------------- helpers
def log_uniform_energies(n: int, seed: int = 0) -> Tensor:
    """(n,) float64 incident energies in MeV, log-uniform in 1 GeV - 1 TeV (ds2's
    spectrum). The first k of n energies are those of ``log_uniform_energies(k, seed)``."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.exp(rng.uniform(math.log(E_MIN_MEV), math.log(E_MAX_MEV), n)))


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# torch and BLAS pools at n threads inside a block, the timing module's
_threads = limit_threads


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def time_call(fn: Callable[[], Any], sync: Callable[[], None], *, repeats: int,
              max_seconds: float, long_call_s: float) -> TimedCall:
    """Median wall and CPU seconds of ``fn`` over up to ``repeats`` calls after a warm-up.

    No new call starts once ``max_seconds`` were spent on the timed calls (at least one
    runs). A warm-up call longer than ``long_call_s`` is kept as the only measurement:
    first-call overheads are negligible there, and repeating minute-long calls would
    make a CPU run take hours.
    """
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    first_w, first_c = time.perf_counter() - w0, time.process_time() - c0
    if first_w > long_call_s:
        return TimedCall(first_w, first_c, 1, True)
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < repeats and (not walls or sum(walls) < max_seconds):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return TimedCall(statistics.median(walls), statistics.median(cpus), len(walls), False)


# ---------------------------------------------------------------------------- models
def placeholder_transforms(config: CaloLatentConfig) -> CaloLatentTransforms:
    """Preprocessing with statistics of the right shapes (45 layer and 6480 voxel
    features for ds2) instead of fitted ones: timing needs the shapes, not the values."""
    geometry = get_geometry(config.geometry)
    t = CaloLatentTransforms.new(config, geometry)
    n_l, n_v = geometry.n_layers, geometry.n_voxels
    f64 = torch.float64
    t.u_minmax.low, t.u_minmax.span = torch.zeros(n_l, dtype=f64), torch.ones(n_l, dtype=f64)
    t.u_standardize.mean, t.u_standardize.std = (torch.zeros(n_l, dtype=f64),
                                                 torch.ones(n_l, dtype=f64))
    t.f_minmax.low, t.f_minmax.span = torch.zeros(n_v, dtype=f64), torch.ones(n_v, dtype=f64)
    # a negative mean: most decoded fractions come out small, as in real showers
    t.f_standardize.mean = torch.full((n_v,), -8.0, dtype=f64)
    t.f_standardize.std = torch.ones(n_v, dtype=f64)
    return t


def random_model(config: CaloLatentConfig, *, seed: int = 0) -> CaloLatent:
    """A CaloLatent generator of ``config`` with random weights and placeholder statistics."""
    torch.manual_seed(seed)
    layer, vae, latent = build_calolatent_models(config)
    return CaloLatent(config, get_geometry(config.geometry), layer, vae, latent,
                      placeholder_transforms(config))


def _n_params(model: CaloLatent) -> str:
    p = model.n_parameters()
    return (f"layer {p['layer']:,} + VAE {p['vae']:,} + latent {p['latent']:,} = "
            f"{sum(p.values()):,} parameters")


def small_model(*, seed: int = 0) -> BenchModel:
    """The shipped ``calolatent-ds2-tiny`` when installed, else that preset with random
    weights."""
    if SMALL_PRESET in pretrained_models():
        model = load_generator(SMALL_PRESET)
        if not isinstance(model, CaloLatent):
            raise ConfigError(f"{SMALL_PRESET}: not a CaloLatent model ({type(model).__name__})")
        return BenchModel("tiny", SMALL_PRESET, model,
                          f"{SMALL_PRESET}, shipped weights; {_n_params(model)}", True)
    model = random_model(get_preset(SMALL_PRESET), seed=seed)
    return BenchModel("tiny", f"{SMALL_PRESET} (random)", model,
                      f"{SMALL_PRESET} preset, RANDOM weights and placeholder statistics (no "
                      f"shipped model installed); {_n_params(model)}", False)


def paper_model(*, seed: int = 0) -> BenchModel:
    """The paper-size ``calolatent-ds2`` preset with random weights."""
    model = random_model(get_preset(PAPER_PRESET), seed=seed)
    return BenchModel("paper", PAPER_PRESET, model,
                      f"{PAPER_PRESET} preset, random weights and placeholder statistics (the "
                      f"cost does not depend on their values); {_n_params(model)}", False)


# ---------------------------------------------------------------------------- timing
def _raise_unless_oom(exc: RuntimeError, device: torch.device) -> bool:
    """True (after freeing the cache) for a GPU out-of-memory error; re-raise others."""
    if device.type != "cuda" or not (isinstance(exc, torch.cuda.OutOfMemoryError)
                                      or "out of memory" in str(exc)):
        raise exc
    torch.cuda.empty_cache()
    return True


def time_model(bm: BenchModel, device: torch.device, batches: Sequence[int],
               settings: BenchSettings, *, log: Callable[[str], None] | None = None
               ) -> list[dict[str, Any]]:
    """Rows of ms per shower of every part (layer, latent, decoder, total) and sampler
    of ``bm`` on ``device`` at each batch size; a GPU cell that runs out of memory gives
    rows with ``ms`` None and ``status`` "out of memory"."""
    say = log or (lambda msg: None)
    model = bm.model
    model.to(device)
    sync = _sync(device)
    timing = dict(repeats=settings.repeats, max_seconds=settings.max_seconds,
                  long_call_s=settings.long_call_s)
    rows: list[dict[str, Any]] = []

    def row(b: int, part: str, sampler: str, nfe: int, t: TimedCall | None,
            status: str = "ok") -> dict[str, Any]:
        return {"model": bm.name, "role": bm.role, "device": device.type,
                "threads": torch.get_num_threads() if device.type == "cpu" else None,
                "batch": b, "part": part, "sampler": sampler, "nfe": nfe,
                "ms": None if t is None else 1e3 * t.wall_s / b,
                "cpu_ms": None if t is None else 1e3 * t.cpu_s / b,
                "runs": 0 if t is None else t.runs,
                "kept_warmup": False if t is None else t.kept_warmup, "status": status}

    try:
        for b in batches:
            e = log_uniform_energies(b, settings.seed)
            gen = torch.Generator(device=device).manual_seed(settings.seed)
            decoded = False  # one decoder measurement per batch: it ignores the sampler
            for sampler in settings.samplers:
                nfe = model.nfe(sampler, sampler)
                oom = False
                u = z = None
                try:
                    u = model.sample_layer_features(e, generator=gen, sampler=sampler)
                    z = model.sample_latent(e, u, generator=gen, sampler=sampler)
                except RuntimeError as exc:
                    oom = _raise_unless_oom(exc, device)
                parts: list[tuple[str, str, int, Callable[[], Any]]] = [
                    ("layer", sampler, nfe["layer"], partial(
                        model.sample_layer_features, e, generator=gen, sampler=sampler)),
                    ("latent", sampler, nfe["latent"], partial(
                        model.sample_latent, e, u, generator=gen, sampler=sampler)),
                ]
                if not decoded:
                    parts.append(("decoder", "any", nfe["decoder"],
                                  partial(model.decode, z, u, e)))
                    decoded = True
                parts.append(("total", sampler, sum(nfe.values()), partial(
                    model.sample, e, batch_size=b, generator=gen, layer_sampler=sampler,
                    latent_sampler=sampler)))
                for part, label, n, fn in parts:
                    if not oom:
                        try:
                            rows.append(row(b, part, label, n, time_call(fn, sync, **timing)))
                            continue
                        except RuntimeError as exc:
                            oom = _raise_unless_oom(exc, device)
                    # after running out of memory, the rest of this sampler's cell is skipped
                    rows.append(row(b, part, label, n, None, "out of memory"))
                tot = rows[-1]
                say(f"  {bm.name} {device.type} batch {b} {sampler}: "
                    + (tot["status"] if tot["ms"] is None else
                       f"{tot['ms']:.3f} ms/shower ({tot['runs']} timed call(s))"))
    finally:
        model.to("cpu")
    return rows


def time_reference(energies_mev: Tensor, runs: int, seed: int = 0) -> dict[str, Any]:
    """GFlash ds2 (``simulate_showers``) for ``energies_mev`` on ONE CPU thread: median
    ms per shower over ``runs`` runs (different seeds), after a warm-up."""
    from caloforge.simulation import simulate_showers

    geo = get_geometry("ds2")
    e = energies_mev.numpy()
    with _threads(1):
        simulate_showers(geo, energies=e[:min(5, len(e))], seed=seed)  # warm-up
        walls = []
        for r in range(runs):
            t0 = time.perf_counter()
            simulate_showers(geo, energies=e, seed=seed + 1 + r)
            walls.append(time.perf_counter() - t0)
    ms = [1e3 * w / len(e) for w in walls]
    return {"simulator": "caloforge.simulation.simulate_showers (GFlash ds2)",
            "ms": statistics.median(ms), "run_ms": ms, "runs": runs,
            "showers_per_run": len(e)}


# -------------------------------------------------------------------------- fidelity
def measure_fidelity(bm: BenchModel, samplers: Sequence[str], n: int, *, seed: int = 0,
                     batch_size: int = 1000, device: str | torch.device = "cpu",
                     classifier_preset: str = "cpu", epochs: int | None = None,
                     min_per_class: int = 100) -> dict[str, Any]:
    """Low-level classifier AUC of ``n`` showers of each sampler against ``n`` GFlash
    showers of the same energies (both at the ds2 threshold), and each AUC minus that
    of ``em-200`` (when among ``samplers``). The showers are generated on ``device``
    from one seed per sampler (the same for all, drawn on the CPU)."""
    from caloforge.evaluation import (
        apply_threshold,
        classifier_test,
        default_threshold,
        low_level_inputs,
    )
    from caloforge.simulation import simulate_showers

    geo = bm.model.geometry
    thr = default_threshold(geo)
    e = log_uniform_energies(n, seed + 1000)  # not the timing energies
    ref = simulate_showers(geo, energies=e.numpy(), seed=seed + 1001)
    x_ref = low_level_inputs(e.numpy(), apply_threshold(ref.showers, thr))
    aucs: dict[str, float] = {}
    bm.model.to(device)
    try:
        for s in samplers:
            gen = torch.Generator().manual_seed(seed + 1002)
            showers = bm.model.sample(e, batch_size=batch_size, generator=gen,
                                      layer_sampler=s, latent_sampler=s)
            x_gen = low_level_inputs(e.numpy(), apply_threshold(showers.numpy(), thr))
            aucs[s] = float(classifier_test(x_ref, x_gen, preset=classifier_preset, seed=seed,
                                            epochs=epochs, min_per_class=min_per_class).auc)
    finally:
        bm.model.to("cpu")
    base = aucs.get(PAPER_SAMPLER)
    return {"model": bm.name, "showers": n, "classifier": f"low-level, {classifier_preset}",
            "auc": aucs,
            "delta_vs_em200": {s: (a - base if base is not None else None)
                               for s, a in aucs.items()}}


# --------------------------------------------------------------------------- targets
def target_status(rows: Sequence[dict[str, Any]], fidelity: dict[str, Any] | None, *,
                  trained: bool, samplers: Sequence[str] = FAST_SAMPLERS) -> dict[str, Any]:
    """The issue's target from measured numbers only: some fast sampler under
    :data:`TARGET_MS` per shower (tiny, CPU, batch 1000, whole ``sample``) with an AUC at
    most :data:`TARGET_AUC_DELTA` above em-200's.

    Per sampler: ``time`` is "met" / "MISSED" / "not measured"; ``fidelity`` is "met" /
    "MISSED" / "not measured" / "not judged (random weights)". Overall: "met" when one
    sampler meets both; "MISSED" when none can (every sampler missed the time or the
    fidelity); else "not judged".
    """
    role, dev, batch = TARGET_CELL
    per: dict[str, dict[str, Any]] = {}
    for s in samplers:
        got = [r for r in rows if (r["role"], r["device"], r["batch"], r["part"],
                                   r["sampler"]) == (role, dev, batch, "total", s)]
        ms = got[0]["ms"] if got else None
        t = "not measured" if ms is None else ("met" if ms < TARGET_MS else "MISSED")
        delta = None
        if not trained:
            f = "not judged (random weights)"
        elif fidelity is None or fidelity["delta_vs_em200"].get(s) is None:
            f = "not measured"
        else:
            delta = fidelity["delta_vs_em200"][s]
            f = "met" if delta <= TARGET_AUC_DELTA else "MISSED"
        per[s] = {"ms": ms, "time": t, "auc_delta": delta, "fidelity": f}
    if any(p["time"] == "met" and p["fidelity"] == "met" for p in per.values()):
        overall = "met"
    elif per and all("MISSED" in (p["time"], p["fidelity"]) for p in per.values()):
        overall = "MISSED"
    else:
        overall = "not judged"
    return {"cell": {"role": role, "device": dev, "batch": batch}, "target_ms": TARGET_MS,
            "target_auc_delta": TARGET_AUC_DELTA, "samplers": per, "status": overall}


# ------------------------------------------------------------------------------- run
def run(settings: BenchSettings, *, models: Sequence[BenchModel] | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every model, device, batch size and sampler of ``settings``, the reference
    simulator, and (``fidelity_showers`` > 0) the classifier AUCs of the tiny model.
    ``models`` replaces the default tiny and paper-size models (their ``role`` picks the
    batch sizes)."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    load_start = _load()
    if models is None:
        models = [small_model(seed=settings.seed)]
        if settings.paper:
            models.append(paper_model(seed=settings.seed))
    devices = [torch.device("cpu")]
    if settings.gpu and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    threads = settings.threads or available_cpus()
    rows: list[dict[str, Any]] = []
    with _threads(threads):
        for bm in models:
            for device in devices:
                batches = (settings.gpu_batches if device.type == "cuda" else
                           settings.paper_batches if bm.role == "paper" else
                           settings.tiny_batches)
                rows += time_model(bm, device, batches, settings, log=say)
    reference = time_reference(log_uniform_energies(settings.reference_showers, settings.seed),
                               settings.reference_runs, settings.seed)
    for r in rows:
        r["speedup"] = reference["ms"] / r["ms"] if r["ms"] else None
    fidelity = None
    tiny = next((bm for bm in models if bm.role == "tiny"), None)
    if settings.fidelity_showers and tiny is not None and tiny.trained:
        say(f"  fidelity: {settings.fidelity_showers} showers per sampler ...")
        with _threads(threads):
            fidelity = measure_fidelity(tiny, settings.samplers, settings.fidelity_showers,
                                        seed=settings.seed, device=devices[-1])
    fast = [s for s in settings.samplers if s != PAPER_SAMPLER]
    target = target_status(rows, fidelity, trained=tiny is not None and tiny.trained,
                           samplers=fast)
    return {
        "benchmark": "calolatent-ds2 generation time per shower, part by part",
        "energies": "log-uniform 1 GeV - 1 TeV",
        "machine": machine_description(),
        "torch_threads_cpu": threads,
        "load_average_start": load_start,
        "load_average_end": _load(),
        "settings": dataclasses.asdict(settings),
        "models": {bm.name: {"role": bm.role, "description": bm.description,
                             "trained": bm.trained, "parameters": bm.model.n_parameters()}
                   for bm in models},
        "reference": reference,
        "rows": rows,
        "fidelity": fidelity,
        "target": target,
        "paper_ms_per_shower": {"ms": PAPER_MS_PER_SHOWER, "batch": PAPER_BATCH,
                                "sampler": PAPER_SAMPLER, "hardware": "not stated"},
    }


# ---------------------------------------------------------------------------- output
def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(result: dict[str, Any]) -> str:
    """The result as text: machine, models, reference, the table, fidelity, the target."""
    m = result["machine"]
    ref = result["reference"]
    s = result["settings"]
    lines = [
        "CaloLatent ds2 generation time per shower, part by part (energies "
        + result["energies"] + ")",
        "machine: {} ({} usable cores, {} GiB), GPU: {}, torch {} ({} thread(s) on CPU), "
        "caloforge {}; load average {} at the start, {} at the end".format(
            m["cpu_model"], m["cpu_usable"], m["memory_gib"], m["gpu"] or "none", m["torch"],
            result["torch_threads_cpu"], m["caloforge"], result["load_average_start"],
            result["load_average_end"]),
    ]
    lines += [f"model {name}: {info['description']}" for name, info in result["models"].items()]
    roles = {info["role"] for info in result["models"].values()}
    paper_cells = (f"paper-size CPU batches {list(s['paper_batches'])} (the default 1, 100 "
                   "keeps a CPU run short; more with --paper-batches)" if "paper" in roles
                   else "paper-size model not timed")
    lines += [
        f"cells: tiny CPU batches {list(s['tiny_batches'])}; {paper_cells}; GPU batches "
        f"{list(s['gpu_batches'])} when CUDA is available "
        f"({'timed' if s['gpu'] and m['gpu'] else 'not timed: no GPU or --no-gpu'})",
        f"reference: {ref['simulator']}, CPU, 1 thread: {ref['ms']:.3f} ms/shower (median of "
        f"{ref['runs']} runs x {ref['showers_per_run']} showers)",
        "",
        "| model | device | batch | part | sampler | NFE | ms/shower | CPU ms/shower | calls | "
        "speed-up vs reference | paper | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    target = result["target"]
    cell = target["cell"]
    for r in result["rows"]:
        paper = (f"{PAPER_MS_PER_SHOWER:g} ms" if r["role"] == "paper" and r["part"] == "total"
                 and r["sampler"] == PAPER_SAMPLER and r["batch"] == PAPER_BATCH else "")
        tgt = ""
        if ((r["role"], r["device"], r["batch"]) == (cell["role"], cell["device"], cell["batch"])
                and r["part"] == "total" and r["sampler"] in target["samplers"]):
            st = target["samplers"][r["sampler"]]
            tgt = f"< {TARGET_MS:g} ms: {st['time']}; AUC: {st['fidelity']}"
        ms = r["status"] if r["ms"] is None else f"{r['ms']:.3f}"
        calls = f"{r['runs']}{' w' if r['kept_warmup'] else ''}"
        sp = "-" if r.get("speedup") is None else f"x{r['speedup']:.3g}"
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {r['part']} | "
                     f"{r['sampler']} | {r['nfe']} | {ms} | {_f(r['cpu_ms'])} | {calls} | "
                     f"{sp} | {paper} | {tgt} |")
    fid = result["fidelity"]
    lines.append("")
    if fid is None:
        lines.append("fidelity: not measured (--fidelity-showers N, trained tiny model only)")
    else:
        lines.append(f"fidelity ({fid['model']}, {fid['showers']} showers per sampler against "
                     f"GFlash, {fid['classifier']} classifier AUC; 0.5 = indistinguishable):")
        for smp, auc in fid["auc"].items():
            d = fid["delta_vs_em200"][smp]
            lines.append(f"  {smp}: AUC {auc:.4f}"
                         + ("" if d is None else f" ({d:+.4f} vs {PAPER_SAMPLER})"))
    lines += ["", f"Target (tiny, CPU, batch {cell['batch']}: a fast sampler under "
              f"{TARGET_MS:g} ms/shower with AUC at most {TARGET_AUC_DELTA} above "
              f"{PAPER_SAMPLER}'s): {target['status']}"]
    for smp, st in target["samplers"].items():
        delta = "-" if st["auc_delta"] is None else f"{st['auc_delta']:+.4f}"
        lines.append(f"  {smp}: {_f(st['ms'])} ms/shower ({st['time']}); AUC {delta} vs "
                     f"{PAPER_SAMPLER} ({st['fidelity']})")
    lines += ["", "ms/shower = median wall time of a call / batch, after a warm-up call; calls = "
              "timed calls (w: a long warm-up kept as the measurement); CPU ms = process CPU "
              "time (all threads); NFE = network evaluations per batch; layer = "
              "sample_layer_features, latent = sample_latent, decoder = decode (network, inverse "
              "preprocessing, renormalisation, threshold, voxel map if fitted; the same for every "
              "sampler), total = "
              "one sample call (the parts plus input checks); the reference is GFlash, not "
              "GEANT4; the paper's 19 ms is for 100 showers on unstated hardware."]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``result`` to ``path`` atomically."""
    from caloforge.io import atomic_path

    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    d = BenchSettings()
    p.add_argument("--threads", type=int, default=None,
                   help="torch and BLAS threads for the CPU cells (default: the usable cores)")
    p.add_argument("--tiny-batches", type=_ints, default=d.tiny_batches)
    p.add_argument("--paper-batches", type=_ints, default=d.paper_batches,
                   help="CPU batch sizes of the paper-size model (default: 1,100)")
    p.add_argument("--gpu-batches", type=_ints, default=d.gpu_batches)
    p.add_argument("--samplers", type=_names, default=d.samplers,
                   help=f"comma-separated samplers (default: {','.join(SAMPLERS)})")
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="time budget per measurement: no new call starts after it")
    p.add_argument("--long-call", type=float, default=d.long_call_s,
                   help="a warm-up call longer than this (s) is kept as the measurement")
    p.add_argument("--reference-showers", type=int, default=d.reference_showers)
    p.add_argument("--reference-runs", type=int, default=d.reference_runs)
    p.add_argument("--no-paper", action="store_true", help="skip the paper-size model")
    p.add_argument("--no-gpu", action="store_true", help="CPU only")
    p.add_argument("--fidelity-showers", type=int, default=d.fidelity_showers,
                   help="showers per sampler for the classifier AUCs (default 0: off)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    try:
        settings = BenchSettings(
            threads=args.threads, tiny_batches=args.tiny_batches,
            paper_batches=args.paper_batches, gpu_batches=args.gpu_batches,
            samplers=args.samplers, repeats=args.repeats, max_seconds=args.max_seconds,
            long_call_s=args.long_call, reference_showers=args.reference_showers,
            reference_runs=args.reference_runs, paper=not args.no_paper,
            gpu=not args.no_gpu, fidelity_showers=args.fidelity_showers, seed=args.seed)
    except ConfigError as exc:
        p.error(str(exc))
    result = run(settings)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
