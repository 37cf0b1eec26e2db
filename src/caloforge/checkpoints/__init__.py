"""The self-describing, pickle-free checkpoint format.

It lives below ``training/`` so that loading a model for generation never imports the
trainer: a checkpoint directory is weights (safetensors, sha256-verified) plus a JSON
manifest (config, fitted transforms, geometry, provenance), and optionally each stage's
resume state.
"""

from .format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Checkpoint,
    WeightsMismatchError,
    data_fingerprint,
    has_trainer_state,
    load_checkpoint,
    load_trainer_state,
    provenance,
    save_checkpoint,
    save_trainer_state,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Checkpoint",
    "WeightsMismatchError",
    "data_fingerprint",
    "has_trainer_state",
    "load_checkpoint",
    "load_trainer_state",
    "provenance",
    "save_checkpoint",
    "save_trainer_state",
]
