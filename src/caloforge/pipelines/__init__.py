"""The seed systems as :class:`ShowerGenerator` pipelines, and how to train and load them."""

from .base import ShowerGenerator, pipeline_class, register_pipeline, registered_pipelines
from .calovq import CaloVQ, CaloVQTransforms, build_calovq_models
from .calovq_train import CALOVQ_STAGES, encode_tokens, train_calovq
from .generate import generate_to_file
from .loading import PRETRAINED_DIR, load_generator, pretrained_models, resolve_checkpoint
from .training import pipeline_stages, train_pipeline

__all__ = [
    "CALOVQ_STAGES",
    "CaloVQ",
    "CaloVQTransforms",
    "PRETRAINED_DIR",
    "ShowerGenerator",
    "build_calovq_models",
    "encode_tokens",
    "generate_to_file",
    "load_generator",
    "pipeline_class",
    "pipeline_stages",
    "pretrained_models",
    "register_pipeline",
    "registered_pipelines",
    "resolve_checkpoint",
    "train_calovq",
    "train_pipeline",
]
