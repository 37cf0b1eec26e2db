"""Errors raised for unreadable or invalid shower files and arrays."""

from __future__ import annotations

from ..errors import InputFileError

__all__ = ["ShowerDataError"]


class ShowerDataError(InputFileError):
    """Shower data is missing, malformed or physically invalid.

    The message names the option the file came from (when known), the file and dataset
    (when there is one) and the problem, so it can be shown to a user as it is, e.g.
    ``--reference ref.h5 [showers]: voxel energies contain NaN ... (first at row 17)``.
    """
