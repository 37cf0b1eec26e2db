"""Training any pipeline from its configuration object."""

from __future__ import annotations

import os

from ..configs.calovq import CaloVQConfig
from ..errors import ConfigError

__all__ = ["train_pipeline", "pipeline_stages"]


def pipeline_stages(config) -> tuple[str, ...]:
    """Stage names of the pipeline a configuration describes, in training order."""
    if isinstance(config, CaloVQConfig):
        from .calovq_train import CALOVQ_STAGES

        return CALOVQ_STAGES
    raise ConfigError(f"no pipeline trains a {type(config).__name__}")


def train_pipeline(config, data_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                   stages: tuple[str, ...] | None = None, resume: bool = False,
                   progress: bool = True, device: str | None = None):
    """Train ``stages`` (default: all) of the pipeline ``config`` describes."""
    stages = stages or pipeline_stages(config)
    if isinstance(config, CaloVQConfig):
        from .calovq_train import train_calovq

        return train_calovq(config, data_path, out_dir, stages=stages, resume=resume,
                            progress=progress, device=device)
    raise ConfigError(f"no pipeline trains a {type(config).__name__}")
