"""Finding and loading trained generators: checkpoint directories and shipped models."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints import MANIFEST_NAME, load_checkpoint
from ..errors import CaloforgeError, CheckpointError, ConfigError
from .base import ShowerGenerator
from .registry import get_pipeline

__all__ = ["PRETRAINED_DIR", "pretrained_models", "resolve_checkpoint", "load_generator"]

#: Trained models shipped inside the package (made by ``scripts/train_pretrained.sh``).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def pretrained_models() -> tuple[str, ...]:
    """Names of the models shipped with caloforge."""
    if not PRETRAINED_DIR.is_dir():
        return ()
    return tuple(sorted(p.name for p in PRETRAINED_DIR.iterdir()
                        if (p / MANIFEST_NAME).is_file()))


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A checkpoint directory from a path or the name of a shipped model."""
    p = Path(spec)
    if (p / MANIFEST_NAME).is_file():
        return p
    if (PRETRAINED_DIR / str(spec) / MANIFEST_NAME).is_file():
        return PRETRAINED_DIR / str(spec)
    if p.exists():
        raise CheckpointError(f"{p} is not a checkpoint directory (no {MANIFEST_NAME})")
    shipped = ", ".join(pretrained_models()) or "none"
    raise CheckpointError(
        f"{spec!r} is neither a checkpoint directory nor a shipped model (shipped: {shipped})"
    )


def _check_device(device: str | torch.device) -> None:
    """An unknown device is the user's error, reported before any weights are read."""
    if isinstance(device, torch.device):
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"unknown device {device!r} (use cpu or cuda)") from None


def load_generator(spec: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                   verify: bool = True) -> ShowerGenerator:
    """Load any trained pipeline from its checkpoint directory or shipped-model name.

    ``verify=False`` accepts weights without a recorded sha256 (hand-made checkpoints).
    """
    path = resolve_checkpoint(spec)
    _check_device(map_location)
    config = load_checkpoint(path, verify=verify).config
    if not isinstance(config, dict) or "pipeline" not in config:
        raise CheckpointError(f"checkpoint {path} does not say which pipeline made it")
    try:
        pipeline = get_pipeline(str(config["pipeline"]))
    except CaloforgeError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    return pipeline.generator.load(path, map_location=map_location, verify=verify)
