"""Timing harness: wall time per shower of any generator, on the machine at hand.

A generator is any callable ``gen(incident_energies) -> showers`` taking a 1-D tensor (or
numpy array, with ``input_kind="numpy"``) of incident energies in MeV. It is timed at
several batch sizes, on CPU with one thread and with all threads, and on GPU when one
is present; each setting is warmed up first and the median of repeated calls is kept.
A reference simulator's time per shower (measured here on one CPU thread, or given as a
number) is the denominator of the reported speed-ups.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import CaloforgeError

__all__ = ["TimingRow", "TimingResult", "limit_threads", "machine_description", "time_callable",
           "time_generator"]

DEFAULT_BATCH_SIZES = (1, 100, 10_000)


class TimingError(CaloforgeError, ValueError):
    """The timing settings are invalid or the generator failed."""


@dataclass
class TimingRow:
    """Time per shower of one setting.

    Attributes:
        device: ``"cpu"`` or a CUDA device name such as ``"cuda"``.
        threads: CPU threads allowed (torch intra-op and BLAS pools); None on GPU.
        batch_size: showers per call.
        n_repeats: timed calls (after warm-up).
        median_s_per_shower, mean_s_per_shower, std_s_per_shower: seconds per shower over
            the timed calls (call wall time / batch size).
        speedup: reference time per shower / median time per shower; None without a reference.
    """

    device: str
    threads: int | None
    batch_size: int
    n_repeats: int
    median_s_per_shower: float
    mean_s_per_shower: float
    std_s_per_shower: float
    speedup: float | None = None


@dataclass
class TimingResult:
    """Timings of one generator: rows per setting plus where and how they were taken."""

    rows: list[TimingRow]
    machine: dict[str, Any]
    reference_s_per_shower: float | None = None
    reference: str | None = None
    generator: str = "generator"
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, "reference": self.reference,
                "reference_s_per_shower": self.reference_s_per_shower,
                "settings": self.settings, "machine": self.machine,
                "rows": [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimingResult:
        return cls([TimingRow(**r) for r in d["rows"]], d["machine"],
                   d.get("reference_s_per_shower"), d.get("reference"),
                   d.get("generator", "generator"), d.get("settings", {}))

    def to_json(self, path: str | os.PathLike) -> None:
        from ..io import atomic_path

        with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TimingResult:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def row(self, device: str, threads: int | None, batch_size: int) -> TimingRow:
        for r in self.rows:
            if (r.device, r.threads, r.batch_size) == (device, threads, batch_size):
                return r
        raise KeyError((device, threads, batch_size))

    def to_table(self) -> str:
        """A plain-text table: one line per setting, times in ms per shower."""
        head = f"{'device':<8} {'threads':>7} {'batch':>7} {'repeats':>7} " \
               f"{'ms/shower (median)':>19} {'+- std':>10} {'speed-up':>9}"
        lines = [f"{self.generator} on {self.machine.get('cpu_model', '?')}"
                 + (f" / {self.machine['gpu']}" if self.machine.get("gpu") else ""), head,
                 "-" * len(head)]
        for r in self.rows:
            sp = f"x{r.speedup:.3g}" if r.speedup is not None else "-"
            th = str(r.threads) if r.threads is not None else "-"
            lines.append(f"{r.device:<8} {th:>7} {r.batch_size:>7} {r.n_repeats:>7} "
                         f"{r.median_s_per_shower * 1e3:>19.4g} "
                         f"{r.std_s_per_shower * 1e3:>10.2g} {sp:>9}")
        if self.reference_s_per_shower is not None:
            lines.append(f"reference ({self.reference}): "
                         f"{self.reference_s_per_shower * 1e3:.4g} ms/shower")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


# ------------------------------------------------------------------ machine description
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_description() -> dict[str, Any]:
    """Where timings were taken: CPU model, cores, memory, library versions, GPU."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    from .._version import __version__

    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "caloforge": __version__,
    }


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op pool and the BLAS/OpenMP pools of numpy to ``n`` threads
    inside the block (None: leave them), restored afterwards."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # numpy's BLAS keeps its own pool size then
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(n)
        with limits:
            yield
    finally:
        torch.set_num_threads(before)


def _energies(n: int, energy_range: tuple[float, float], log_uniform: bool,
              rng: np.random.Generator) -> np.ndarray:
    lo, hi = energy_range
    if log_uniform:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return rng.uniform(lo, hi, n)


def time_callable(
    fn: Callable[[Any], Any],
    make_input: Callable[[int], Any],
    batch_size: int,
    *,
    n_warmup: int = 1,
    n_repeats: int = 5,
    max_seconds: float | None = 60.0,
    synchronize: Callable[[], None] | None = None,
) -> list[float]:
    """Wall times (s) of ``n_repeats`` calls ``fn(make_input(batch_size))`` after warm-up.

    Inputs are made before each clock starts, so only the call is timed. Repeating stops
    early once ``max_seconds`` of timed calls have passed (at least one call is timed),
    so a slow generator at a large batch does not hold the harness for long.
    ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before starting and before
    stopping the clock, so asynchronous GPU work is counted.
    """
    sync = synchronize or (lambda: None)
    for _ in range(n_warmup):
        fn(make_input(batch_size))
    sync()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, n_repeats)):
        x = make_input(batch_size)
        sync()
        t0 = time.perf_counter()
        fn(x)
        sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent >= max_seconds:
            break
    return times


def _row(device: str, threads: int | None, batch: int, times: list[float],
         ref: float | None) -> TimingRow:
    per = [t / batch for t in times]
    med = statistics.median(per)
    return TimingRow(device, threads, batch, len(per), med, statistics.fmean(per),
                     statistics.pstdev(per) if len(per) > 1 else 0.0,
                     (ref / med) if ref is not None and med > 0 else None)


# ------------------------------------------------------------------------------ harness
def time_generator(
    gen: Callable[[Any], Any],
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    thread_counts: Sequence[int] | None = None,
    devices: Sequence[str] | None = None,
    input_kind: str = "torch",
    energy_range: tuple[float, float] = (1_000.0, 1_000_000.0),
    log_uniform: bool = True,
    n_warmup: int = 1,
    n_repeats: int = 5,
    max_seconds: float | None = 60.0,
    reference: float | Callable[[Any], Any] | None = None,
    reference_input_kind: str = "numpy",
    reference_batch_size: int = 100,
    reference_name: str | None = None,
    name: str | None = None,
    json_path: str | os.PathLike | None = None,
    seed: int = 0,
) -> TimingResult:
    """Time a shower generator per shower at several batch sizes, threads and devices.

    Args:
        gen: ``gen(incident_energies)`` with energies in MeV of shape (B,), a float32
            torch tensor on the timed device (``input_kind="torch"``) or a float64 numpy
            array (``input_kind="numpy"``, CPU only). Its output is not inspected.
        batch_sizes: showers per call (default 1, 100, 10000).
        thread_counts: CPU thread counts (default: 1 and all usable cores).
        devices: ``"cpu"`` and/or CUDA devices (default: CPU, plus ``"cuda"`` when
            ``torch.cuda.is_available()`` and the input kind is torch).
        energy_range: incident energies (MeV) drawn uniformly (in log with ``log_uniform``).
        n_warmup, n_repeats, max_seconds: see :func:`time_callable`.
        reference: the reference simulator's time per shower in seconds, or a callable
            (energies -> showers) timed here at ``reference_batch_size`` on one CPU thread,
            the usual denominator of speed-ups (CaloClouds II: GEANT4 on one core).
        reference_input_kind: ``"numpy"`` or ``"torch"``, what the reference callable takes.
        name, reference_name: labels in the table and the JSON.
        json_path: where to write the result as JSON (optional).
        seed: seed of the incident energies.

    Returns:
        :class:`TimingResult` with one row per (device, threads, batch size).
    """
    import torch

    if input_kind not in ("torch", "numpy") or reference_input_kind not in ("torch", "numpy"):
        raise TimingError("input kinds must be 'torch' or 'numpy'")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise TimingError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if energy_range[0] <= 0 or energy_range[1] < energy_range[0]:
        raise TimingError(f"bad energy range {energy_range}")
    if thread_counts is None:
        all_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        thread_counts = sorted({1, all_threads})
    if devices is None:
        devices = ["cpu"]
        if input_kind == "torch" and torch.cuda.is_available():
            devices.append("cuda")
    for d in devices:
        if d != "cpu" and input_kind == "numpy":
            raise TimingError(f"a numpy generator cannot run on {d!r}")
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise TimingError(f"device {d!r} requested but CUDA is not available")

    rng = np.random.default_rng(seed)

    def maker(kind: str, device: str) -> Callable[[int], Any]:
        def make(n: int):
            e = _energies(n, energy_range, log_uniform, rng)
            if kind == "numpy":
                return e
            return torch.as_tensor(e, dtype=torch.float32, device=device)
        return make

    ref_s: float | None
    ref_desc: str | None = reference_name
    if reference is None:
        ref_s = None
    elif callable(reference):
        with limit_threads(1), torch.no_grad():
            t = time_callable(reference, maker(reference_input_kind, "cpu"), reference_batch_size,
                              n_warmup=n_warmup, n_repeats=n_repeats, max_seconds=max_seconds)
        ref_s = statistics.median(t) / reference_batch_size
        ref_desc = ref_desc or (f"{getattr(reference, '__name__', 'reference')}, 1 CPU thread, "
                                f"batch {reference_batch_size}")
    else:
        ref_s = float(reference)
        if not ref_s > 0:
            raise TimingError(f"reference time per shower must be > 0, got {reference}")
        ref_desc = ref_desc or "given"

    rows: list[TimingRow] = []
    try:
        for device in devices:
            is_cuda = device.startswith("cuda")
            sync = (lambda d=device: torch.cuda.synchronize(d)) if is_cuda else None
            for threads in ([None] if is_cuda else thread_counts):
                for b in batch_sizes:
                    with limit_threads(threads), torch.no_grad():
                        times = time_callable(gen, maker(input_kind, device), int(b),
                                              n_warmup=n_warmup, n_repeats=n_repeats,
                                              max_seconds=max_seconds, synchronize=sync)
                    rows.append(_row(device, threads, int(b), times, ref_s))
    except CaloforgeError:
        raise
    except Exception as exc:  # a user's generator failing is reported with the setting
        raise TimingError(f"the generator failed while timing ({type(exc).__name__}: {exc})") \
            from exc

    result = TimingResult(
        rows, machine_description(), ref_s, ref_desc,
        name or getattr(gen, "__name__", type(gen).__name__),
        {"batch_sizes": [int(b) for b in batch_sizes], "thread_counts": list(thread_counts),
         "devices": list(devices), "input_kind": input_kind,
         "energy_range_mev": list(energy_range), "log_uniform": log_uniform,
         "n_warmup": n_warmup, "n_repeats": n_repeats, "max_seconds": max_seconds,
         "seed": seed, "statistic": "median over repeats of call wall time / batch size"},
    )
    if json_path is not None:
        result.to_json(json_path)
    return result
