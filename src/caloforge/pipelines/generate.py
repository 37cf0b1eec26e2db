"""Generating showers into a CaloChallenge file, streamed in chunks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..io import ShowerData, ShowerWriter
from .base import ShowerGenerator, check_finite, validate_energies

__all__ = ["generate_to_file"]


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
                     *, batch_size: int = 1000, seed: int = 0, chunk_size: int = 10_000,
                     progress: bool = True, attrs: dict | None = None,
                     threshold_mev: float | None = None) -> None:
    """Sample one shower per incident energy (MeV) and write them atomically to ``path``.

    Memory holds one chunk at a time; the progress bar moves every batch. The random
    stream is seeded once, so the output depends on ``seed``, the energies and
    ``batch_size`` only. Showers holding NaN or inf stop the run with
    :class:`~caloforge.errors.GenerationError` (nothing is written). ``threshold_mev``
    zeroes voxels below it after generation, on top of the model's own settings.
    """
    from tqdm.auto import tqdm

    energies = validate_energies(energies).numpy()
    _warn_outside_training_range(generator, energies)
    device = getattr(generator, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(int(seed))
    geometry = generator.geometry
    chunk = max(batch_size, (chunk_size // batch_size) * batch_size)
    with ShowerWriter(path, geometry, attrs=attrs) as w, \
            tqdm(total=len(energies), unit="shower", desc="generate",
                 disable=not progress) as bar:
        for lo in range(0, len(energies), chunk):
            e = energies[lo:lo + chunk]
            parts = []
            for blo in range(0, len(e), batch_size):
                eb = torch.from_numpy(e[blo:blo + batch_size])
                showers = generator.sample(eb, batch_size=batch_size, generator=gen)
                parts.append(check_finite(showers.detach().cpu(), "generated showers"))
                bar.update(len(eb))
            showers = torch.cat(parts).numpy()
            if threshold_mev is not None and threshold_mev > 0:
                showers = np.where(showers < threshold_mev, 0.0, showers).astype(showers.dtype)
            w.write(ShowerData(e, showers, geometry))
