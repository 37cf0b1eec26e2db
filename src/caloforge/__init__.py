"""caloforge: fast calorimeter shower simulation with latent generative models.

Subpackages, one role each: :mod:`caloforge.geometry` (where voxels are),
:mod:`caloforge.io` (shower containers and files), :mod:`caloforge.simulation` (the
embedded GFlash reference simulator), :mod:`caloforge.evaluation` (CaloChallenge and
CaloClouds metrics), :mod:`caloforge.transforms`, :mod:`caloforge.nn`,
:mod:`caloforge.models`, :mod:`caloforge.objectives`, :mod:`caloforge.sampling`,
:mod:`caloforge.training`, :mod:`caloforge.pipelines` and :mod:`caloforge.cli`.
"""

from ._version import __version__
from .errors import CaloforgeError, CheckpointError, ConfigError

__all__ = ["CaloforgeError", "CheckpointError", "ConfigError", "__version__"]
