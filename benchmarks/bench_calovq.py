"""Generation time per shower of the paper-size Calo-VQ ds2 model (Table 7 layout).

Usage::

    python benchmarks/bench_calovq.py                    # all CPU threads
    python benchmarks/bench_calovq.py --threads 1 --json bench_calovq.json

Prints the machine, then for each device and batch size the time per shower of stage 1
(codebook lookup + decoder, ``vqvae.decode_indices``), of stage 2 (GPT sampling of all
``seq_len`` tokens with the key/value cache, ``sample_tokens``) and of the whole
generation (both in one call), as the paper's Table 7 splits them; and the speed-up over
the reference simulator (GFlash, ``simulate_showers`` on ds2 over the default spectrum)
timed in the same run on one CPU thread. CPU at batch sizes 1, 100 and 1000; GPU, when
one is present, at 1, 100, 1000 and 10000.

The models are ``VQVAEConfig()`` and ``GPTConfig()`` (paper size, about 3.11 M + 0.24 M
parameters) with randomly initialised weights: generation time does not depend on the
weights' values. The timing functions take ``(vqvae, gpt)`` modules, so a trained pair
can be timed the same way.

Targets (issue 6): CPU under 5 ms per shower at batch 1000 and under 50 ms at batch 1;
GPU under 0.1 ms at batch 10000.

A second table times generation to a file end to end (``generate_to_file``, what
``caloforge generate`` runs after loading the model: sampling, the NaN check, the
background writer with each ``--compression``) next to the model's own time for the same
showers and batches (``sample`` calls alone), with the shipped ``calovq-ds2-tiny``:
``--file-showers`` showers at batch 1000 on the CPU, and 100k at batch 10 000 on a GPU.
Target (issue 10): end to end within 1.3x of the model's own time on this CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from caloforge.evaluation.timing import machine_description
from caloforge.models import GPT, CylindricalVQVAE, GPTConfig, VQVAEConfig
from caloforge.sampling import sample_tokens

CPU_BATCHES = (1, 100, 1000)
GPU_BATCHES = (1, 100, 1000, 10_000)
TARGETS_MS = {("cpu", 1000): 5.0, ("cpu", 1): 50.0, ("cuda", 10_000): 0.1}


def paper_models(seed: int = 0) -> tuple[CylindricalVQVAE, GPT]:
    """Paper-size ds2 VQ-VAE and GPT with random weights, in eval mode."""
    torch.manual_seed(seed)
    vqvae = CylindricalVQVAE(VQVAEConfig()).eval()
    gpt = GPT(GPTConfig()).eval()
    return vqvae, gpt


def n_r_tokens(vqvae: nn.Module, gpt: nn.Module) -> int:
    """R tokens in front of the shower codes (Eq. 7): seq_len - shower codes."""
    n = gpt.config.seq_len - vqvae.config.n_shower_codes
    if n < 0:
        raise ValueError("the GPT's seq_len is shorter than the VQ-VAE's shower codes")
    return n


def stage2(gpt: nn.Module, cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """GPT sampling: (N, cond) -> tokens (N, seq_len)."""
    return sample_tokens(gpt, cond, generator=generator)


def stage1(vqvae: nn.Module, codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Codebook lookup + decoder: codes (N, L) -> energy fractions (N, C, Z, A)."""
    return vqvae.decode_indices(codes, cond)


def generate(
    vqvae: nn.Module, gpt: nn.Module, cond: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Both stages: tokens, then the shower codes decoded into fractions."""
    tokens = stage2(gpt, cond, generator)
    return stage1(vqvae, tokens[:, n_r_tokens(vqvae, gpt) :], cond)


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _time(
    fn: Callable[[Any], Any],
    make_input: Callable[[int], Any],
    batch: int,
    n_repeats: int,
    sync: Callable[[], None],
    max_seconds: float,
) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of repeated calls after one warm-up call.

    The CPU time is kept next to the wall time because the development machine is
    shared: wall time well above CPU time / threads means other work held the cores.
    """
    fn(make_input(batch))
    sync()
    wall, cpu = [], []
    while len(wall) < max(1, n_repeats) and sum(wall) < max_seconds:
        x = make_input(batch)
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        fn(x)
        sync()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _repeats(batch: int) -> int:
    return 20 if batch == 1 else 5 if batch <= 100 else 3


def time_models(
    vqvae: nn.Module,
    gpt: nn.Module,
    device: torch.device,
    batch_sizes: tuple[int, ...],
    *,
    seed: int = 0,
    max_seconds: float = 30.0,
) -> list[dict[str, Any]]:
    """Median ms per shower of stage 1, stage 2 and the total at each batch size."""
    vqvae, gpt = vqvae.to(device).eval(), gpt.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n_codes = vqvae.config.n_codes
    n_sc = vqvae.config.n_shower_codes
    cond_dim = gpt.config.cond_in_dim
    sync = _sync(device)

    def cond_of(n: int) -> torch.Tensor:
        return torch.rand(n, cond_dim, generator=gen, device=device)

    def codes_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        codes = torch.randint(0, n_codes, (n, n_sc), generator=gen, device=device)
        return codes, cond_of(n)

    rows = []
    with torch.inference_mode():
        for b in batch_sizes:
            args = (b, _repeats(b), sync, max_seconds)
            w1, _ = _time(lambda a: stage1(vqvae, *a), codes_of, *args)
            w2, _ = _time(lambda c: stage2(gpt, c, gen), cond_of, *args)
            wt, ct = _time(lambda c: generate(vqvae, gpt, c, gen), cond_of, *args)
            ms = [1e3 * statistics.median(t) / b for t in (w1, w2, wt, ct)]
            rows.append(
                {
                    "device": device.type,
                    "threads": torch.get_num_threads() if device.type == "cpu" else None,
                    "batch_size": b,
                    "n_repeats": len(wt),
                    "stage1_ms": ms[0],
                    "stage2_ms": ms[1],
                    "total_ms": ms[2],
                    "total_cpu_ms": ms[3],
                }
            )
            print(f"  {device.type} batch {b}: done", file=sys.stderr, flush=True)
    return rows


def time_reference(n: int = 200, seed: int = 0) -> float:
    """GFlash ds2 seconds per shower over the default spectrum (best of two runs)."""
    from caloforge.geometry import get_geometry
    from caloforge.simulation import simulate_showers

    geo = get_geometry("ds2")
    simulate_showers(geo, 10, seed=seed)  # warm-up (imports, caches)
    best = float("inf")
    for i in range(2):
        t0 = time.perf_counter()
        simulate_showers(geo, n, seed=seed + 1 + i)
        best = min(best, time.perf_counter() - t0)
    return best / n


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    ref_ms = 1e3 * result["reference_s_per_shower"]
    lines = [
        "Calo-VQ ds2, paper size (VQ-VAE {:,} + GPT {:,} parameters; random weights)".format(
            result["parameters"]["vqvae"], result["parameters"]["gpt"]
        ),
        "machine: {} ({} usable cores, {} GiB), GPU: {}, torch {}, caloforge {}".format(
            m["cpu_model"], m["cpu_usable"], m["memory_gib"], m["gpu"] or "none",
            m["torch"], m["caloforge"],
        ),
        f"reference (GFlash ds2, default spectrum, CPU, {result['reference_threads']} thread): "
        f"{ref_ms:.3f} ms/shower",
        "",
        "| device | threads | batch | stage 1 ms | stage 2 ms | total ms/shower | "
        "total CPU ms/shower | speed-up vs reference | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        target = TARGETS_MS.get((r["device"], r["batch_size"]))
        tgt = "" if target is None else (
            f"< {target:g} ms: {'met' if r['total_ms'] < target else 'MISSED'}"
        )
        lines.append(
            f"| {r['device']} | {r['threads'] or '-'} | {r['batch_size']} | "
            f"{r['stage1_ms']:.3f} | {r['stage2_ms']:.3f} | {r['total_ms']:.3f} | "
            f"{r['total_cpu_ms']:.3f} | "
            f"{1e3 * result['reference_s_per_shower'] / r['total_ms']:.2f} | {tgt} |"
        )
    lines.append("")
    lines.append(
        "stage 1 = codebook lookup + decoder; stage 2 = GPT sampling of all tokens (KV cache); "
        "total = both in one call; medians of repeated calls after a warm-up; CPU ms = process "
        "CPU time (all threads; wall >> CPU / threads means the cores were shared)."
    )
    return "\n".join(lines)


def run(
    vqvae: nn.Module,
    gpt: nn.Module,
    *,
    threads: int | None = None,
    reference_showers: int = 200,
    cpu_batches: tuple[int, ...] = CPU_BATCHES,
    gpu_batches: tuple[int, ...] = GPU_BATCHES,
) -> dict[str, Any]:
    """Time (vqvae, gpt) on CPU (and GPU when present) and the reference simulator."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    params = {
        "vqvae": sum(p.numel() for p in vqvae.parameters()),
        "gpt": sum(p.numel() for p in gpt.parameters()),
    }
    rows = time_models(vqvae, gpt, torch.device("cpu"), cpu_batches)
    if torch.cuda.is_available():
        rows += time_models(vqvae, gpt, torch.device("cuda"), gpu_batches)
        vqvae.cpu(), gpt.cpu()
    # the reference simulator is vectorised numpy; time it on one thread as the
    # project's timing harness does, so that the speed-up does not depend on --threads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - timing on the default pool
        import contextlib

        limit = contextlib.nullcontext()
        ref_threads = "default"
    else:
        limit = threadpool_limits(1)
        ref_threads = 1
    with limit:
        ref = time_reference(reference_showers)
    return {
        "benchmark": "calovq-ds2 generation",
        "weights": "random initialisation (timing does not depend on weight values)",
        "parameters": params,
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "reference": "caloforge.simulation.simulate_showers(get_geometry('ds2'), n) (GFlash)",
        "reference_s_per_shower": ref,
        "reference_threads": ref_threads,
        "rows": rows,
        "targets_ms": {f"{d}@{b}": v for (d, b), v in TARGETS_MS.items()},
    }


FILE_TARGET_RATIO = 1.3


def time_to_file(device: torch.device, n: int, batch: int,
                 compressions: tuple[str | None, ...] = ("gzip", "lzf", None)
                 ) -> list[dict[str, Any]]:
    """ms/shower of the shipped model's own sampling and of generation to a file."""
    import os
    import tempfile

    from caloforge.pipelines import generate_to_file, load_generator

    model = load_generator("calovq-ds2-tiny", map_location=device)
    energies = np.geomspace(1e3, 1e6, n)
    sync = _sync(device)

    def model_only() -> None:
        g = torch.Generator(device=device).manual_seed(0)
        for lo in range(0, n, batch):
            model.sample(torch.from_numpy(energies[lo:lo + batch]), batch_size=batch,
                         generator=g).cpu()
        sync()

    model.sample(torch.from_numpy(energies[:batch]), batch_size=batch)  # warm-up
    t0 = time.perf_counter()
    model_only()
    own = (time.perf_counter() - t0) / n
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for comp in compressions:
            path = os.path.join(tmp, f"{comp}.h5")
            t0 = time.perf_counter()
            generate_to_file(model, energies, path, batch_size=batch, seed=0, progress=False,
                             compression=comp)
            total = (time.perf_counter() - t0) / n
            rows.append({"device": device.type, "showers": n, "batch_size": batch,
                         "compression": comp or "none", "model_ms": 1e3 * own,
                         "file_ms": 1e3 * total, "ratio": total / own,
                         "kib_per_shower": os.path.getsize(path) / n / 1024})
    return rows


def format_file_table(rows: list[dict[str, Any]]) -> str:
    lines = ["", "", "Generation to a file, shipped calovq-ds2-tiny (end to end vs the model alone)",
             "", "| device | showers | batch | compression | model ms/shower | to file ms/shower "
             "| ratio | KiB/shower | target |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = "" if r["device"] != "cpu" else (
            f"< {FILE_TARGET_RATIO}x: {'met' if r['ratio'] < FILE_TARGET_RATIO else 'MISSED'}")
        lines.append(f"| {r['device']} | {r['showers']} | {r['batch_size']} | {r['compression']} "
                     f"| {r['model_ms']:.3f} | {r['file_ms']:.3f} | {r['ratio']:.2f} | "
                     f"{r['kib_per_shower']:.1f} | {tgt} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's default, all usable cores)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--reference-showers", type=int, default=200,
                   help="showers per timed reference-simulator run")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--file-showers", type=int, default=10_000,
                   help="showers of the CPU generation-to-file timing (0: skip it)")
    args = p.parse_args(argv)
    vqvae, gpt = paper_models(args.seed)
    result = run(vqvae, gpt, threads=args.threads, reference_showers=args.reference_showers)
    file_rows = []
    if args.file_showers:
        file_rows = time_to_file(torch.device("cpu"), args.file_showers, 1000)
        if torch.cuda.is_available():
            file_rows += time_to_file(torch.device("cuda"), 100_000, 10_000)
    result["to_file"] = file_rows
    print(format_table(result) + (format_file_table(file_rows) if file_rows else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
