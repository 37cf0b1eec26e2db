"""Generating showers into a file, streamed in chunks: a CaloChallenge file for voxel
models, a point-cloud (showerdata layout) file for point-cloud models."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..io import BackgroundWrites, ShowerData, ShowerWriter
from ..threads import available_cpus
from .base import ShowerGenerator, check_finite, validate_energies

__all__ = ["CHUNK_BYTES", "CPU_BATCH_BYTES", "SMALL_BATCH", "default_batch_size",
           "generate_points_to_file", "generate_to_file"]

#: showers held in memory between writes, as float32 bytes (ds2: 5 000, ds3: 800); two
#: buffers of half this size alternate, one filled by the model while the other is
#: written on a background thread
CHUNK_BYTES = 128 * 2**20

#: float32 bytes of one batch of showers when the caller gives no batch size on a CPU: a
#: model's activations grow with its batch (measured, random-weight calovq-ds3-tiny, one
#: thread: peak 1.31 GB at batch 1000, 0.72 GB at 250), so large geometries take smaller
#: batches (ds3: 258; ds2 and ds1 keep 1000)
CPU_BATCH_BYTES = 40 * 2**20


def default_batch_size(geometry, device: str | torch.device = "cpu") -> int:
    """The batch of ``caloforge generate`` when ``--batch-size`` is not given: 1000, or
    fewer on a CPU for geometries of many voxels (:data:`CPU_BATCH_BYTES`)."""
    n_voxels = getattr(geometry, "n_voxels", None)
    if torch.device(device).type != "cpu" or not n_voxels:
        return 1000
    return int(max(1, min(1000, CPU_BATCH_BYTES // (4 * n_voxels))))


#: Batches of fewer showers than this sample on one CPU thread unless the caller chose a
#: thread count: handing out and joining the work of a tiny batch costs more than the
#: extra threads save, and on a busy machine idle threads spin (measured: ``generate``
#: with 2 threads 2.3x slower than with 1, at 3x the CPU time, on a loaded 2-core box).
SMALL_BATCH = 64


@contextlib.contextmanager
def _sampling_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (None: leave them), restore afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _choose_threads(threads: int | None, batch: int, device: torch.device) -> int | None:
    """Threads for the sampling calls: the caller's choice, else 1 for small CPU batches,
    else None (keep the process setting, :func:`caloforge.threads.set_threads`)."""
    if threads is not None:
        return int(threads)
    if device.type == "cpu" and batch < SMALL_BATCH:
        return 1
    return None


def _warn_outside_training_range(generator: ShowerGenerator, energies: np.ndarray) -> None:
    """Warn when energies leave the range the model was trained on: a network evaluated
    far outside its training conditions extrapolates, which nothing checks."""
    lo_hi = getattr(generator, "training_energy_range", None)
    if lo_hi is None or len(energies) == 0:
        return
    lo, hi = lo_hi
    outside = (energies < 0.9 * lo) | (energies > 1.1 * hi)
    if outside.any():
        warnings.warn(
            f"{int(outside.sum())} of {len(energies)} incident energies lie outside the "
            f"model's training range {lo:.4g} - {hi:.4g} MeV (by more than 10 %); showers "
            "there are extrapolations", stacklevel=3)


def generate_to_file(generator: ShowerGenerator, energies: np.ndarray, path: str | os.PathLike,
                     *, batch_size: int = 1000, seed: int = 0, chunk_size: int | None = None,
                     progress: bool = True, attrs: dict | None = None,
                     threshold_mev: float | None = None,
                     threads: int | None = None, compression: str | None = "gzip") -> None:
    """Sample one shower per incident energy (MeV) and write them atomically to ``path``.

    Memory holds two chunks: while the model fills one, the other is compressed and
    written on a background thread (gzip chunks are compressed outside h5py's lock, on
    several threads when the model runs on a GPU and the CPU cores are free). The
    progress bar moves every batch. ``compression``: ``"gzip"`` (default), ``"lzf"`` or
    ``None``, as :class:`~caloforge.io.ShowerWriter`; the stored values do not depend on
    it. The random
    stream is seeded once, so the output depends on ``seed``, the energies and
    ``batch_size`` only. Showers holding NaN or inf stop the run with
    :class:`~caloforge.errors.GenerationError` (nothing is written). ``threshold_mev``
    zeroes voxels below it after generation, on top of the model's own settings.
    ``threads`` sets torch's CPU threads for the sampling calls (restored afterwards);
    by default batches under :data:`SMALL_BATCH` showers use one thread and larger ones
    the process's setting.
    """
    from tqdm.auto import tqdm

    if getattr(generator, "data_kind", "voxels") == "points":
        return generate_points_to_file(generator, energies, path, batch_size=batch_size,
                                       seed=seed, progress=progress, threads=threads,
                                       project_threshold_mev=threshold_mev)
    energies = validate_energies(energies).numpy()
    _warn_outside_training_range(generator, energies)
    if threads is not None and threads < 1:
        from ..errors import ConfigError

        raise ConfigError(f"threads must be >= 1, got {threads}")
    device = torch.device(getattr(generator, "device", "cpu"))
    n_threads = _choose_threads(threads, min(batch_size, len(energies)), device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    geometry = generator.geometry
    if chunk_size is None:
        # a byte budget, not a shower count: 10 000 ds3 showers are 1.6 GB of float32
        chunk_size = max(1, min(10_000, CHUNK_BYTES // 2 // (4 * geometry.n_voxels)))
    chunk = max(batch_size, (chunk_size // batch_size) * batch_size)
    # on a GPU the CPU cores are idle and gzip would bound the rate; on a CPU they sample
    compress_threads = min(8, available_cpus()) if device.type != "cpu" else 1
    with ShowerWriter(path, geometry, attrs=attrs, compression=compression,
                      compress_threads=compress_threads) as w, \
            BackgroundWrites(w.write) as background, \
            tqdm(total=len(energies), unit="shower", desc="generate",
                 disable=not progress) as bar:
        # two buffers for the whole run, filled batch by batch and thresholded in place:
        # no list of batches, no concatenated copy, so memory does not depend on how many
        # chunks the run has (allocator fragmentation grew it by 25 % from 1k to 5k ds3)
        rows = min(chunk, len(energies))
        buffers = [np.empty((rows, geometry.n_voxels), dtype=np.float32) for _ in range(2)]
        for i, lo in enumerate(range(0, len(energies), chunk)):
            buffer = buffers[i % 2]  # the other one may still be on its way to the file
            e = energies[lo:lo + chunk]
            filled = 0
            for blo in range(0, len(e), batch_size):
                eb = torch.from_numpy(e[blo:blo + batch_size])
                with _sampling_threads(n_threads):
                    showers = generator.sample(eb, batch_size=batch_size, generator=gen)
                showers = check_finite(showers.detach().cpu(), "generated showers")
                buffer[filled:filled + len(eb)] = showers.reshape(len(eb), -1).numpy()
                filled += len(eb)
                del showers
                bar.update(len(eb))
            block = buffer[:filled]
            if threshold_mev is not None and threshold_mev > 0:
                block[block < threshold_mev] = 0.0
            background.submit(ShowerData(e, block, geometry))


def generate_points_to_file(generator, energies: np.ndarray, path: str | os.PathLike, *,
                            batch_size: int = 100, seed: int = 0, progress: bool = True,
                            threads: int | None = None, project: Any = None,
                            project_threshold_mev: float | None = None) -> None:
    """Point-cloud models: sample one cloud per incident energy (MeV) into a showerdata
    file, atomically, one batch in memory at a time.

    ``project`` (a :class:`~caloforge.geometry.PlanarGeometry`) writes every shower's
    cells instead of its points: one point per cell at or above ``project_threshold_mev``
    (default 0.1 MeV, half a MIP), at the cell centre. The generator checks its raw
    network outputs for NaN/inf itself (:func:`check_finite`) before calibrating them.
    """
    from tqdm.auto import tqdm

    from ..io import PointCloudWriter

    energies = validate_energies(energies).numpy()
    _warn_outside_training_range(generator, energies)
    if threads is not None and threads < 1:
        from ..errors import ConfigError

        raise ConfigError(f"threads must be >= 1, got {threads}")
    device = torch.device(getattr(generator, "device", "cpu"))
    n_threads = _choose_threads(threads, min(batch_size, len(energies)), device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    if project is not None:
        from ..evaluation.pointcloud import HALF_MIP_MEV, project_to_cells

        thr = HALF_MIP_MEV if project_threshold_mev is None else float(project_threshold_mev)
    with PointCloudWriter(path, len(energies)) as w, \
            BackgroundWrites(w.write) as background, \
            tqdm(total=len(energies), unit="shower", desc="generate",
                 disable=not progress) as bar:
        for lo in range(0, len(energies), batch_size):
            eb = torch.from_numpy(energies[lo:lo + batch_size])
            with _sampling_threads(n_threads):
                clouds = generator.sample(eb, batch_size=batch_size, generator=gen)
            if project is not None:
                clouds = project_to_cells(clouds, project, threshold_mev=thr).to_point_clouds()
            background.submit(clouds)  # a fresh object per batch: nothing is reused
            bar.update(len(eb))
