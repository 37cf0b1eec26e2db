"""The radial calibration: a fitted monotone map of point radii about the shower axis.

CaloClouds II's PointWise Net spreads the shower core (docs/caloclouds.md, 'The radial
map'): the reference's core sits within a millimetre of the axis, and a small network
trained briefly renders it a few millimetres wide, which no calibration of the paper
touches (§4.1). This map is fitted after training on the model's own clouds against
training clouds, the way the N calibration is: per layer and per bin of E_inc, the
energy-weighted distribution of the model's point radii is sent onto the data's by

    r' = Q_data(G_model(r)),

G_model the model's energy-weighted CDF of r and Q_data the data's inverse CDF, each kept
as ``n_quantiles`` knots (r = 0 at level 0, then levels (k - 1/2) / K) with linear
interpolation; a radius beyond the model's last knot is scaled by the ratio of the last
knots. The azimuth, z and energy of every point stay as they are, so the layer energies
and point counts of the earlier calibrations are kept. It is the last generation step
(step 10, after the CoG shift): moving a compact core after the shift would move it off
the axis, which the reference's core never is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError
from ...io import PointCloudData

__all__ = ["RadialMap", "fit_radial_map", "weighted_radius_knots"]

#: a cell (layer x E_inc bin) with fewer points on either side keeps the identity map
MIN_POINTS_PER_CELL = 50


def _levels(n_quantiles: int) -> np.ndarray:
    k = np.arange(1, n_quantiles + 1)
    return np.concatenate([[0.0], (k - 0.5) / n_quantiles])


def weighted_radius_knots(r: np.ndarray, w: np.ndarray, n_quantiles: int) -> np.ndarray:
    """Radii at the map's quantile levels of the ``w``-weighted distribution of ``r``:
    (n_quantiles + 1,), the first 0."""
    order = np.argsort(r, kind="stable")
    r, w = np.asarray(r, np.float64)[order], np.asarray(w, np.float64)[order]
    cum = np.cumsum(w)
    mid = (cum - 0.5 * w) / cum[-1]  # the level at each point's own centre of weight
    knots = np.interp(_levels(n_quantiles)[1:], mid, r)
    return np.concatenate([[0.0], np.maximum.accumulate(knots)])


def _cells(layer: np.ndarray, e_inc: np.ndarray, e_edges: np.ndarray, n_layers: int) -> np.ndarray:
    e_bin = np.searchsorted(e_edges, e_inc, side="right")
    return np.clip(layer, 0, n_layers - 1) * (len(e_edges) + 1) + e_bin


@dataclass
class RadialMap:
    """A fitted radial map (see the module docstring).

    Attributes:
        e_edges: (n_bins - 1,) inner edges of the E_inc bins (MeV).
        model_knots, data_knots: (n_layers, n_bins, n_quantiles + 1) radii (mm) at the
            map's quantile levels; a cell with equal rows is the identity.
        axis_xy: the axis (mm) the radii are measured from.
    """

    e_edges: Tensor
    model_knots: Tensor
    data_knots: Tensor
    axis_xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.e_edges = torch.as_tensor(self.e_edges, dtype=torch.float64).reshape(-1)
        self.model_knots = torch.as_tensor(self.model_knots, dtype=torch.float64)
        self.data_knots = torch.as_tensor(self.data_knots, dtype=torch.float64)
        m, d = self.model_knots, self.data_knots
        if m.ndim != 3 or m.shape != d.shape or m.shape[1] != len(self.e_edges) + 1 or m.shape[2] < 2:
            raise ConfigError(f"radial map: knots of shapes {tuple(m.shape)} and {tuple(d.shape)} "
                              f"do not fit {len(self.e_edges) + 1} energy bins")
        if not (torch.isfinite(m).all() and torch.isfinite(d).all()):
            raise ConfigError("radial map: knots hold NaN or infinite values")
        if (m.diff(dim=-1) < 0).any() or (d.diff(dim=-1) < 0).any() or (m[..., 0] != 0).any():
            raise ConfigError("radial map: knots must start at 0 and never decrease")

    @property
    def n_layers(self) -> int:
        return int(self.model_knots.shape[0])

    def state(self) -> dict[str, Tensor]:
        return {"e_edges": self.e_edges, "model_knots": self.model_knots,
                "data_knots": self.data_knots,
                "axis_xy": torch.tensor(self.axis_xy, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> RadialMap:
        axis = tuple(float(v) for v in state["axis_xy"])
        return cls(state["e_edges"], state["model_knots"], state["data_knots"], axis)

    def map_radii(self, r: Tensor, layer: Tensor, e_inc: Tensor) -> Tensor:
        """r' for radii ``r`` (mm) of points in layers ``layer`` of showers of E_inc
        ``e_inc`` (MeV); all (M,)."""
        dev = r.device
        mk = self.model_knots.to(dev).flatten(0, 1)  # (cells, K + 1)
        dk = self.data_knots.to(dev).flatten(0, 1)
        n_bins = self.model_knots.shape[1]
        e_bin = torch.bucketize(e_inc.to(torch.float64), self.e_edges.to(dev), right=True)
        cell = layer.long().clamp(0, self.n_layers - 1) * n_bins + e_bin
        r = r.to(torch.float64)
        k = mk.shape[1]
        lo, hi = mk[cell, 0], mk[cell, -1]
        # one searchsorted over every cell at once: each cell's knots are moved to a range
        # of their own, so the concatenation is sorted
        span = float((mk[:, -1] - mk[:, 0]).max()) + 1.0
        offset = torch.arange(len(mk), device=dev, dtype=torch.float64) * span
        flat_m = (mk + offset[:, None]).flatten()
        q = r.clamp(min=0).minimum(hi) + offset[cell]
        j = torch.searchsorted(flat_m, q, right=True) - 1
        j = torch.minimum(j.clamp(min=cell * k), cell * k + k - 2)
        x0, x1 = flat_m[j], flat_m[j + 1]
        w = ((q - x0) / (x1 - x0).clamp(min=1e-300)).clamp(0, 1)
        flat_d = dk.flatten()
        inside = flat_d[j] + w * (flat_d[j + 1] - flat_d[j])
        # beyond the last knot: scale by the ratio of the last knots (1 for an identity cell)
        ratio = torch.where(hi > 0, dk[cell, -1] / hi.clamp(min=1e-300), torch.ones_like(hi))
        out = torch.where(r > hi, r * ratio, inside)
        return torch.where(lo == hi, r, out)

    def _move(self, p: Tensor, e_inc: Tensor) -> Tensor:
        """Points (M, 4) with per-point E_inc (M,): x and y moved along their radius."""
        ax = torch.tensor(self.axis_xy, dtype=torch.float64, device=p.device)
        dxy = p[:, :2].to(torch.float64) - ax
        r = torch.linalg.vector_norm(dxy, dim=1)
        r_new = self.map_radii(r, torch.floor(p[:, 2]).long(), e_inc)
        scale = torch.where(r > 0, r_new / r.clamp(min=1e-300), torch.ones_like(r))
        moved = p.clone()
        moved[:, :2] = (ax + dxy * scale[:, None]).to(p.dtype)
        return moved

    def apply(self, points: Tensor, valid: Tensor, e_inc: Tensor) -> Tensor:
        """Points (B, P, 4) in mm / layer units / MeV, with the map applied to the valid
        ones (``valid`` (B, P) bool); ``e_inc`` (B,) MeV. Padding is returned unchanged."""
        out = points.clone()
        if bool(valid.any()):
            rows = torch.nonzero(valid, as_tuple=True)[0]
            out[valid] = self._move(points[valid], e_inc.to(points.device)[rows])
        return out

    def apply_to_clouds(self, clouds: PointCloudData) -> PointCloudData:
        """:meth:`apply` on a :class:`~caloforge.io.PointCloudData` (returns a copy)."""
        pts = torch.from_numpy(np.asarray(clouds.points, np.float32))
        e = torch.from_numpy(np.repeat(np.asarray(clouds.incident_energies, np.float64),
                                       clouds.n_points))
        return PointCloudData(clouds.incident_energies, self._move(pts, e).numpy(),
                              clouds.n_points, clouds.geometry, clouds.pdg)


def fit_radial_map(model: PointCloudData, data: PointCloudData, *, n_layers: int,
                   n_bins: int, n_quantiles: int, axis_xy: tuple[float, float] = (0.0, 0.0)
                   ) -> RadialMap:
    """Fit the map of ``model``'s point radii onto ``data``'s (both in mm about
    ``axis_xy``), per layer and per bin of E_inc (``n_bins`` bins of equal counts of
    ``data``'s showers). Cells with fewer than :data:`MIN_POINTS_PER_CELL` points on
    either side, or no energy, keep the identity."""
    if n_bins < 1 or n_quantiles < 1:
        raise ConfigError("radial map: need at least one energy bin and one quantile")
    e_data = np.asarray(data.incident_energies, np.float64)
    if len(e_data) == 0 or len(model) == 0:
        raise ConfigError("radial map: no showers to fit on")
    e_edges = np.quantile(e_data, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 \
        else np.zeros(0)
    shape = (n_layers * n_bins, n_quantiles + 1)
    knots = {}
    for name, clouds in (("model", model), ("data", data)):
        p = np.asarray(clouds.points, np.float64)
        e_inc = np.repeat(np.asarray(clouds.incident_energies, np.float64), clouds.n_points)
        cell = _cells(np.floor(p[:, 2]).astype(np.int64), e_inc, e_edges, n_layers)
        r = np.hypot(p[:, 0] - axis_xy[0], p[:, 1] - axis_xy[1])
        w = np.clip(p[:, 3], 0, None)
        out = np.full(shape, np.nan)
        order = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[order], np.arange(shape[0] + 1))
        for c in range(shape[0]):
            idx = order[bounds[c]:bounds[c + 1]]
            if len(idx) >= MIN_POINTS_PER_CELL and w[idx].sum() > 0:
                out[c] = weighted_radius_knots(r[idx], w[idx], n_quantiles)
        knots[name] = out
    bad = np.isnan(knots["model"]).any(1) | np.isnan(knots["data"]).any(1)
    # identity: the same knots on both sides (any increasing row will do)
    ident = np.where(np.isnan(knots["model"]), knots["data"], knots["model"])
    ident = np.where(np.isnan(ident), np.arange(n_quantiles + 1, dtype=np.float64), ident)
    knots["model"][bad] = ident[bad]
    knots["data"][bad] = ident[bad]
    return RadialMap(e_edges, knots["model"].reshape(n_layers, n_bins, -1),
                     knots["data"].reshape(n_layers, n_bins, -1), tuple(axis_xy))
