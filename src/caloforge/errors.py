"""The root of caloforge's user-facing errors.

Every error that a user can cause with bad input (a file, a configuration, a command-line
argument) derives from :class:`CaloforgeError`; its message names the problem and is shown
as it is, without a traceback, by the command-line interface.
"""

from __future__ import annotations

__all__ = ["CaloforgeError", "ConfigError", "CheckpointError"]


class CaloforgeError(Exception):
    """Base class of errors caused by input the user can fix."""


class ConfigError(CaloforgeError, ValueError):
    """A configuration is invalid: unknown key, wrong type, bad value."""


class CheckpointError(CaloforgeError, ValueError):
    """A checkpoint is missing, corrupt, of another format version, or for another geometry."""
