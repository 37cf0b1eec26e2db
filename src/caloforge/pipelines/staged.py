"""One generic staged-training loop for every registered pipeline.

``train_pipeline(config, data, out)`` reads the training file, splits it (seeded), lets
the pipeline ``prepare`` its shared state (fitted transforms), then trains the requested
stages in the pipeline's order. Each stage declares what it trains, which frozen earlier
stages it reads and how it builds its data (:class:`StageBuild`); the shared
:class:`~caloforge.training.Trainer` does the rest and saves into one checkpoint directory.

Resume always finishes: with ``resume=True`` a stage whose stored step reached its
``max_steps`` is skipped, a stage with resume state continues bit for bit, and a stage
that never reached its first checkpoint starts afresh from the same seed, so an
interrupted run ends with the same weights as an uninterrupted one. Every random source
(model initialisation included) is seeded from the stage's trainer seed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checkpoints import MANIFEST_NAME, data_fingerprint, has_trainer_state, load_checkpoint
from ..configs.schema import config_to_dict
from ..errors import CheckpointError, ConfigError
from ..geometry import CylindricalGeometry, PlanarGeometry, named_geometry
from ..io import ShowerFile
from ..training.stage import TrainingStage
from .registry import (
    PipelineSpec,
    config_from_manifest,
    config_to_manifest,
    pipeline_for_config,
)

__all__ = ["StageBuild", "StageContext", "pass_batch_size", "split_indices", "train_pipeline"]


def pass_batch_size(device: torch.device) -> int:
    """Showers per batch of a no-grad pass of a frozen network over the training set
    (encoding, reconstruction): large on a GPU, where such passes are bound by launch
    overhead; moderate on a CPU, where activations must stay in cache-friendly sizes."""
    return 4096 if device.type == "cuda" else 512


@dataclass
class StageBuild:
    """What a stage's ``build`` hands to the shared trainer."""

    stage: TrainingStage
    train_data: Dataset
    val_data: Dataset | None = None


@dataclass
class StageContext:
    """What every stage of one training run sees.

    Attributes:
        config: the pipeline config.
        geometry: the config's geometry.
        showers, energies: the whole training file, (N, V) float32 MeV and (N,) float64 MeV.
            A point-cloud pipeline (``data_kind="points"``) gets ``showers=None``: its
            stages read the points from ``data_path`` as they need them (a point-cloud
            file need not fit in memory).
        data_path: the training file.
        train_idx, val_idx: the seeded split.
        out_dir: the checkpoint directory.
        resume: whether the run resumes.
        state: the pipeline's own shared state (fitted transforms, ...), set by
            ``prepare`` and by stages; ``state["transforms"]``, a ``{name: state dict}``
            mapping when present, is stored in the checkpoint with every stage.
    """

    config: Any
    spec: PipelineSpec
    geometry: CylindricalGeometry | PlanarGeometry
    showers: torch.Tensor | None
    energies: torch.Tensor
    train_idx: np.ndarray
    val_idx: np.ndarray
    out_dir: Path
    resume: bool
    stages: tuple[str, ...]
    fingerprint: str
    #: every stage's trainer settings after the run's overrides (device, seed)
    trainer_configs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    data_path: Path | None = None
    #: show progress bars (stages with loops of their own honour it too)
    progress: bool = True

    def checkpoint(self):
        """The checkpoint written so far (verified), or None."""
        if not (self.out_dir / MANIFEST_NAME).exists():
            return None
        return load_checkpoint(self.out_dir, expect_geometry=self.geometry)

    def frozen(self, stage: str, modules: dict[str, torch.nn.Module]) -> None:
        """Load the trained ``stage``'s weights into ``modules`` and freeze them."""
        ckpt = self.checkpoint()
        if ckpt is None or stage not in ckpt.stages:
            raise CheckpointError(f"{self.out_dir} has no trained stage {stage!r}; train it first "
                                  f"(caloforge train ... --stage {stage})")
        ckpt.load_modules(stage, modules)
        for m in modules.values():
            m.eval().requires_grad_(False)

    def device(self, stage: str) -> torch.device:
        """Where ``stage`` trains (its trainer's ``device`` under this process's
        ``LOCAL_RANK``): a stage's own passes over the data (encoding with a frozen earlier
        stage, fitting a map) run there too, in large batches."""
        from ..training import resolve_device

        tcfg = self.trainer_configs.get(stage) or self.spec.trainer_config(self.config, stage)
        return resolve_device(tcfg.device, int(os.environ.get("LOCAL_RANK", "0")))

    def checkpoint_meta(self) -> dict[str, Any]:
        return dict(config=config_to_manifest(self.config),
                    transforms=self.state.get("transforms", {}),
                    geometry=self.geometry.to_dict(), data_fingerprint=self.fingerprint)


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices, a seeded random split, each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _read(path: str | os.PathLike, geometry: CylindricalGeometry, max_showers: int | None):
    with ShowerFile(path, geometry, option="--data") as f:
        n = len(f) if max_showers is None else min(len(f), max_showers)
        if n < 20:
            raise ConfigError(f"--data {path}: {n} showers are too few to train on (at least 20)")
        data = f.read(0, n)
    showers = torch.from_numpy(np.ascontiguousarray(data.showers, dtype=np.float32))
    energies = torch.from_numpy(data.incident_energies.astype(np.float64).reshape(-1))
    return data, showers, energies


def _read_points(path: str | os.PathLike, max_showers: int | None):
    """Only the incident energies of a point-cloud file: its points stay on disk."""
    import h5py

    from ..io import point_cloud_file_length, read_point_clouds

    n = point_cloud_file_length(path)
    n = n if max_showers is None else min(n, max_showers)
    if n < 20:
        raise ConfigError(f"--data {path}: {n} showers are too few to train on (at least 20)")
    read_point_clouds(path, 0, min(n, 4))  # fails early, with the file named, when unreadable
    with h5py.File(path, "r") as f:
        e_gev = np.asarray(f["energies"][:n], dtype=np.float64).reshape(-1)
        counts = np.asarray(f["num_points"][:n], dtype=np.int64)
    energies = torch.from_numpy(e_gev * 1000.0)
    if not torch.isfinite(energies).all() or (energies <= 0).any():
        raise ConfigError(f"--data {path}: incident energies must be finite and positive")
    return {"energies": e_gev, "num_points": counts}, None, energies


def _stage_done(out: Path, stage: str, max_steps: int) -> bool:
    if not (out / MANIFEST_NAME).exists():
        return False
    ckpt = load_checkpoint(out)
    if stage not in ckpt.stages:
        return False
    step = ckpt.stage_info(stage).get("step")
    return step is None or step >= max_steps  # None: saved whole, not by the trainer


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _refuse_stale_dependents(spec, retrained: list[str], run: tuple[str, ...],
                             stored: set[str], out: Path) -> None:
    """Refuse to retrain a stage whose stored dependents (stages that read it frozen,
    directly or through others) this run would leave built on its old weights."""
    for name in retrained:
        dependents, frontier = set(), {name}
        while frontier:
            frontier = {t.name for t in spec.stages if set(t.requires) & frontier} - dependents
            dependents |= frontier
        stale = [t.name for t in spec.stages if t.name in dependents & stored
                 and t.name not in run]
        if stale:
            flags = " ".join(f"--stage {t}" for t in (name, *stale))
            raise CheckpointError(
                f"retraining stage {name!r} would leave the trained stage(s) "
                f"{', '.join(stale)} in {out} built on its old weights; retrain them with it "
                f"({flags}) or train into a new --out")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _warn_config_drift(spec, config: Any, stored: dict[str, Any] | None, run: tuple[str, ...],
                       stored_stages: list[str], out: Path) -> None:
    """Say which settings differ from the directory's stored config when stages trained
    with the stored one are kept: the directory's config becomes this run's, and a kept
    stage whose weights depend on a changed setting would no longer fit it."""
    kept = [s for s in stored_stages if s not in run]
    if not kept or stored is None:
        return
    try:
        _, old = config_from_manifest(stored, str(out), expect=spec.name)
    except CheckpointError as exc:
        # e.g. a setting refused since (a ViT narrower than its patches): the stages this
        # run trains replace the ones that depended on it, so say so and go on
        warnings.warn(f"the settings stored in {out} cannot be read ({exc}); the kept "
                      f"stage(s) {', '.join(kept)} keep their weights and the directory "
                      f"takes this run's settings", stacklevel=2)
        return
    a, b = _flat(config_to_dict(old)), _flat(config_to_dict(config))
    # a section named after a stage this run trains (``calibration.*`` when it refits the
    # calibration) belongs to that stage: changing it is the point of the run
    diff = [k for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith("training.")
            and k.split(".")[0] not in run]
    if diff:
        shown = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        warnings.warn(f"{out} was trained with other settings ({shown}{more}); the kept "
                      f"stage(s) {', '.join(kept)} keep their weights and the directory "
                      f"takes this run's settings: pass --set KEY=VALUE with the stored "
                      f"values where the kept stages depend on them", stacklevel=2)


def _refuse_kept_stages_that_no_longer_fit(spec, config: Any, run: tuple[str, ...],
                                           stored_stages: list[str], out: Path) -> None:
    """Refuse, before anything is written, a run whose settings build modules that the
    weights of a stage it keeps do not fit: the directory would take this run's settings
    and no longer load. Checked by opening the model over the stored weights with this
    run's config; a directory that cannot be opened as a model yet (stages missing), or
    whose first misfit is a stage this run retrains, is left to the run."""
    from ..checkpoints import WeightsMismatchError
    from .persist import reading_config

    kept = [s for s in stored_stages if s not in run]
    if not kept:
        return
    try:
        with reading_config(out, config):
            spec.generator.load(out, verify=False)
    except WeightsMismatchError as exc:
        if exc.stage in run:
            return
        raise ConfigError(
            f"this run's settings no longer fit the kept stage {exc.stage!r} of {out} "
            f"({exc.detail}); pass --set KEY=VALUE with the values it was trained with, or "
            f"retrain it (--stage {exc.stage})") from None
    except (CheckpointError, ConfigError):
        return


def train_pipeline(config: Any, data_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                   stages: tuple[str, ...] | None = None, resume: bool = False,
                   progress: bool = True, device: str | None = None,
                   seed: int | None = None):
    """Train ``stages`` (default: all, in order) of the pipeline ``config`` describes.

    Args:
        config: a registered pipeline's config (a preset, possibly with overrides).
        data_path: training file (CaloChallenge HDF5); the config's
            ``validation_fraction`` of it is held out.
        out_dir: checkpoint directory (created; later stages are added to it).
        stages: subset of the pipeline's stages; a stage whose frozen inputs are not in
            ``out_dir`` yet raises.
        resume: continue an interrupted run wherever it stopped.
        device: overrides every stage's trainer ``device``.
        seed: overrides every stage's trainer seed (and the split).

    Returns:
        The trained generator when every stage exists in ``out_dir``, else None.
    """
    # imported here: generation imports this module's types but never the training loop
    from ..training.trainer import Trainer, seed_everything

    spec = pipeline_for_config(config)
    active = spec.active_stages(config)
    stages = tuple(stages) if stages else active
    for s in stages:
        spec.stage(s)  # unknown names raise
        if s not in active:
            raise ConfigError(f"stage {s!r} does not apply to this {spec.name} configuration "
                              f"(its stages: {', '.join(active)})")
    trainer_cfgs = {s.name: spec.trainer_config(config, s.name) for s in spec.stages}
    for tc in trainer_cfgs.values():
        if device is not None:
            tc.device = device
        if seed is not None:
            tc.seed = int(seed)
    out = Path(out_dir)
    geometry = named_geometry(config.geometry)
    max_showers = getattr(config, "max_showers", None)
    if spec.data_kind == "points":
        data, showers, energies = _read_points(data_path, max_showers)
    else:
        data, showers, energies = _read(data_path, geometry, max_showers)
    split_seed = trainer_cfgs[spec.stages[0].name].seed
    train_idx, val_idx = split_indices(len(energies), getattr(config, "validation_fraction", 0.0),
                                       split_seed)
    ctx = StageContext(config=config, spec=spec, geometry=geometry, showers=showers,
                       energies=energies, train_idx=train_idx, val_idx=val_idx, out_dir=out,
                       resume=resume, stages=stages,
                       fingerprint=data_fingerprint(data, path=data_path),
                       trainer_configs=trainer_cfgs, data_path=Path(data_path),
                       progress=progress)
    del data
    if (out / MANIFEST_NAME).exists():
        ckpt = load_checkpoint(out, expect_geometry=geometry)
        stored = (ckpt.config or {}).get("pipeline")
        if stored not in (None, spec.name):
            raise CheckpointError(f"{out} holds a {stored!r} model, not a {spec.name!r} one")
        retrained = [s for s in stages if s in ckpt.stages
                     and not (resume and _stage_done(out, s, trainer_cfgs[s].max_steps))]
        _refuse_stale_dependents(spec, retrained, stages, set(ckpt.stages), out)
        _warn_config_drift(spec, config, ckpt.config, stages, list(ckpt.stages), out)
        _refuse_kept_stages_that_no_longer_fit(spec, config, stages, list(ckpt.stages), out)
    if spec.prepare is not None:
        spec.prepare(ctx)

    for stage_spec in spec.stages:
        name = stage_spec.name
        if name not in stages or name not in active:
            continue
        tcfg = trainer_cfgs[name]
        if resume and _stage_done(out, name, tcfg.max_steps):
            continue
        ckpt = ctx.checkpoint()
        missing = [r for r in stage_spec.requires
                   if r in active and (ckpt is None or r not in ckpt.stages)]
        if missing:
            raise CheckpointError(f"stage {name!r} needs the trained stage(s) {missing} in {out}; "
                                  f"train them first (caloforge train ... --stage {missing[0]})")
        # seeded before anything is built: model initialisation is part of the run
        seed_everything(tcfg.seed)
        build = stage_spec.build(ctx)
        if build is None:  # a post-hoc stage that did its work in build
            continue
        trainer = Trainer(build.stage, tcfg, build.train_data, build.val_data, out_dir=out,
                          checkpoint_meta=ctx.checkpoint_meta(), progress=progress)
        trainer.fit(resume=resume and has_trainer_state(out, name))
        del trainer, build
        _barrier()

    final = load_checkpoint(out)
    if all(s in final.stages for s in active):
        return spec.generator.load(out)
    return None
