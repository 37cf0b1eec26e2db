"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The official CaloChallenge binning files, shipped beside the repository.
BINNING_DIR = Path(os.environ.get(
    "CALOFORGE_BINNING_DIR", Path(__file__).resolve().parents[2] / "shared" / "calochallenge"
))


@pytest.fixture(scope="session")
def binning_dir() -> Path:
    if not BINNING_DIR.is_dir():
        pytest.skip(f"official binning files not found in {BINNING_DIR}")
    return BINNING_DIR


@pytest.fixture
def one_thread():
    """Tiny tensors: thread hand-offs cost more than they save on a shared 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
