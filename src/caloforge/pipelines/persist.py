"""Saving and opening a whole trained model, the same way for every pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from ..checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from ..errors import CheckpointError
from ..geometry import CylindricalGeometry, PlanarGeometry, named_geometry
from .registry import config_from_manifest, config_to_manifest

__all__ = ["open_model_checkpoint", "reading_config", "save_model_checkpoint"]

#: checkpoint directory (real path) -> config that open_model_checkpoint reads instead of
#: the stored one (see reading_config)
_CONFIG_INSTEAD: ContextVar[dict[str, Any] | None] = ContextVar("caloforge_config_instead",
                                                                default=None)


@contextmanager
def reading_config(path: str | os.PathLike, config: Any) -> Iterator[None]:
    """Within the block, opening the model in ``path`` builds it from ``config`` instead of
    the stored config, over the stored weights: how a training run checks, before it
    writes anything, that the stages it keeps still fit its settings."""
    token = _CONFIG_INSTEAD.set({**(_CONFIG_INSTEAD.get() or {}), os.path.realpath(path): config})
    try:
        yield
    finally:
        _CONFIG_INSTEAD.reset(token)


def save_model_checkpoint(path: str | os.PathLike, config: Any,
                          stages: Mapping[str, Mapping[str, torch.nn.Module]],
                          transforms: Mapping[str, Any],
                          geometry: CylindricalGeometry | PlanarGeometry) -> None:
    """Write every stage's modules, with the config, transforms and geometry, into
    ``path`` (no optimiser state)."""
    meta = dict(config=config_to_manifest(config), transforms=dict(transforms),
                geometry=geometry.to_dict())
    for stage, modules in stages.items():
        save_checkpoint(path, stage, modules, **meta)


def open_model_checkpoint(path: str | os.PathLike, pipeline: str, *, verify: bool = True,
                          required: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
                          ) -> tuple[Checkpoint, Any, CylindricalGeometry | PlanarGeometry]:
    """(checkpoint, strict config, geometry) of a ``pipeline`` model, after checking that
    the stored geometry is the config's and that every ``required`` stage (a tuple, or a
    function of the config giving one) is trained."""
    ckpt = load_checkpoint(path, verify=verify)
    config = (_CONFIG_INSTEAD.get() or {}).get(os.path.realpath(path))
    if config is None:
        _, config = config_from_manifest(ckpt.config, str(path), expect=pipeline)
    geometry = ckpt.geometry
    if geometry is None:
        raise CheckpointError(f"checkpoint {path} records no geometry")
    if not geometry.same_binning(named_geometry(config.geometry)):
        raise CheckpointError(f"checkpoint {path}: stored geometry {geometry.name!r} differs "
                              f"from the configuration's {config.geometry!r}")
    for stage in (required(config) if callable(required) else required):
        if stage not in ckpt.stages:
            raise CheckpointError(
                f"checkpoint {path} has no trained {stage!r} stage (it has "
                f"{ckpt.stages or 'none'}); train it with `caloforge train ... --stage {stage}`")
    return ckpt, config, geometry
