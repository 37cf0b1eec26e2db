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
