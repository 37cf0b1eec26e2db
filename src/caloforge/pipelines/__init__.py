"""The seed systems as :class:`ShowerGenerator` pipelines: registry, staged training,
loading and generation.

Each system lives in its own sub-package (``calovq/``, ``calodream/``, ...) and registers a
:class:`PipelineSpec` when imported; everything here dispatches through that registry.
"""

from .base import ShowerGenerator, check_finite, validate_energies
from .compose import (
    ComposedGenerator,
    LayerEnergyModel,
    ShapeModel,
    check_layer_energies,
    compose_checkpoints,
)
from .generate import generate_to_file
from .loading import PRETRAINED_DIR, load_generator, pretrained_models, resolve_checkpoint
from .registry import (
    PipelineSpec,
    StageSpec,
    config_from_manifest,
    config_to_manifest,
    get_pipeline,
    load_builtin_pipelines,
    pipeline_for_config,
    pipeline_for_preset,
    register_pipeline_spec,
    registered_pipelines,
)
from .staged import StageBuild, StageContext, split_indices, train_pipeline

__all__ = [
    "PRETRAINED_DIR",
    "ComposedGenerator",
    "LayerEnergyModel",
    "PipelineSpec",
    "ShapeModel",
    "ShowerGenerator",
    "StageBuild",
    "StageContext",
    "StageSpec",
    "check_finite",
    "check_layer_energies",
    "compose_checkpoints",
    "config_from_manifest",
    "config_to_manifest",
    "generate_to_file",
    "get_pipeline",
    "load_builtin_pipelines",
    "load_generator",
    "pipeline_for_config",
    "pipeline_for_preset",
    "pretrained_models",
    "register_pipeline_spec",
    "registered_pipelines",
    "resolve_checkpoint",
    "split_indices",
    "train_pipeline",
    "validate_energies",
]
