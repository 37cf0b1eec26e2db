"""CaloChallenge-style comparison plots: each function draws on the axes it is given and
returns the artists it made (the scikit-hep ``hist`` convention), so callers compose
figures freely and tests can read back what was drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._backend import require_plotting

__all__ = [
    "REFERENCE_COLOUR",
    "plot_style",
    "figure_grid",
    "normalised_histogram",
    "hist_with_ratio",
    "plot_layer_profile",
    "plot_response_per_energy_bin",
    "plot_classifier_weights",
]

matplotlib, mplhep = require_plotting()

from matplotlib.figure import Figure  # noqa: E402  (after the dependency check)

REFERENCE_COLOUR = "0.6"
#: Colours of generated samples, in order (colour-blind friendly, Okabe-Ito).
GEN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


#: mplhep's ROOT style (experiment-neutral), scaled for panels of a few inches: the
#: original is made for one 10-inch figure. Built-in math fonts avoid font-lookup noise.
_STYLE_OVERRIDES = {
    "font.size": 12, "xtick.major.size": 6, "xtick.minor.size": 3, "ytick.major.size": 6,
    "ytick.minor.size": 3, "axes.linewidth": 1.2, "mathtext.fontset": "dejavusans",
}


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """The style of caloforge's figures (mplhep ROOT, resized) for what is made inside."""
    with matplotlib.style.context({**mplhep.style.ROOT, **_STYLE_OVERRIDES}):
        yield


def _colour(i: int) -> str:
    return GEN_COLOURS[i % len(GEN_COLOURS)]


def figure_grid(n: int, ncols: int = 4, *, ratio: bool = False,
                panel_size: tuple[float, float] = (4.0, 3.5)) -> tuple[Figure, list]:
    """A figure with ``n`` panels on a grid of ``ncols`` columns; unused cells are hidden.

    The figure is a plain :class:`matplotlib.figure.Figure` (no pyplot state): save it
    with ``fig.savefig``.

    Returns:
        (figure, axes): a list of ``n`` Axes, or with ``ratio=True`` a list of ``n``
        ``(ax_main, ax_ratio)`` pairs sharing x, the ratio panel a third of the height.
    """
    if n < 1:
        raise ValueError("figure_grid needs n >= 1")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows * (1.3 if ratio else 1)),
                 layout="constrained")
    outer = fig.add_gridspec(nrows, ncols)
    axes: list = []
    for i in range(n):
        cell = outer[i // ncols, i % ncols]
        if ratio:
            inner = cell.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
            ax_main = fig.add_subplot(inner[0])
            ax_ratio = fig.add_subplot(inner[1], sharex=ax_main)
            ax_main.tick_params(labelbottom=False)
            axes.append((ax_main, ax_ratio))
        else:
            axes.append(fig.add_subplot(cell))
    return fig, axes


def normalised_histogram(x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-area histogram and its statistical error, both shape (len(edges) - 1,).

    Normalised to the entries inside the edges (numpy's ``density=True``), with the
    Poisson error sqrt(n) scaled the same way. An empty histogram gives zeros.
    """
    counts, _ = np.histogram(np.asarray(x).reshape(-1), edges)
    widths = np.diff(edges)
    total = counts.sum()
    if total == 0:
        return np.zeros(len(widths)), np.zeros(len(widths))
    return counts / (total * widths), np.sqrt(counts) / (total * widths)


def _edges(ref: np.ndarray, bins, logx: bool) -> np.ndarray:
    if np.ndim(bins) == 1:
        return np.asarray(bins, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    ref = ref[np.isfinite(ref)]
    if logx:
        ref = ref[ref > 0]
    if ref.size == 0:
        raise ValueError("cannot choose bins: the reference has no usable values")
    lo, hi = ref.min(), ref.max()
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    if logx:
        return np.geomspace(lo, hi, int(bins) + 1)
    return np.linspace(lo, hi, int(bins) + 1)


def hist_with_ratio(
    ref: np.ndarray,
    gens: Mapping[str, np.ndarray],
    bins: int | Sequence[float] | np.ndarray,
    *,
    ax_main,
    ax_ratio,
    xlabel: str,
    logx: bool = False,
    logy: bool = False,
    ref_label: str = "reference",
    ratio_range: tuple[float, float] = (0.5, 1.5),
) -> dict[str, Any]:
    """Unit-area histograms of a reference and generated samples, with a ratio panel.

    The reference is a filled grey histogram, each generated sample a coloured step line;
    shaded bands are the statistical errors. The ratio panel shows generated / reference
    with the errors of both added in quadrature (bins with an empty reference are blank).

    Args:
        ref: reference values, shape (n,).
        gens: label -> generated values, shape (m,).
        bins: number of bins over the reference's range (log-spaced with ``logx``) or edges.
        ax_main, ax_ratio: axes of the histograms and of the ratio.

    Returns:
        ``{"edges", "reference", "reference_band", "generated": {label: StepPatch},
        "bands": {label: StepPatch}, "ratios": {label: StepPatch}, "ratio_bands": {...},
        "unity": Line2D}``.
    """
    edges = _edges(ref, bins, logx)
    h_ref, e_ref = normalised_histogram(ref, edges)
    out: dict[str, Any] = {"edges": edges, "generated": {}, "bands": {}, "ratios": {},
                           "ratio_bands": {}}
    out["reference"] = ax_main.stairs(h_ref, edges, fill=True, color=REFERENCE_COLOUR,
                                      alpha=0.5, label=ref_label)
    out["reference_band"] = ax_main.stairs(h_ref + e_ref, edges, baseline=h_ref - e_ref,
                                           fill=True, color=REFERENCE_COLOUR, alpha=0.4,
                                           hatch="///", linewidth=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_ref = np.where(h_ref > 0, e_ref / h_ref, np.nan)
    for i, (label, x) in enumerate(gens.items()):
        c = _colour(i)
        h, e = normalised_histogram(x, edges)
        out["generated"][label] = ax_main.stairs(h, edges, color=c, linewidth=1.6, label=label)
        out["bands"][label] = ax_main.stairs(h + e, edges, baseline=h - e, fill=True, color=c,
                                             alpha=0.25, linewidth=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(h_ref > 0, h / h_ref, np.nan)
            rel = np.where(h > 0, e / h, 0.0)
        err = r * np.sqrt(rel ** 2 + rel_ref ** 2)
        out["ratios"][label] = ax_ratio.stairs(r, edges, color=c, linewidth=1.4)
        out["ratio_bands"][label] = ax_ratio.stairs(r + err, edges, baseline=r - err, fill=True,
                                                    color=c, alpha=0.25, linewidth=0)
    out["unity"] = ax_ratio.axhline(1.0, color=REFERENCE_COLOUR, linestyle="--", linewidth=1)
    ax_ratio.set_ylim(*ratio_range)
    ax_ratio.set_ylabel("ratio")
    ax_ratio.set_xlabel(xlabel)
    ax_main.set_ylabel("normalised entries")
    if logx:
        ax_main.set_xscale("log")
        ax_ratio.set_xscale("log")
    if logy:
        ax_main.set_yscale("log")
    ax_main.set_xlim(edges[0], edges[-1])
    ax_main.legend(fontsize="small")
    return out


def plot_layer_profile(
    mean_ref: np.ndarray,
    means_gen: Mapping[str, np.ndarray],
    *,
    ax,
    xlabel: str = "layer",
    ylabel: str = "mean energy [MeV]",
    edges: np.ndarray | None = None,
    logy: bool = True,
    ref_label: str = "reference",
) -> dict[str, Any]:
    """Mean energy per bin (layer, r bin or alpha bin) as steps.

    Args:
        mean_ref: reference mean per bin, shape (B,).
        means_gen: label -> mean per bin, shape (B,).
        edges: bin edges, shape (B + 1,); default ``-0.5, 0.5, ..., B - 0.5`` (bin numbers).

    Returns:
        ``{"edges", "reference": StepPatch, "generated": {label: StepPatch}}``.
    """
    mean_ref = np.asarray(mean_ref, dtype=np.float64)
    if edges is None:
        edges = np.arange(len(mean_ref) + 1) - 0.5
    edges = np.asarray(edges, dtype=np.float64)
    out: dict[str, Any] = {"edges": edges, "generated": {}}
    out["reference"] = ax.stairs(mean_ref, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.5,
                                 label=ref_label)
    for i, (label, m) in enumerate(means_gen.items()):
        out["generated"][label] = ax.stairs(np.asarray(m, dtype=np.float64), edges,
                                            color=_colour(i), linewidth=1.6, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy and (mean_ref > 0).any():
        ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    if means_gen or ref_label:
        ax.legend(fontsize="small")
    return out


def _energy_bins(e_inc: np.ndarray, n: int) -> np.ndarray:
    u = np.unique(e_inc)
    if len(u) <= n:
        # Discrete energies (dataset 1): one panel per energy.
        mids = np.sqrt(u[1:] * u[:-1])
        return np.concatenate([[u[0] * 0.99], mids, [u[-1] * 1.01]])
    return np.geomspace(u[0], u[-1] * (1 + 1e-9), n + 1)


def plot_response_per_energy_bin(
    e_inc_ref: np.ndarray,
    resp_ref: np.ndarray,
    gens: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    axes: Sequence,
    energy_edges: np.ndarray | None = None,
    bins: int | np.ndarray = 50,
    ref_label: str = "reference",
) -> list[dict[str, Any]]:
    """E_tot/E_inc histograms in bins of incident energy, one bin per axes.

    Args:
        e_inc_ref: reference incident energies (MeV), shape (N,).
        resp_ref: reference response E_tot/E_inc, shape (N,).
        gens: label -> (incident energies (M,), responses (M,)).
        axes: one Axes per energy bin; extra axes are hidden.
        energy_edges: incident-energy edges (MeV); default one bin per distinct energy
            when there are at most ``len(axes)`` of them, else ``len(axes)`` log bins.
        bins: response bins per panel (count over the reference's range in that bin, or edges).

    Returns:
        One ``{"energy_range", "edges", "reference", "generated"}`` dict per used axes.
    """
    e_ref = np.asarray(e_inc_ref, dtype=np.float64).reshape(-1)
    r_ref = np.asarray(resp_ref, dtype=np.float64).reshape(-1)
    if energy_edges is None:
        energy_edges = _energy_bins(e_ref, len(axes))
    energy_edges = np.asarray(energy_edges, dtype=np.float64)
    n_bins = len(energy_edges) - 1
    if n_bins > len(axes):
        raise ValueError(f"{n_bins} energy bins but only {len(axes)} axes")
    out = []
    for k, ax in enumerate(axes):
        if k >= n_bins:
            ax.set_visible(False)
            continue
        lo, hi = energy_edges[k], energy_edges[k + 1]
        sel = (e_ref >= lo) & (e_ref < hi)
        rr = r_ref[sel]
        if np.ndim(bins) == 1:
            edges = np.asarray(bins, dtype=np.float64)
        elif rr.size:
            edges = _edges(rr, bins, logx=False)
        else:
            edges = np.linspace(0.0, 2.0, int(bins) + 1)
        h, _ = normalised_histogram(rr, edges)
        item: dict[str, Any] = {"energy_range": (lo, hi), "edges": edges, "generated": {}}
        item["reference"] = ax.stairs(h, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.5,
                                      label=ref_label)
        for i, (label, (e_gen, r_gen)) in enumerate(gens.items()):
            e_gen = np.asarray(e_gen).reshape(-1)
            hg, _ = normalised_histogram(np.asarray(r_gen).reshape(-1)[(e_gen >= lo) & (e_gen < hi)],
                                         edges)
            item["generated"][label] = ax.stairs(hg, edges, color=_colour(i), linewidth=1.6,
                                                 label=label)
        ax.set_title(f"$E_{{inc}}$ in [{lo / 1e3:.3g}, {hi / 1e3:.3g}) GeV", fontsize="small")
        ax.set_xlabel(r"$E_{tot}/E_{inc}$")
        ax.set_ylabel("normalised entries")
        out.append(item)
    if out:
        axes[0].legend(fontsize="small")
    return out


def plot_classifier_weights(
    w_ref: np.ndarray,
    w_gen: np.ndarray,
    *,
    ax,
    bins: int | np.ndarray = 50,
    labels: tuple[str, str] = ("reference", "generated"),
) -> dict[str, Any]:
    """Histograms of log10 of classifier weights w = C / (1 - C) (CaloDREAM's diagnostic).

    A perfect generator gives weights concentrated at 1 (log10 w = 0) for both samples;
    tails show regions one sample populates and the other does not. Non-positive or
    non-finite weights are left out.

    Returns:
        ``{"edges", "reference": StepPatch, "generated": StepPatch}``.
    """
    def log_w(w):
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        return np.log10(w[np.isfinite(w) & (w > 0)])

    lr, lg = log_w(w_ref), log_w(w_gen)
    if np.ndim(bins) == 1:
        edges = np.asarray(bins, dtype=np.float64)
    else:
        both = np.concatenate([lr, lg])
        lim = max(1.0, float(np.abs(both).max())) if both.size else 1.0
        edges = np.linspace(-lim, lim, int(bins) + 1)
    hr, _ = normalised_histogram(lr, edges)
    hg, _ = normalised_histogram(lg, edges)
    out = {
        "edges": edges,
        "reference": ax.stairs(hr, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.5,
                               label=labels[0]),
        "generated": ax.stairs(hg, edges, color=_colour(0), linewidth=1.6, label=labels[1]),
    }
    ax.set_xlabel(r"$\log_{10} w$,  $w = C/(1-C)$")
    ax.set_ylabel("normalised entries")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    return out
