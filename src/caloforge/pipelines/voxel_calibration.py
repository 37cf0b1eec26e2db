"""The ``calibration`` stage any voxel pipeline can add after its last trained stage.

It fits a :class:`~caloforge.transforms.VoxelQuantileCalibration`: the finished model
generates showers at the incident energies of (at most ``calibration.showers``) training
showers, and the map sends each cell's voxel energies from the model's distribution onto
those training showers'. No network is trained. A pipeline opts in with a
:class:`VoxelCalibrationConfig` field named ``calibration`` in its config, a
:func:`calibration_stage` in its stage list, and, in its generator,
:func:`load_voxel_calibration` at load and the map applied to its decoded showers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checkpoints import save_checkpoint
from ..errors import ConfigError
from ..geometry import CylindricalGeometry
from ..transforms.layer_hits import fit_layer_hit_count_map
from ..transforms.voxel_quantiles import (
    BINNINGS,
    VoxelQuantileCalibration,
    fit_voxel_quantile_calibration,
)
from .registry import StageSpec

__all__ = ["INCIDENT_BINNING", "NO_CALIBRATION", "NO_HIT_COUNT_MAP", "VoxelCalibrationConfig",
           "build_voxel_calibration_stage", "calibration_stage", "calibration_threshold",
           "describe_calibration", "load_voxel_calibration"]

_log = logging.getLogger(__name__)

#: showers generated at once while fitting
_CHUNK = 1000


@dataclass
class VoxelCalibrationConfig:
    """The fitted voxel-energy calibration (stage ``calibration``).

    Attributes:
        showers: training showers it is fitted on (the model generates as many); 0 turns
            the stage off and generation returns the model's voxels unmapped.
        bins: energy bins, of equal numbers of showers, each with its own map.
        quantiles: quantiles per (cell, bin) kept of each side's non-empty voxels.
        binning: what the bins are of: ``"layer"``, the energy of the voxel's own layer
            in that shower (edges per layer), or ``"incident"``, ln E_inc
            (docs/calibration.md, 'Bins of the layer energy').
        hit_count_bins: bins of each layer's energy in which the number of hits of that
            layer is mapped onto the training showers' after the voxel map
            (docs/calibration.md, 'Hits per layer'); 0 leaves the counts to the map.

    The stage's seed and device are its trainer settings' (``training.calibration`` maps
    to the pipeline's last network stage, see its ``trainer_config``).
    """

    showers: int = 20000
    bins: int = 8
    quantiles: int = 64
    binning: str = "layer"
    hit_count_bins: int = 32

    def __post_init__(self) -> None:
        if self.showers < 0:
            raise ConfigError(f"calibration.showers must be >= 0, got {self.showers}")
        if self.bins < 1 or self.quantiles < 2:
            raise ConfigError(f"calibration.bins must be >= 1 and calibration.quantiles >= 2, "
                              f"got {self.bins} and {self.quantiles}")
        if self.hit_count_bins < 0:
            raise ConfigError(f"calibration.hit_count_bins must be >= 0, got "
                              f"{self.hit_count_bins}")
        if self.binning not in BINNINGS:
            raise ConfigError(f"calibration.binning must be one of {', '.join(BINNINGS)}, "
                              f"got {self.binning!r}")
        if 0 < self.showers < 2 * self.bins:
            raise ConfigError(f"calibration.showers ({self.showers}) must be at least twice "
                              f"calibration.bins ({self.bins})")

    @property
    def enabled(self) -> bool:
        return self.showers > 0


#: the stored form of "no calibration stage", for migrating configs stored before it
NO_CALIBRATION = {"showers": 0, "bins": 8, "quantiles": 64, "binning": "incident",
                  "hit_count_bins": 0}

#: the binning of maps fitted before the layer binning existed, for migrating configs
INCIDENT_BINNING = "incident"

#: the hit-count bins of maps fitted before the hit-count map existed (none)
NO_HIT_COUNT_MAP = 0


def calibration_threshold(config: Any) -> float:
    """The threshold (MeV) below which voxels count as empty: the pipeline's
    ``output_threshold_mev`` (0: only voxels of exactly 0), so that the map never removes
    a voxel the pipeline would otherwise write."""
    return float(getattr(config, "output_threshold_mev", 0.0) or 0.0)


def _empty_calibration(config: Any, geometry: CylindricalGeometry) -> VoxelQuantileCalibration:
    c: VoxelCalibrationConfig = config.calibration
    return VoxelQuantileCalibration.for_geometry(
        geometry, n_bins=c.bins, n_quantiles=c.quantiles,
        threshold_mev=calibration_threshold(config), binning=c.binning,
        hit_count_bins=c.hit_count_bins)


def load_voxel_calibration(ckpt, config: Any,
                           geometry: CylindricalGeometry) -> VoxelQuantileCalibration | None:
    """The stored calibration of a checkpoint, or None when it has no such stage."""
    if "calibration" not in ckpt.stages:
        return None
    cal = _empty_calibration(config, geometry)
    ckpt.load_modules("calibration", {"calibration": cal})
    return cal


def describe_calibration(calibration: VoxelQuantileCalibration | None) -> str:
    """One line for ``caloforge info``."""
    if calibration is None:
        return "none (the model's own voxels)"
    what = "E_inc" if calibration.binning == "incident" else "layer-energy"
    hits = calibration.hit_counts
    counts = (f", hits per layer mapped in {hits.n_bins} layer-energy bins" if hits.is_on
              else "")
    return (f"voxel quantile map ({calibration.n_bins} {what} bins x "
            f"{calibration.n_quantiles} quantiles per layer and radial bin{counts})")


def build_voxel_calibration_stage(ctx) -> None:
    """Generate with the finished model at training energies and fit the map; no
    training. The model is loaded from the run directory without any older map."""
    from tqdm.auto import tqdm

    config = ctx.config
    c: VoxelCalibrationConfig = config.calibration
    tcfg = ctx.trainer_configs["calibration"]
    device = ctx.device("calibration")
    generator = ctx.spec.generator.load(ctx.out_dir, map_location=device)
    generator.calibration = None       # fit against the model's own voxels
    rng = np.random.default_rng([tcfg.seed, 13])
    n = min(c.showers, len(ctx.train_idx))
    if n < 2 * c.bins:
        raise ConfigError(f"the calibration stage needs at least {2 * c.bins} training "
                          f"showers, the training split has {len(ctx.train_idx)}")
    rows = torch.as_tensor(np.sort(rng.choice(ctx.train_idx, size=n, replace=False)))
    energies = ctx.energies[rows].to(torch.float64)
    gen = torch.Generator(device=device).manual_seed(tcfg.seed)
    _log.info("calibration: generating %d showers at training energies", n)
    chunks = tqdm(range(0, n, _CHUNK), desc="calibration: generating", unit="batch",
                  disable=not ctx.progress, leave=False)
    generated = torch.cat([generator.sample(energies[lo:lo + _CHUNK], batch_size=_CHUNK,
                                            generator=gen) for lo in chunks])
    reference = ctx.showers[rows]
    cal = fit_voxel_quantile_calibration(_empty_calibration(config, ctx.geometry), generated,
                                         reference, energies)
    if c.hit_count_bins:
        # the counts are mapped from where the voxel map leaves them
        mapped = torch.cat([cal(generated[lo:lo + _CHUNK], energies[lo:lo + _CHUNK])
                            for lo in range(0, n, _CHUNK)])
        reference = torch.as_tensor(reference, dtype=torch.float32)
        reference = torch.where(reference < cal.threshold_mev, torch.zeros_like(reference),
                                reference)
        fit_layer_hit_count_map(cal.hit_counts, mapped, reference)
    empty_gen = float(cal.empty_model.mean())
    empty_data = float(cal.empty_data.mean())
    save_checkpoint(ctx.out_dir, "calibration", {"calibration": cal}, **ctx.checkpoint_meta(),
                    extra={"showers": int(n), "bins": c.bins, "quantiles": c.quantiles,
                           "threshold_mev": cal.threshold_mev, "binning": cal.binning,
                           "hit_count_bins": c.hit_count_bins,
                           "empty_fraction_model": empty_gen,
                           "empty_fraction_data": empty_data})


def calibration_stage(requires: tuple[str, ...]) -> StageSpec:
    """The stage entry: after ``requires`` (every stage generation uses)."""
    return StageSpec("calibration", build_voxel_calibration_stage, requires=requires,
                     enabled=lambda config: config.calibration.enabled,
                     description="quantile map of voxel energies onto the training "
                                 "showers' (fitted, no training)")
