"""Generating showers into a CaloChallenge file, streamed in chunks."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..io import ShowerData, ShowerWriter
from .base import ShowerGenerator

__all__ = ["generate_to_file"]


def generate_to_file(generator: ShowerGenerator, energies: np.ndarray, path: str | os.PathLike,
                     *, batch_size: int = 1000, seed: int = 0, chunk_size: int = 10_000,
                     progress: bool = True, attrs: dict | None = None) -> None:
    """Sample one shower per incident energy (MeV) and write them atomically to ``path``.

    Memory holds one chunk at a time; the random stream is seeded once, so the output
    depends on ``seed``, the energies and ``batch_size`` only.
    """
    from tqdm.auto import tqdm

    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    device = getattr(generator, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(int(seed))
    geometry = generator.geometry
    chunk = max(batch_size, (chunk_size // batch_size) * batch_size)
    with ShowerWriter(path, geometry, attrs=attrs) as w, \
            tqdm(total=len(energies), unit="shower", desc="generate",
                 disable=not progress) as bar:
        for lo in range(0, len(energies), chunk):
            e = energies[lo:lo + chunk]
            showers = generator.sample(torch.from_numpy(e), batch_size=batch_size, generator=gen)
            w.write(ShowerData(e, showers.numpy(), geometry))
            bar.update(len(e))
