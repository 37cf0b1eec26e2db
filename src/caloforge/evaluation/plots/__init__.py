"""Comparison plots in the style of the CaloChallenge (needs the ``plot`` extra).

Every drawing function takes the axes to draw on and returns the artists it made.
Importing this package without matplotlib and mplhep raises a
:class:`~caloforge.errors.CaloforgeError` that says ``pip install caloforge[plot]``.
"""

from ._backend import PlottingUnavailableError, require_plotting

require_plotting()

from .histograms import (  # noqa: E402
    figure_grid,
    hist_with_ratio,
    normalised_histogram,
    plot_classifier_weights,
    plot_layer_profile,
    plot_response_per_energy_bin,
    plot_style,
)
from .showers import (  # noqa: E402
    average_shower,
    average_shower_figure,
    plot_average_layer_image,
)

__all__ = [
    "PlottingUnavailableError",
    "average_shower",
    "average_shower_figure",
    "figure_grid",
    "hist_with_ratio",
    "normalised_histogram",
    "plot_average_layer_image",
    "plot_classifier_weights",
    "plot_layer_profile",
    "plot_response_per_energy_bin",
    "plot_style",
    "require_plotting",
]
