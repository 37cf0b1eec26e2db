"""The optional plotting dependencies, imported in one place."""

from __future__ import annotations

from ...errors import CaloforgeError

__all__ = ["require_plotting", "PlottingUnavailableError"]


class PlottingUnavailableError(CaloforgeError, ImportError):
    """matplotlib or mplhep is not installed."""


def require_plotting():
    """Import and return (matplotlib, mplhep), or raise a CaloforgeError saying how to
    install them."""
    try:
        import matplotlib
        import mplhep
    except ImportError as exc:
        raise PlottingUnavailableError(
            f"plotting needs matplotlib and mplhep ({exc}); install them with "
            "`pip install caloforge[plot]`"
        ) from None
    return matplotlib, mplhep
