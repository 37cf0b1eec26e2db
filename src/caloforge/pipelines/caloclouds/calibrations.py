"""CaloClouds II calibrations: the number-of-points calibration and the post-diffusion steps.

Sampling runs (docs/caloclouds.md, 'Generation steps', whose step numbers are used here;
A-numbers are the readings of that file): Shower Flow sample → :class:`NCalibration` of N
→ integer points per layer → diffusion → :func:`calibrate`, which applies, in the
reference's order,

5. :func:`assign_layers`: sort each shower's points by generated z and hand them out to
   the layers in order, the first N_{z,0} to layer 0 and so on (A22: z only ranks points);
6. :func:`zero_non_positive`: drop points with E <= 0 (A23), before the energy rescale so
   that the layer sums it sets stay exact;
7. :func:`rescale_layer_energies`: scale each layer's point energies to the Shower Flow's
   layer energy;
9. :func:`shift_centre_of_gravity`: move the energy-weighted transverse CoG onto the
   Shower Flow's CoG (step 8, undoing the [-1, 1] normalisation, is the caller's and
   comes before this).

Two steps of ours follow (the generator applies them): 10, the fitted radial map
(``radial_map.py``), and 11, :func:`apply_square_symmetry`, a random symmetry of the
square cell grid per shower.

Every step works on padded batches ``points`` (B, P, 4) in physical units (x mm, y mm,
z layer units, E MeV) with ``n_valid`` (B,) valid points packed first in each row; the
rest is padding, ignored on input and zero on output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError, GenerationError
from ...evaluation.pointcloud import HALF_MIP_MEV, project_to_cells
from ...geometry import PlanarGeometry
from ...io import PointCloudData
from .features import ShowerFlowSummary

__all__ = [
    "CalibratedBatch",
    "NCalibration",
    "NCalibrationCheck",
    "PointCloudSampleError",
    "apply_square_symmetry",
    "assign_layers",
    "calibrate",
    "check_n_calibration",
    "count_cells",
    "fit_cubic",
    "fit_p_data",
    "fit_p_gen",
    "lost_layer_energy",
    "rescale_layer_energies",
    "shift_centre_of_gravity",
    "zero_non_positive",
]


#: Slack added before truncating a calibrated N (float error, not a physical quantity).
_TRUNC_SLACK = 1e-6


class PointCloudSampleError(GenerationError, ValueError):
    """Generated points hold NaN/inf (raised before any calibration could hide them)."""


# --------------------------------------------------------------------- N calibration
def _polyval(coeffs: tuple[float, ...], x: Tensor) -> Tensor:
    """Polynomial with coefficients highest power first (numpy's order), by Horner."""
    out = torch.zeros_like(x)
    for c in coeffs:
        out = out * x + c
    return out


def _coefficients(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        c = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"NCalibration.{name} must be 4 numbers or None, got {value!r}") from None
    if len(c) != 4 or not all(np.isfinite(c)):
        raise ConfigError(
            f"NCalibration.{name} must be 4 finite cubic coefficients (highest power "
            f"first), got {value!r}"
        )
    return c


@dataclass
class NCalibration:
    """Number-of-points calibration, N_cal = p_gen(p_data(N)) (docs/caloclouds.md, step 2, A7).

    ``p_data`` maps a shower's point count to its cell count in the reference (cells at
    or above the 0.1 MeV threshold); ``p_gen`` maps the cell count back to the point
    count this model needs, fitted on its uncalibrated output. Together they pick the N
    for which the model's showers have the reference's number of cells.

    Attributes:
        p_data: cubic N_cells(N_points) on the reference, highest power first.
        p_gen: cubic N_points(N_cells) on this model's uncalibrated showers.
    """

    p_data: tuple[float, ...] | None = None
    p_gen: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.p_data = _coefficients(self.p_data, "p_data")
        self.p_gen = _coefficients(self.p_gen, "p_gen")

    @property
    def fitted(self) -> bool:
        """True once both fits are present; until then the calibration is the identity."""
        return self.p_data is not None and self.p_gen is not None

    def __call__(self, n_points: Tensor, *, max_points: int = 6000) -> Tensor:
        """Calibrated point counts, (N,) int64.

        The reference scales N by the factor p_gen(p_data(N)) / N clipped at >= 0 and
        truncates; for N > 0 that is max(p_gen(p_data(N)), 0) truncated, computed here
        without the division, and a value within 1e-6 below an integer counts as that
        integer, so that exact results are not lost to rounding. The result is clipped
        to [1, max_points]. Unfitted: the counts unchanged.
        """
        n = torch.as_tensor(n_points)
        if not self.fitted:
            return n.to(torch.int64)
        assert self.p_data is not None and self.p_gen is not None
        x = n.to(torch.float64)
        n_cal = _polyval(self.p_gen, _polyval(self.p_data, x)).clamp(min=0.0)
        # A shower of no points stays at no points before the final clip (factor * 0).
        n_cal = torch.where(x > 0, n_cal, torch.zeros_like(n_cal))
        # Truncate (n_cal >= 0, so floor), forgiving float error just below an integer.
        return torch.floor(n_cal + _TRUNC_SLACK).clamp(1, max_points).to(torch.int64)

    def to_dict(self) -> dict[str, list[float] | None]:
        return {"p_data": None if self.p_data is None else list(self.p_data),
                "p_gen": None if self.p_gen is None else list(self.p_gen)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NCalibration:
        """Build from a dict; unknown keys are rejected, missing ones mean "not fitted"."""
        unknown = set(d) - {"p_data", "p_gen"}
        if unknown:
            raise ConfigError(f"unknown NCalibration keys: {sorted(unknown)}")
        return cls(d.get("p_data"), d.get("p_gen"))


@dataclass
class NCalibrationCheck:
    """How a fitted :class:`NCalibration` behaves over the point counts it will be fed.

    The composition p_gen(p_data(N)) is only meaningful where the model's cell count
    grows with its point count: where it saturates or falls (points piling up in few
    cells, e.g. a collapsed sampler), the cubic p_gen fitted to it can turn over, and the
    calibrated N then falls as the wanted N grows (docs/caloclouds.md, 'Calibrations').

    Attributes:
        n_range: (lowest, highest) point count checked (the reference's).
        monotone: N_cal never decreases over that range.
        worst_drop: the most N_cal falls below its value at a smaller count of the
            range (0 when monotone).
        clipped_fraction: share of the range mapped onto ``max_points`` or onto 1.
        cells_reached: the most cells any uncalibrated generated shower made, against
            ``cells_wanted``, the most any reference shower made.
    """

    n_range: tuple[int, int]
    monotone: bool
    worst_drop: int
    clipped_fraction: float
    cells_reached: int
    cells_wanted: int

    @property
    def ok(self) -> bool:
        return self.monotone and self.clipped_fraction == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n_range": list(self.n_range), "monotone": self.monotone,
                "worst_drop": self.worst_drop, "clipped_fraction": self.clipped_fraction,
                "cells_reached": self.cells_reached, "cells_wanted": self.cells_wanted}

    def problem(self) -> str | None:
        """One line saying what is wrong, or None when the calibration is sound."""
        if self.ok:
            return None
        lo, hi = self.n_range
        parts = []
        if not self.monotone:
            parts.append(f"the calibrated N falls by up to {self.worst_drop} points as the "
                         f"wanted N grows over [{lo}, {hi}]")
        if self.clipped_fraction > 0:
            parts.append(f"{100 * self.clipped_fraction:.0f}% of [{lo}, {hi}] is clipped to "
                         "the bounds")
        parts.append(f"the model's uncalibrated showers reach at most {self.cells_reached} "
                     f"cells, the reference's {self.cells_wanted}")
        return "; ".join(parts)


def check_n_calibration(
    fit: NCalibration,
    reference_points: np.ndarray,
    reference_cells: np.ndarray,
    generated_cells: np.ndarray,
    *,
    max_points: int = 6000,
) -> NCalibrationCheck:
    """Check a fitted N calibration over the reference's range of point counts (every
    integer count from its lowest to its highest), see :class:`NCalibrationCheck`."""
    ref_n = np.asarray(reference_points, dtype=np.int64).reshape(-1)
    if len(ref_n) == 0:
        raise ValueError("no reference showers to check the N calibration on")
    lo, hi = max(int(ref_n.min()), 1), max(int(ref_n.max()), 1)
    n_cal = fit(torch.arange(lo, hi + 1), max_points=max_points)
    # how far N_cal falls below its value at some smaller wanted N
    worst = int((torch.cummax(n_cal, 0).values - n_cal).max())
    clipped = float(((n_cal >= max_points) | (n_cal <= 1)).double().mean())
    return NCalibrationCheck((lo, hi), worst == 0, worst, clipped,
                             int(np.max(generated_cells, initial=0)),
                             int(np.max(reference_cells, initial=0)))


def count_cells(
    data: PointCloudData,
    geometry: PlanarGeometry | None,
    threshold_mev: float = HALF_MIP_MEV,
) -> np.ndarray:
    """Cells at or above ``threshold_mev`` per shower after projection, (N,) int64.

    Uses :func:`caloforge.evaluation.pointcloud.project_to_cells` (``geometry=None``
    takes ``data.geometry``), so the count is the N_hits observable of the evaluation.
    """
    hits = project_to_cells(data, geometry, threshold_mev=threshold_mev)
    return np.bincount(hits.shower, minlength=len(data)).astype(np.int64)


def fit_cubic(x: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    """Least-squares cubic y(x), coefficients highest power first (``np.polyfit(x, y, 3)``).

    Raises:
        ValueError: shapes differ, values are not finite, or x takes fewer than 4
            distinct values (the cubic would not be determined).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"cubic fit: x has {len(x)} values but y has {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("cubic fit: x or y holds NaN or infinite values")
    n_distinct = len(np.unique(x))
    if n_distinct < 4:
        raise ValueError(
            f"cubic fit needs at least 4 distinct x values, got {n_distinct} "
            f"(from {len(x)} showers)"
        )
    coeffs = np.polyfit(x, y, 3)
    if not np.isfinite(coeffs).all():
        raise ValueError("cubic fit failed: the coefficients are not finite")
    return tuple(float(c) for c in coeffs)


def fit_p_data(
    reference: PointCloudData,
    geometry: PlanarGeometry | None,
    threshold_mev: float = HALF_MIP_MEV,
) -> tuple[float, ...]:
    """p_data: cubic N_cells(N_points) on reference clouds (points of the 36x grid)."""
    cells = count_cells(reference, geometry, threshold_mev)
    return fit_cubic(reference.n_points, cells)


def fit_p_gen(
    generated_uncalibrated: PointCloudData,
    geometry: PlanarGeometry | None,
    threshold_mev: float = HALF_MIP_MEV,
) -> tuple[float, ...]:
    """p_gen: cubic N_points(N_cells) on this model's showers generated without the N
    calibration (the bootstrap pass)."""
    cells = count_cells(generated_uncalibrated, geometry, threshold_mev)
    return fit_cubic(cells, generated_uncalibrated.n_points)


# ------------------------------------------------------------------- batch helpers
def _check_batch(points: Tensor, n_valid: Tensor) -> Tensor:
    """Validate a padded batch; return ``n_valid`` as int64 on the points' device."""
    if points.ndim != 3 or points.shape[2] != 4:
        raise ValueError(f"points must have shape (B, P, 4), got {tuple(points.shape)}")
    n = torch.as_tensor(n_valid, device=points.device).reshape(-1).to(torch.int64)
    if n.shape[0] != points.shape[0]:
        raise ValueError(f"{n.shape[0]} point counts for a batch of {points.shape[0]} showers")
    if bool(((n < 0) | (n > points.shape[1])).any()):
        raise ValueError(f"point counts must lie in [0, {points.shape[1]}] (the padded length)")
    return n


def _valid_mask(n_valid: Tensor, length: int) -> Tensor:
    """(B, P) True for the first n_valid[b] entries of each row."""
    return torch.arange(length, device=n_valid.device)[None, :] < n_valid[:, None]


def _layer_index(points: Tensor, valid: Tensor, n_layers: int) -> Tensor:
    """Layer of every point, floor(z) clipped to [0, L-1]; padding gets L (a spare bin)."""
    layer = torch.floor(points[..., 2]).clamp(0, n_layers - 1).to(torch.int64)
    return torch.where(valid, layer, torch.full_like(layer, n_layers))


def _layer_sums(values: Tensor, layer: Tensor, n_layers: int) -> Tensor:
    """(B, L) sums of ``values`` (B, P) per layer; entries with layer L are dropped."""
    out = torch.zeros(values.shape[0], n_layers + 1, dtype=values.dtype, device=values.device)
    return out.scatter_add_(1, layer, values)[:, :n_layers]


# ---------------------------------------------------------------- post-diffusion steps
def assign_layers(points: Tensor, n_valid: Tensor, layer_points: Tensor) -> Tensor:
    """Step 5: hand points out to layers in the order of their generated z.

    Among each shower's first ``n_valid`` points (the rest is batch padding and is
    dropped) the points are sorted by z (stable, so ties keep their order); the first
    ``layer_points[:, 0]`` go to layer 0 (z := 0.5), the next ``layer_points[:, 1]`` to
    layer 1 (z := 1.5), and so on. Generated z matters only through its rank (A22).

    Args:
        points: (B, P, 4) generated points.
        n_valid: (B,) valid points per shower; must equal ``layer_points.sum(1)``.
        layer_points: (B, L) integer points per layer.

    Returns:
        (B, P, 4) points sorted by layer, z snapped to layer centres, padding rows zero.
    """
    n = _check_batch(points, n_valid)
    lp = torch.as_tensor(layer_points, device=points.device)
    if lp.ndim != 2 or lp.shape[0] != points.shape[0]:
        raise ValueError(
            f"layer_points must have shape ({points.shape[0]}, L), got {tuple(lp.shape)}"
        )
    lp = lp.to(torch.int64)
    if bool((lp < 0).any()):
        raise ValueError("layer_points must be >= 0")
    if not torch.equal(lp.sum(1), n):
        bad = int(torch.nonzero(lp.sum(1) != n)[0, 0])
        raise ValueError(
            f"layer_points must sum to n_valid for every shower (shower {bad}: "
            f"{int(lp[bad].sum())} vs {int(n[bad])})"
        )
    length = points.shape[1]
    valid = _valid_mask(n, length)
    z = points[..., 2]
    if not bool(torch.isfinite(z[valid]).all()):
        raise PointCloudSampleError("generated z holds NaN or infinite values")
    # Padding sorts after every valid point whatever its content.
    key = torch.where(valid, z, torch.full_like(z, float("inf")))
    order = torch.sort(key, dim=1, stable=True).indices
    out = torch.gather(points, 1, order[..., None].expand(-1, -1, 4)).clone()
    # Sorted position j belongs to the first layer whose cumulative count exceeds j.
    position = torch.arange(length, device=points.device).expand(points.shape[0], -1).contiguous()
    layer = torch.searchsorted(lp.cumsum(1).contiguous(), position, right=True)
    out[..., 2] = layer.to(out.dtype) + 0.5
    # where, not a product: padding may hold anything, NaN included.
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def zero_non_positive(points: Tensor, n_valid: Tensor) -> tuple[Tensor, Tensor]:
    """Step 6: drop valid points with E <= 0 (A23) and repack the rest, order kept.

    Returns:
        (points (B, P, 4) with the kept points first and zero padding, new counts (B,)).
    """
    n = _check_batch(points, n_valid)
    keep = _valid_mask(n, points.shape[1]) & (points[..., 3] > 0)
    # Stable sort of "not kept" moves kept points to the front without reordering them.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    out = torch.gather(points, 1, order[..., None].expand(-1, -1, 4))
    counts = keep.sum(1)
    kept = _valid_mask(counts, points.shape[1])[..., None]
    return torch.where(kept, out, torch.zeros((), dtype=out.dtype, device=out.device)), counts


def _check_layer_targets(points: Tensor, layer_energy_mev: Tensor) -> Tensor:
    target = torch.as_tensor(layer_energy_mev, device=points.device)
    if target.ndim != 2 or target.shape[0] != points.shape[0]:
        raise ValueError(
            f"layer energies must have shape ({points.shape[0]}, L), got {tuple(target.shape)}"
        )
    target = target.to(torch.float64)
    if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
        raise ValueError("layer energies must be finite and >= 0")
    return target


def _energy_per_layer(points: Tensor, n: Tensor, n_layers: int) -> tuple[Tensor, Tensor, Tensor]:
    """(layer index (B, P), energies float64 (B, P) with padding zeroed, sums (B, L))."""
    valid = _valid_mask(n, points.shape[1])
    layer = _layer_index(points, valid, n_layers)
    e = torch.where(valid, points[..., 3].to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                         device=points.device))
    return layer, e, _layer_sums(e, layer, n_layers)


def rescale_layer_energies(points: Tensor, n_valid: Tensor, layer_energy_mev: Tensor) -> Tensor:
    """Step 7: scale each layer's point energies so that they sum to its target.

    A point's layer is floor(z) clipped to [0, L-1] (z is a layer centre after
    :func:`assign_layers`). A layer whose energy sums to <= 0 (no points, or only
    points of zero energy; run :func:`zero_non_positive` first) cannot be scaled: its
    points get E = 0 and its target energy is lost (see :func:`lost_layer_energy`).
    Never divides by zero.

    Args:
        points: (B, P, 4); n_valid: (B,); layer_energy_mev: (B, L) targets >= 0 (MeV).

    Returns:
        (B, P, 4) points with rescaled energies (padding untouched).
    """
    n = _check_batch(points, n_valid)
    target = _check_layer_targets(points, layer_energy_mev)
    n_layers = target.shape[1]
    layer, e, sums = _energy_per_layer(points, n, n_layers)
    ok = sums > 0
    factor = torch.where(ok, target / torch.where(ok, sums, torch.ones_like(sums)),
                         torch.zeros_like(sums))
    factor = torch.cat([factor, torch.zeros_like(factor[:, :1])], dim=1)  # padding bin
    out = points.clone()
    valid = layer < n_layers
    scaled = (e * torch.gather(factor, 1, layer)).to(points.dtype)
    out[..., 3] = torch.where(valid, scaled, points[..., 3])
    return out


def lost_layer_energy(points: Tensor, n_valid: Tensor, layer_energy_mev: Tensor) -> Tensor:
    """Target energy (MeV) of the layers :func:`rescale_layer_energies` cannot fill (their
    energy sums to <= 0), per shower, (B,) float64."""
    n = _check_batch(points, n_valid)
    target = _check_layer_targets(points, layer_energy_mev)
    _, _, sums = _energy_per_layer(points, n, target.shape[1])
    return torch.where(sums > 0, torch.zeros_like(target), target).sum(1)


def shift_centre_of_gravity(points: Tensor, n_valid: Tensor, cog_x_mm: Tensor,
                            cog_y_mm: Tensor) -> Tensor:
    """Step 9: shift x and y so that the energy-weighted CoG lands on the target.

    Every valid point of a shower moves by (target - CoG); a shower without points or
    whose energy sums to <= 0 is left untouched, as are padding rows.

    Args:
        points: (B, P, 4) in mm; n_valid: (B,); cog_x_mm, cog_y_mm: (B,) targets (mm).
    """
    n = _check_batch(points, n_valid)
    b = points.shape[0]
    targets = []
    for name, t in (("cog_x_mm", cog_x_mm), ("cog_y_mm", cog_y_mm)):
        t = torch.as_tensor(t, device=points.device).reshape(-1).to(torch.float64)
        if t.shape[0] != b:
            raise ValueError(f"{name} has {t.shape[0]} values for {b} showers")
        targets.append(t)
    valid = _valid_mask(n, points.shape[1])
    e = torch.where(valid, points[..., 3].to(torch.float64),
                    torch.zeros((), dtype=torch.float64, device=points.device))
    total = e.sum(1)
    has = total > 0
    safe = torch.where(has, total, torch.ones_like(total))
    out = points.clone()
    for col, target in zip((0, 1), targets):
        coord = points[..., col].to(torch.float64)
        cog = (e * coord).sum(1) / safe
        shift = torch.where(has, target - cog, torch.zeros_like(cog))
        moved = (coord + shift[:, None]).to(points.dtype)
        out[..., col] = torch.where(valid, moved, points[..., col])
    return out


def apply_square_symmetry(points: Tensor, n_valid: Tensor, element: Tensor,
                          axis_xy: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Step 11 (ours): move each shower by an element of the square's symmetry group about
    the axis: ``element`` (B,) in 0..7 rotates by (element mod 4) x 90 degrees, then
    mirrors x for element >= 4.

    A shower entering normally at a cell corner has this symmetry, and so has the grid,
    so every element maps cells onto cells. Drawing a random element per shower makes
    the generator's distribution symmetric: a direction the network favours (e.g. the
    core of the shipped distilled model sits 0.06 mm off the axis in y) is spread over
    all eight (docs/caloclouds.md, 'The radial map'). Padding rows are left unchanged.
    """
    n = _check_batch(points, n_valid)
    k = torch.as_tensor(element, device=points.device).reshape(-1).long()
    if k.shape[0] != points.shape[0] or bool(((k < 0) | (k > 7)).any()):
        raise ValueError(f"need one element in 0..7 per shower, got {tuple(k.shape)} values")
    valid = _valid_mask(n, points.shape[1])
    ax, ay = float(axis_xy[0]), float(axis_xy[1])
    x, y = points[..., 0] - ax, points[..., 1] - ay
    rot = (k % 4)[:, None]
    # rotations by 0, 90, 180, 270 degrees: (x, y) -> (x, y), (-y, x), (-x, -y), (y, -x)
    xr = torch.where(rot == 0, x, torch.where(rot == 1, -y, torch.where(rot == 2, -x, y)))
    yr = torch.where(rot == 0, y, torch.where(rot == 1, x, torch.where(rot == 2, -y, -x)))
    xr = torch.where((k >= 4)[:, None], -xr, xr)
    out = points.clone()
    out[..., 0] = torch.where(valid, xr + ax, points[..., 0])
    out[..., 1] = torch.where(valid, yr + ay, points[..., 1])
    return out


# -------------------------------------------------------------------------- all steps
@dataclass
class CalibratedBatch:
    """Calibrated showers of one batch.

    Attributes:
        points: (B, P, 4) x mm, y mm, z layer units, E MeV; valid points first per row,
            zero padding after.
        n_points: (B,) int64 valid points per shower.
        lost_energy_mev: (B,) layer target energy that no point could carry (a layer
            with no points left), or None when not recorded.
    """

    points: Tensor
    n_points: Tensor
    lost_energy_mev: Tensor | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_point_cloud_data(self, incident_energy_mev: Any, *,
                            geometry: PlanarGeometry | None = None,
                            pdg: int = 22) -> PointCloudData:
        """The valid points as a :class:`PointCloudData` (padding dropped)."""
        e = np.asarray(torch.as_tensor(incident_energy_mev).detach().cpu(),
                       dtype=np.float32).reshape(-1)
        n = _check_batch(self.points, self.n_points)
        if len(e) != len(self):
            raise ValueError(f"{len(e)} incident energies for {len(self)} showers")
        mask = _valid_mask(n, self.points.shape[1])
        flat = self.points.detach()[mask].cpu().to(torch.float32).numpy()
        return PointCloudData(e, flat, n.cpu().numpy(), geometry, pdg)


def calibrate(points: Tensor, n_valid: Tensor, summary: ShowerFlowSummary,
              layer_points: Tensor) -> CalibratedBatch:
    """Steps 5, 6, 7 and 9 of the post-diffusion calibration, in the reference's order.

    ``points`` must already be in physical units (step 8 done by the caller: the CoG
    shift needs mm). ``n_valid`` is the diffusion model's N condition, i.e.
    ``layer_points.sum(1)`` with ``layer_points = summary.layer_points(N_cal)``.

    Returns:
        the calibrated batch, with the energy of layers left without points in
        ``lost_energy_mev``.

    Raises:
        PointCloudSampleError: (a ``ValueError``) valid points hold NaN/inf.
    """
    n = _check_batch(points, n_valid)
    if len(summary) != points.shape[0]:
        raise ValueError(f"Shower Flow summary of {len(summary)} showers for a batch of "
                         f"{points.shape[0]}")
    lp = torch.as_tensor(layer_points)
    if lp.ndim != 2 or lp.shape[1] != summary.n_layers:
        raise ValueError(f"layer_points must have {summary.n_layers} layers, got "
                         f"shape {tuple(lp.shape)}")
    valid = _valid_mask(n, points.shape[1])
    if not bool(torch.isfinite(points[valid]).all()):
        raise PointCloudSampleError("generated points hold NaN or infinite values")
    out = assign_layers(points, n, lp)
    out, n = zero_non_positive(out, n)
    target = summary.layer_energy_mev().to(points.device)
    lost = lost_layer_energy(out, n, target)
    out = rescale_layer_energies(out, n, target)
    out = shift_centre_of_gravity(out, n, summary.cog_x_mm, summary.cog_y_mm)
    return CalibratedBatch(out, n, lost)
