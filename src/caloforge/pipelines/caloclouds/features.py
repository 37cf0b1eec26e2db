"""CaloClouds II Shower Flow: per-shower targets from point clouds, and their decoding.

The Shower Flow models, conditioned on the incident energy only, a vector of
``5 + 2 L`` per-shower numbers (docs/caloclouds.md, 'Shower Flow', readings A10
and A11)::

    N / 5000, E_vis[GeV] / 2.5, (CoG_X - axis_x) / 25, (CoG_Z - 15) / 15, (CoG_Y - axis_y) / 20,
    L x (points in layer) / (max over layers), L x (energy in layer) / (max over layers)

All of it is computed on the *points* of the clustered cloud (A11), with energy-weighted
centres of gravity. :func:`shower_flow_features` builds these training targets;
:func:`decode_shower_flow` inverts a sample of the flow and applies the post-processing
of the reference at sampling time (clipping, the 40 MeV floor, renormalised fractions)
into a :class:`ShowerFlowSummary`, which drives the diffusion model's N condition and the
post-diffusion calibrations (:mod:`.calibrations`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError, GenerationError
from ...io import PointCloudData

__all__ = [
    "N_LAYERS",
    "N_SCALAR_FEATURES",
    "ShowerFlowSampleError",
    "ShowerFlowScales",
    "ShowerFlowSummary",
    "decode_shower_flow",
    "n_shower_flow_features",
    "shower_flow_context",
    "shower_flow_features",
]

#: Active layers of the ILD-like ECAL (z in layer units, integer part = layer index).
N_LAYERS = 30
#: Scalar features ahead of the two per-layer blocks: N, E_vis, CoG_X, CoG_Z, CoG_Y.
N_SCALAR_FEATURES = 5


class ShowerFlowSampleError(GenerationError, ValueError):
    """A Shower Flow sample holds NaN/inf (diverged or damaged flow weights)."""


def n_shower_flow_features(n_layers: int = N_LAYERS) -> int:
    """Length of the Shower Flow vector: 5 scalars plus two per-layer blocks (65 for 30)."""
    return N_SCALAR_FEATURES + 2 * int(n_layers)


@dataclass(frozen=True)
class ShowerFlowScales:
    """Fixed scalings of the Shower Flow's inputs (the reference code's constants,
    docs/caloclouds.md, 'Shower Flow').

    The transverse centres of gravity are measured from the shower axis
    (``axis_x_mm``, ``axis_y_mm``): caloforge's clouds are centred on (0, 0), where the
    reference's ILD clouds enter at (0, 40) mm.

    Attributes:
        n_points: divides the number of points.
        e_vis_gev: divides the visible (point) energy in GeV.
        cog_x_mm, cog_y_mm: divide the transverse centres of gravity (mm, about the axis).
        cog_z_centre, cog_z_scale: (CoG_Z - centre) / scale, CoG_Z in layer units.
        axis_x_mm, axis_y_mm: where the shower axis enters (mm).
    """

    n_points: float = 5000.0
    e_vis_gev: float = 2.5
    cog_x_mm: float = 25.0
    cog_y_mm: float = 20.0
    cog_z_centre: float = 15.0
    cog_z_scale: float = 15.0
    axis_x_mm: float = 0.0
    axis_y_mm: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise ConfigError(f"ShowerFlowScales.{f.name} must be a number, got {v!r}")
            if not np.isfinite(v):
                raise ConfigError(f"ShowerFlowScales.{f.name} must be finite, got {v}")
            object.__setattr__(self, f.name, float(v))
        for name in ("n_points", "e_vis_gev", "cog_x_mm", "cog_y_mm", "cog_z_scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ShowerFlowScales.{name} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShowerFlowScales:
        """Build from a dict; unknown keys are rejected, missing ones take the defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown ShowerFlowScales keys: {sorted(unknown)}")
        return cls(**d)


# ------------------------------------------------------------------------------ encoding
def shower_flow_features(
    data: PointCloudData,
    scales: ShowerFlowScales = ShowerFlowScales(),
    n_layers: int = N_LAYERS,
) -> np.ndarray:
    """Shower Flow training vectors of point-cloud showers.

    Everything is computed on the points (A11): N is the point count, E_vis the summed
    point energy, the centres of gravity are energy-weighted point positions, and a
    point's layer is the integer part of its z (a z of exactly ``n_layers``, the far face
    of the last layer, counts in the last layer). Per-layer counts and energies are
    divided by their maximum over the layers (A10). A shower without points, or whose
    energy sums to <= 0, gets zeros wherever a ratio would be undefined (its CoG features
    and energy fractions; an empty shower's row is all zeros), never NaN.

    Args:
        data: showers as points (x mm, y mm, z layer units, E MeV).
        scales: the fixed scalings.
        n_layers: number of layers L.

    Returns:
        (N, 5 + 2 L) float32: N, E_vis, CoG_X, CoG_Z, CoG_Y (scaled), L point fractions,
        L energy fractions.

    Raises:
        ValueError: a point's z lies outside [0, n_layers], or points are not finite.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    n = len(data)
    p = np.asarray(data.points)
    if not np.isfinite(p).all():
        raise ValueError("point cloud holds NaN or infinite values")
    z = p[:, 2].astype(np.float64)
    outside = (z < 0) | (z > n_layers)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} points have z outside [0, {n_layers}] layer units "
            f"(first: {z[outside][0]:.6g})"
        )
    # z == n_layers (the far face) belongs to the last layer rather than to a layer L.
    layer = np.minimum(np.floor(z).astype(np.int64), n_layers - 1)
    shower = data.shower_index()
    e = p[:, 3].astype(np.float64)

    n_pts = np.asarray(data.n_points, dtype=np.float64)
    e_sum = np.bincount(shower, weights=e, minlength=n)
    has_e = e_sum > 0
    safe_e = np.where(has_e, e_sum, 1.0)

    def cog(values: np.ndarray) -> np.ndarray:
        # Defined only for showers with positive energy; 0 marks "undefined" below.
        return np.bincount(shower, weights=e * values, minlength=n) / safe_e

    cog_x = np.where(has_e, (cog(p[:, 0].astype(np.float64)) - scales.axis_x_mm)
                     / scales.cog_x_mm, 0.0)
    cog_y = np.where(has_e, (cog(p[:, 1].astype(np.float64)) - scales.axis_y_mm)
                     / scales.cog_y_mm, 0.0)
    cog_z = np.where(has_e, (cog(z) - scales.cog_z_centre) / scales.cog_z_scale, 0.0)

    cell = shower * n_layers + layer
    per_layer_n = np.bincount(cell, minlength=n * n_layers).reshape(n, n_layers).astype(np.float64)
    per_layer_e = np.bincount(cell, weights=e, minlength=n * n_layers).reshape(n, n_layers)

    out = np.zeros((n, n_shower_flow_features(n_layers)), dtype=np.float64)
    out[:, 0] = n_pts / scales.n_points
    out[:, 1] = e_sum / 1000.0 / scales.e_vis_gev
    out[:, 2] = cog_x
    out[:, 3] = cog_z
    out[:, 4] = cog_y
    out[:, 5:5 + n_layers] = _divide_by_row_max(per_layer_n)
    out[:, 5 + n_layers:] = _divide_by_row_max(per_layer_e)
    return out.astype(np.float32)


def _divide_by_row_max(x: np.ndarray) -> np.ndarray:
    """Rows divided by their maximum; rows whose maximum is <= 0 become zeros."""
    m = x.max(axis=1, keepdims=True)
    return np.where(m > 0, x / np.where(m > 0, m, 1.0), 0.0)


def shower_flow_context(incident_energy_mev: Any, *, scale_gev: float = 100.0) -> np.ndarray | Tensor:
    """The Shower Flow's condition E_inc[GeV] / 100, shape (N, 1).

    A tensor in gives a tensor out (same device; float32 unless already floating),
    anything else gives a float32 numpy array.
    """
    if isinstance(incident_energy_mev, Tensor):
        e = incident_energy_mev
        if not e.is_floating_point():
            e = e.to(torch.float32)
        return (e.reshape(-1, 1) / 1000.0) / scale_gev
    e = np.asarray(incident_energy_mev, dtype=np.float64).reshape(-1, 1)
    return (e / 1000.0 / scale_gev).astype(np.float32)


# ------------------------------------------------------------------------------ decoding
@dataclass
class ShowerFlowSummary:
    """A post-processed Shower Flow sample of N showers (docs/caloclouds.md, 'Shower Flow',
    post-processing).

    Attributes:
        n_points: (N,) int64 points per shower, in [1, max_points], before the N calibration.
        e_vis_mev: (N,) visible energy (MeV), at least the floor (40 MeV).
        cog_x_mm, cog_y_mm: (N,) target transverse centres of gravity (mm).
        layer_fraction_points: (N, L) share of the points per layer; rows sum to 1.
        layer_fraction_energy: (N, L) share of the energy per layer; rows sum to 1.
    """

    n_points: Tensor
    e_vis_mev: Tensor
    cog_x_mm: Tensor
    cog_y_mm: Tensor
    layer_fraction_points: Tensor
    layer_fraction_energy: Tensor

    def __len__(self) -> int:
        return int(self.n_points.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.layer_fraction_points.shape[1])

    def layer_points(self, n_calibrated: Tensor) -> Tensor:
        """Integer points per layer, floor(frac_i * N_cal), shape (N, L) int64.

        Their row sum is at most ``n_calibrated`` (flooring loses up to L - 1 points);
        the diffusion model is conditioned on that sum, not on ``n_calibrated``.
        """
        n_cal = torch.as_tensor(n_calibrated, device=self.layer_fraction_points.device)
        n_cal = n_cal.reshape(-1)
        if n_cal.shape[0] != len(self):
            raise ValueError(f"{n_cal.shape[0]} calibrated counts for {len(self)} showers")
        if (n_cal < 0).any():
            raise ValueError("calibrated point counts must be >= 0")
        n64 = n_cal.to(torch.float64)
        counts = torch.floor(self.layer_fraction_points.to(torch.float64) * n64[:, None])
        counts = counts.to(torch.int64)
        # Fractions sum to 1 only up to rounding: never hand out more than N_cal points
        # (take any excess from the fullest layer; in practice this never triggers).
        excess = (counts.sum(1) - n_cal.to(torch.int64)).clamp(min=0)
        if bool((excess > 0).any()):
            top = counts.argmax(1, keepdim=True)
            counts.scatter_add_(1, top, -excess[:, None])
        return counts

    def layer_energy_mev(self) -> Tensor:
        """Target energy per layer, frac_i * E_vis (MeV), shape (N, L)."""
        return self.layer_fraction_energy * self.e_vis_mev[:, None]


def decode_shower_flow(
    samples: Tensor,
    scales: ShowerFlowScales = ShowerFlowScales(),
    *,
    n_layers: int = N_LAYERS,
    max_points: int = 6000,
    min_e_vis_mev: float = 40.0,
) -> ShowerFlowSummary:
    """Undo the Shower Flow encoding and post-process as the reference does at sampling.

    N = round(5000 x) clipped to [1, max_points]; E_vis = 2.5 GeV x clipped to at least
    ``min_e_vis_mev``; CoG_X/Y rescaled and moved back to the axis (the CoG_Z column is
    ignored, A10); per-layer values clipped to [0, 1] and divided by their row sum (a row
    that is zero after clipping becomes uniform, 1/L each, rather than NaN).

    Args:
        samples: (N, 5 + 2 L) raw flow output.
        scales: the scalings used for training.
        n_layers: L.
        max_points: upper clip of N.
        min_e_vis_mev: lower clip of E_vis (MeV).

    Raises:
        ShowerFlowSampleError: (a ``ValueError``) a row holds NaN or inf.
        ValueError: wrong shape or bad limits.
    """
    samples = torch.as_tensor(samples)
    if not samples.is_floating_point():
        samples = samples.to(torch.float32)
    width = n_shower_flow_features(n_layers)
    if samples.ndim != 2 or samples.shape[1] != width:
        raise ValueError(
            f"Shower Flow samples must have shape (N, {width}) for {n_layers} layers, "
            f"got {tuple(samples.shape)}"
        )
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if min_e_vis_mev < 0:
        raise ValueError(f"min_e_vis_mev must be >= 0, got {min_e_vis_mev}")
    bad = ~torch.isfinite(samples).all(1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).reshape(-1)
        raise ShowerFlowSampleError(
            f"Shower Flow sample has NaN/inf in {len(rows)} of {samples.shape[0]} rows "
            f"(first: row {int(rows[0])})"
        )

    # N in float64 so that values near 6000 round exactly.
    n = torch.round(samples[:, 0].to(torch.float64) * scales.n_points)
    n = n.clamp(1, max_points).to(torch.int64)
    e_vis = (samples[:, 1] * (scales.e_vis_gev * 1000.0)).clamp(min=min_e_vis_mev)
    cog_x = samples[:, 2] * scales.cog_x_mm + scales.axis_x_mm
    cog_y = samples[:, 4] * scales.cog_y_mm + scales.axis_y_mm
    s = N_SCALAR_FEATURES
    frac_n = _clip_and_normalise(samples[:, s:s + n_layers])
    frac_e = _clip_and_normalise(samples[:, s + n_layers:])
    return ShowerFlowSummary(n, e_vis, cog_x, cog_y, frac_n, frac_e)


def _clip_and_normalise(x: Tensor) -> Tensor:
    """Clip to [0, 1] and divide each row by its sum; an all-zero row becomes uniform."""
    x = x.clamp(0.0, 1.0)
    total = x.sum(1, keepdim=True)
    uniform = torch.full_like(x, 1.0 / x.shape[1])
    return torch.where(total > 0, x / torch.where(total > 0, total, torch.ones_like(total)),
                       uniform)
