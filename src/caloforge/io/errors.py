"""Errors raised for unreadable or invalid shower files and arrays."""

from __future__ import annotations

from ..errors import CaloforgeError

__all__ = ["ShowerDataError"]


class ShowerDataError(CaloforgeError, ValueError):
    """Shower data is missing, malformed or physically invalid.

    The message names the file and dataset (when there is one) and the problem, so it can
    be shown to a user as it is.
    """

    def __init__(self, problem: str, *, path: str | None = None, dataset: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if dataset is not None:
                where += f" [{dataset}]"
            where += ": "
        elif dataset is not None:
            where = f"[{dataset}]: "
        super().__init__(where + problem)
        self.path = path
        self.dataset = dataset
        self.problem = problem
