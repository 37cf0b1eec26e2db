"""Average-shower pictures of voxelised (cylindrical) showers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...geometry import CylindricalGeometry, GeometryError
from ...io import ShowerData, ShowerFile
from ._backend import require_plotting
from .histograms import figure_grid, plot_layer_profile, plot_style

__all__ = ["average_shower", "plot_average_layer_image", "average_shower_figure"]

matplotlib, _ = require_plotting()

from matplotlib.colors import LogNorm  # noqa: E402


def average_shower(
    source: ShowerData | np.ndarray | str | os.PathLike,
    geometry: CylindricalGeometry | str | None = None,
    *,
    chunk_size: int = 10_000,
) -> tuple[np.ndarray, CylindricalGeometry, int]:
    """Mean voxel energies of a set of showers.

    Args:
        source: :class:`ShowerData`, an (N, V) array (then ``geometry`` is required), or
            a CaloChallenge file, read in chunks of ``chunk_size`` showers so that files
            larger than memory work.
        geometry: geometry object or preset name (for files: ``None`` detects it).

    Returns:
        (mean shower (V,) in MeV, geometry, number of showers).
    """
    if isinstance(source, ShowerData):
        return source.showers.mean(axis=0, dtype=np.float64), source.geometry, len(source)
    if isinstance(source, np.ndarray):
        if not isinstance(geometry, CylindricalGeometry):
            raise GeometryError("an array of showers needs its CylindricalGeometry")
        if source.ndim != 2 or source.shape[1] != geometry.n_voxels:
            raise GeometryError(f"showers of shape {source.shape} do not match geometry "
                                f"{geometry.name!r} ({geometry.n_voxels} voxels)")
        return source.mean(axis=0, dtype=np.float64), geometry, len(source)
    with ShowerFile(source, geometry) as f:
        total = np.zeros(f.geometry.n_voxels, dtype=np.float64)
        for chunk in f.iter_chunks(chunk_size):
            total += chunk.showers.sum(axis=0, dtype=np.float64)
        n = len(f)
        if n == 0:
            raise GeometryError(f"{os.fspath(source)} holds no showers")
        return total / n, f.geometry, n


def _layer_grid(geometry: CylindricalGeometry, layer: int, values: np.ndarray,
                subdivide: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_alpha = geometry.n_alpha[layer]
    r_edges = np.asarray(geometry.r_edges[layer])
    img = values.reshape(n_alpha, len(r_edges) - 1)
    # Arcs are drawn as polygons: split each angular bin so the rings look round.
    a_edges = np.linspace(-np.pi, np.pi, n_alpha * subdivide + 1)
    img = np.repeat(img, subdivide, axis=0)
    rr, aa = np.meshgrid(r_edges, a_edges)
    return rr * np.cos(aa), rr * np.sin(aa), img


def plot_average_layer_image(
    mean_shower: np.ndarray,
    geometry: CylindricalGeometry,
    layer: int,
    *,
    ax,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
) -> dict[str, Any]:
    """The r-alpha image of one layer of a mean shower, on a log colour scale.

    Drawn on ordinary (Cartesian) axes in mm: voxel (alpha, r) is the annulus sector
    between its radial edges and angles; alpha runs from -pi to pi as in the CaloChallenge
    geometry, measured from the x axis. Voxels with zero mean energy stay blank.

    Args:
        mean_shower: mean voxel energies (MeV), shape (V,).
        geometry: the voxel geometry.
        layer: layer to draw (must hold voxels).

    Returns:
        ``{"mesh": QuadMesh, "colorbar": Colorbar | None, "values": (n_alpha, n_r) array,
        "subdivide": rows of the mesh per angular bin}``.
    """
    mean_shower = np.asarray(mean_shower, dtype=np.float64).reshape(-1)
    if mean_shower.shape[0] != geometry.n_voxels:
        raise GeometryError(f"mean shower has {mean_shower.shape[0]} voxels, geometry "
                            f"{geometry.name!r} has {geometry.n_voxels}")
    if geometry.layer_sizes[layer] == 0 if 0 <= layer < geometry.n_layers else True:
        raise GeometryError(f"layer {layer} of geometry {geometry.name!r} holds no voxels")
    values = mean_shower[geometry.layer_slice(layer)]
    subdivide = max(1, 64 // geometry.n_alpha[layer])
    x, y, img = _layer_grid(geometry, layer, values, subdivide)
    positive = img[img > 0]
    lo = vmin if vmin is not None else (positive.min() if positive.size else 1e-3)
    hi = vmax if vmax is not None else (positive.max() if positive.size else 1.0)
    mesh = ax.pcolormesh(x, y, np.ma.masked_less_equal(img, 0.0), cmap=cmap,
                         norm=LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001)), shading="flat")
    ax.set_aspect("equal")
    ax.set_xlabel("x [mm]")
    ax.set_ylabel("y [mm]")
    ax.set_title(f"layer {layer}", fontsize="small")
    cb = ax.figure.colorbar(mesh, ax=ax, label="mean energy [MeV]") if colorbar else None
    return {"mesh": mesh, "colorbar": cb,
            "values": values.reshape(geometry.n_alpha[layer], -1), "subdivide": subdivide}


def average_shower_figure(
    showers_or_file: ShowerData | np.ndarray | str | os.PathLike,
    geometry: CylindricalGeometry | str | None = None,
    *,
    layer: int | None = None,
    chunk_size: int = 10_000,
    label: str | None = None,
):
    """A two-panel picture of the average shower: mean energy per layer and the r-alpha
    image of one layer (by default the layer with the largest mean energy).

    Args:
        showers_or_file: see :func:`average_shower` (files are read in chunks).
        geometry: geometry object or preset name.
        layer: layer of the image.
        label: legend label of the profile (default: the file name or "mean shower").

    Returns:
        a :class:`matplotlib.figure.Figure` (save with ``fig.savefig(path)``).
    """
    mean, geometry, n = average_shower(showers_or_file, geometry, chunk_size=chunk_size)
    per_layer = geometry.layer_energies(mean[None, :])[0]
    if layer is None:
        layer = int(np.argmax(per_layer))
    if label is None:
        label = (os.path.basename(os.fspath(showers_or_file))
                 if isinstance(showers_or_file, (str, os.PathLike)) else "mean shower")
    with plot_style():
        fig, (ax_profile, ax_image) = figure_grid(2, ncols=2, panel_size=(5.5, 4.5))
        plot_layer_profile(per_layer, {}, ax=ax_profile, ref_label=f"{label} (N = {n})")
        ax_profile.axvline(layer, color="k", linestyle=":", linewidth=1)
        plot_average_layer_image(mean, geometry, layer, ax=ax_image)
        fig.suptitle(f"average shower, geometry {geometry.name}", fontsize="medium")
    return fig
