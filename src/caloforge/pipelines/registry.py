"""The pipeline registry: each seed system declares itself here once.

A :class:`PipelineSpec` names a system's config type, its training stages in order, its
generator class and its presets. The CLI (``train``, ``generate``, ``bench``, ``run``,
``info``), checkpoint loading and the generic staged trainer dispatch through it, so no
code outside a system's own package names that system.

Systems live in sub-packages of :mod:`caloforge.pipelines` (``pipelines/calovq/``,
``pipelines/calodream/``, ...); each registers its spec when imported, and
:func:`load_builtin_pipelines` imports every such sub-package, so adding a system adds
a package and touches nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..configs import config_from_dict, config_to_dict, register_preset, suggest
from ..errors import CheckpointError, ConfigError

__all__ = [
    "DATA_KINDS",
    "PipelineSpec",
    "StageSpec",
    "config_from_manifest",
    "config_to_manifest",
    "get_pipeline",
    "load_builtin_pipelines",
    "pipeline_for_config",
    "pipeline_for_preset",
    "register_pipeline_spec",
    "registered_pipelines",
]


@dataclass(frozen=True)
class StageSpec:
    """One training stage of a pipeline.

    Attributes:
        name: stage name; weights go to ``<checkpoint>/<name>.safetensors``.
        build: ``build(ctx) -> StageBuild`` (see :mod:`caloforge.pipelines.staged`): the
            :class:`~caloforge.training.TrainingStage` to train, its data and the fitted
            transforms to store; it reads the frozen earlier stages from ``ctx``.
        requires: stages that must already be trained (frozen inputs of this one).
        description: one line for ``caloforge train --list``.
        enabled: ``enabled(config) -> bool``; a stage that does not apply to a
            configuration (e.g. CaloDREAM's VAE in full space) is skipped. None: always.

    A stage whose ``build`` returns None did its work itself (e.g. a solver or
    calibration fit with its own loop) and saved its result into the checkpoint.
    """

    name: str
    build: Callable[[Any], Any]
    requires: tuple[str, ...] = ()
    description: str = ""
    enabled: Callable[[Any], bool] | None = None

    def applies(self, config: Any) -> bool:
        return self.enabled is None or bool(self.enabled(config))


@dataclass(frozen=True)
class PipelineSpec:
    """Everything the framework needs to know about one seed system.

    Attributes:
        name: stored in checkpoints (``"pipeline"`` of the config), e.g. ``"calovq"``.
        config_type: the system's config dataclass.
        stages: training stages, in order.
        generator: class with ``load(path, map_location)`` returning a
            :class:`~caloforge.pipelines.ShowerGenerator`.
        presets: ``{preset name: (factory, description)}``.
        trainer_config: ``trainer_config(config, stage) -> TrainerConfig`` (settings keyed
            by stage name).
        prepare: ``prepare(ctx)`` run once before the stages (fit or reload transforms).
        config_version: version of the stored config layout; ``migrate`` upgrades older
            stored configs (``migrate(body, version) -> body``).
        description: one line for listings.
        data_kind: what the system trains on and generates: ``"voxels"`` (CaloChallenge
            files, :class:`~caloforge.io.ShowerData`) or ``"points"`` (point clouds in
            the showerdata layout, :class:`~caloforge.io.PointCloudData`).
    """

    name: str
    config_type: type
    stages: tuple[StageSpec, ...]
    generator: type
    trainer_config: Callable[[Any, str], Any]
    presets: Mapping[str, tuple[Callable[[], Any], str]] = field(default_factory=dict)
    prepare: Callable[[Any], None] | None = None
    config_version: int = 1
    migrate: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    description: str = ""
    data_kind: str = "voxels"

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def active_stages(self, config: Any) -> tuple[str, ...]:
        """The stages that apply to ``config``, in training order."""
        return tuple(s.name for s in self.stages if s.applies(config))

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"pipeline {self.name!r} has no stage {name!r}"
                          f"{suggest(name, self.stage_names)}; its stages: "
                          f"{', '.join(self.stage_names)}")


#: What pipelines may train on and generate.
DATA_KINDS = ("voxels", "points")

_REGISTRY: dict[str, PipelineSpec] = {}
_builtins_loaded = False


def register_pipeline_spec(spec: PipelineSpec) -> PipelineSpec:
    """Register a system (once) and its presets."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"pipeline {spec.name!r} registered twice")
    if not dataclasses.is_dataclass(spec.config_type):
        raise TypeError(f"config type of pipeline {spec.name!r} must be a dataclass")
    if spec.data_kind not in DATA_KINDS:
        raise ValueError(f"pipeline {spec.name!r}: data_kind must be one of {DATA_KINDS}")
    names = spec.stage_names
    if len(set(names)) != len(names):
        raise ValueError(f"pipeline {spec.name!r} has repeated stage names {names}")
    for i, s in enumerate(spec.stages):
        early = set(names[:i])
        if not set(s.requires) <= early:
            raise ValueError(f"stage {s.name!r} of {spec.name!r} requires "
                             f"{sorted(set(s.requires) - early)}, which do not come before it")
    _REGISTRY[spec.name] = spec
    spec.generator.pipeline_name = spec.name
    for preset, (factory, doc) in spec.presets.items():
        register_preset(preset, factory, doc)
    return spec


def load_builtin_pipelines() -> None:
    """Import every system package below :mod:`caloforge.pipelines` (each registers itself)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if info.ispkg:
            importlib.import_module(f"{__package__}.{info.name}")


def registered_pipelines() -> tuple[str, ...]:
    load_builtin_pipelines()
    return tuple(sorted(_REGISTRY))


def get_pipeline(name: str) -> PipelineSpec:
    """The spec registered under ``name``."""
    load_builtin_pipelines()
    if name not in _REGISTRY:
        known = sorted(_REGISTRY)
        raise ConfigError(f"unknown pipeline {name!r}{suggest(str(name), known)}; known "
                          f"pipelines: {', '.join(known) or 'none'}")
    return _REGISTRY[name]


def pipeline_for_config(config: Any) -> PipelineSpec:
    """The spec whose config type ``config`` is."""
    load_builtin_pipelines()
    for spec in _REGISTRY.values():
        if type(config) is spec.config_type:
            return spec
    raise ConfigError(f"no pipeline trains a {type(config).__name__}")


def pipeline_for_preset(preset: str) -> PipelineSpec:
    """The spec that declares ``preset`` (unknown presets raise, with a suggestion)."""
    load_builtin_pipelines()
    for spec in _REGISTRY.values():
        if preset in spec.presets:
            return spec
    known = sorted(p for s in _REGISTRY.values() for p in s.presets)
    raise ConfigError(f"unknown preset {preset!r}{suggest(preset, known)}; known presets: "
                      f"{', '.join(known)}")


# ------------------------------------------------------------------ stored configs
def config_to_manifest(config: Any) -> dict[str, Any]:
    """The config as stored in a checkpoint: tagged with its pipeline and layout version."""
    spec = pipeline_for_config(config)
    return {"pipeline": spec.name, "config_version": spec.config_version,
            **config_to_dict(config)}


def config_from_manifest(stored: Mapping[str, Any] | None, where: str,
                         expect: str | None = None) -> tuple[PipelineSpec, Any]:
    """(spec, config) from a checkpoint's stored config, strictly.

    Every field must be present (a checkpoint records its whole config: a missing key
    means a damaged or hand-edited manifest, and a default would silently change the
    model) and unknown keys are errors; older layouts are upgraded by the pipeline's
    ``migrate``.
    """
    if not isinstance(stored, Mapping) or "pipeline" not in stored:
        raise CheckpointError(f"{where} does not say which pipeline made it")
    spec = get_pipeline(str(stored["pipeline"])) if expect is None else get_pipeline(expect)
    if stored["pipeline"] != spec.name:
        raise CheckpointError(f"{where} is a {stored['pipeline']!r} checkpoint, not a "
                              f"{spec.name!r} one")
    body = {k: v for k, v in stored.items() if k not in ("pipeline", "config_version")}
    version = stored.get("config_version", 0)
    if not isinstance(version, int) or version > spec.config_version:
        raise CheckpointError(f"{where}: stored config version {version!r} is newer than this "
                              f"caloforge reads ({spec.config_version})")
    if version < spec.config_version:
        if spec.migrate is None:
            raise CheckpointError(f"{where}: stored config version {version} cannot be read")
        body = spec.migrate(dict(body), version)
    try:
        config = config_from_dict(spec.config_type, body, require_all=True)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: stored configuration is invalid: {exc}") from None
    return spec, config
