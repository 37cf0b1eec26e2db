"""Self-describing, pickle-free checkpoint directories.

Layout (one directory per trained pipeline; every stage saves into it)::

    DIR/checkpoint.json          manifest, written last and atomically
    DIR/<stage>.safetensors      the stage's weights for inference (EMA weights when the
                                 trainer keeps an EMA), keys "<module>/<tensor name>"
    DIR/<stage>.trainer/         resume state (only while/after training with a Trainer):
        state.safetensors        raw weights, EMA weights, optimizer tensors
        state.json               step, optimizer hyper-parameters, RNG states, scaler

``checkpoint.json`` holds the format version, the caloforge version, the pipeline config,
the fitted transforms' states, the geometry (``to_dict``), and per stage the weights
file's sha256 and size, the step, the training data's fingerprint and provenance. Nothing
is pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import CheckpointError
from ..io.atomic import atomic_path, is_environment_error, is_stale_temporary, output_error

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Checkpoint",
    "data_fingerprint",
    "has_trainer_state",
    "load_checkpoint",
    "load_trainer_state",
    "provenance",
    "save_checkpoint",
    "save_trainer_state",
]

#: Version of the directory layout and manifest; bumped on incompatible changes.
FORMAT_VERSION = 1
MANIFEST_NAME = "checkpoint.json"
_FORMAT_TAG = "caloforge-checkpoint"


# ------------------------------------------------------------------ fingerprints
def _arrays_of(data: Any) -> list[tuple[str, Any]]:
    if hasattr(data, "showers") and hasattr(data, "incident_energies"):
        return [("incident_energies", data.incident_energies), ("showers", data.showers)]
    if isinstance(data, Mapping):
        return [(str(k), data[k]) for k in sorted(data)]
    if isinstance(data, (list, tuple)):
        return [(str(i), a) for i, a in enumerate(data)]
    return [("data", data)]


def data_fingerprint(data: Any, *, path: str | os.PathLike | None = None, n_rows: int = 16) -> str:
    """A short, stable identity of a training set: ``"sha256:<hex>"``.

    Hashes the file's basename and size (when ``path`` is given), and for every array
    (a ShowerData's energies and showers, a mapping's values in key order, a sequence,
    or one array/tensor/h5py dataset) its shape, dtype and ``n_rows`` rows spread evenly
    from first to last. Cheap on files larger than memory; detects a different file, a
    different subset or different preprocessing of the same file, not every edited value.
    """
    h = hashlib.sha256()
    if path is not None:
        p = Path(path)
        h.update(f"file:{p.name}:{p.stat().st_size if p.exists() else -1}".encode())
    for name, arr in _arrays_of(data):
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        shape = tuple(int(s) for s in arr.shape)
        dtype = str(np.dtype(arr.dtype))
        h.update(f"array:{name}:{shape}:{dtype}".encode())
        if shape and shape[0] > 0:
            idx = np.unique(
                np.linspace(0, shape[0] - 1, num=min(n_rows, shape[0])).astype(np.int64)
            )
            rows = np.ascontiguousarray(np.asarray(arr[idx]))
            h.update(rows.tobytes())
    return "sha256:" + h.hexdigest()


def provenance() -> dict[str, Any]:
    """Who made this and how: command line, UTC time, host, Python/torch/caloforge versions."""
    return {
        "argv": list(sys.argv),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "caloforge": __version__,
    }


# ------------------------------------------------------------------ helpers
def _unreadable(path: Path, exc: OSError) -> CheckpointError:
    """The one-line error for a checkpoint file the process cannot read."""
    reason = "permission denied" if isinstance(exc, PermissionError) else \
        str(exc.strerror or exc).lower()
    return CheckpointError(f"cannot read {path}: {reason}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:  # permissions, a directory in the way, I/O errors
        raise _unreadable(path, exc) from None
    return h.hexdigest()


def _flatten(modules: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """{module: nn.Module | state dict} -> {"module/tensor": contiguous CPU copy}."""
    out: dict[str, torch.Tensor] = {}
    for mname, mod in modules.items():
        if "/" in mname:
            raise ValueError(f"module name {mname!r} must not contain '/'")
        sd = mod.state_dict() if isinstance(mod, torch.nn.Module) else mod
        for k, v in sd.items():
            # A copy: safetensors refuses tensors that share storage (tied weights).
            out[f"{mname}/{k}"] = v.detach().to("cpu", copy=True).contiguous()
    return out


def _check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse NaN/inf weights: a diverged training must not become a valid checkpoint."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{what}: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]!r}); the training "
            "diverged or its state is corrupt, so nothing was saved"
        )


def _unflatten(flat: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        mname, _, tname = key.partition("/")
        out.setdefault(mname, {})[tname] = v
    return out


def _save_tensors(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), tmp, metadata=metadata)


def _load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError as exc:
        if Path(path).exists():  # safetensors reports any failure to open as "not found"
            try:
                open(path, "rb").close()
            except OSError as why:
                raise _unreadable(path, why) from None
        raise CheckpointError(f"missing weights file {path}") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise CheckpointError(f"corrupt or truncated weights file {path}: {exc}") from exc


def _to_jsonable(x: Any) -> Any:
    # a geometry's own description first: a planar geometry is also a dataclass, and
    # its generic field dump would lose the "type" tag that rebuilds it
    if hasattr(x, "to_dict") and hasattr(x, "same_binning"):
        return x.to_dict()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        from ..configs import config_to_dict

        return config_to_dict(x)
    if hasattr(x, "state_dict") and hasattr(x, "type_name"):  # a Transform
        return x.state_dict()
    if hasattr(x, "to_dict"):  # a geometry
        return x.to_dict()
    return x


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a caloforge checkpoint: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt {path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_TAG:
        raise CheckpointError(f"{path} is not a caloforge checkpoint manifest")
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        raise CheckpointError(f"{path} lacks the 'stages' table of a caloforge checkpoint")
    for name, info in stages.items():
        if not isinstance(info, dict) or not isinstance(info.get("weights"), str):
            raise CheckpointError(f"{path}: stage {name!r} names no weights file")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {directory} has format version {version} (written by caloforge "
            f"{manifest.get('caloforge_version', '?')}); this caloforge {__version__} reads "
            f"format version {FORMAT_VERSION}"
        )
    return manifest


def _same_geometry(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # Names may differ for the same binning (a user's XML vs a preset): compare binning.
    keys = {"type", "r_edges", "n_alpha"}
    if (
        a.get("type", "cylindrical") == "cylindrical"
        and b.get("type", "cylindrical") == "cylindrical"
    ):
        return all(
            json.dumps(a.get(k, "cylindrical" if k == "type" else None))
            == json.dumps(b.get(k, "cylindrical" if k == "type" else None))
            for k in keys
        )
    return json.dumps({k: v for k, v in a.items() if k != "name"}, sort_keys=True) == json.dumps(
        {k: v for k, v in b.items() if k != "name"}, sort_keys=True
    )


# ------------------------------------------------------------------ save
def save_checkpoint(
    directory: str | os.PathLike,
    stage: str,
    modules: Mapping[str, torch.nn.Module | Mapping[str, torch.Tensor]],
    *,
    config: Any = None,
    transforms: Mapping[str, Any] | None = None,
    geometry: Any = None,
    data_fingerprint: str | None = None,
    step: int | None = None,
    ema: bool = False,
    trainer_state: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write (or replace) one stage's weights in ``directory`` and update the manifest.

    Args:
        directory: checkpoint directory (created if needed); earlier stages stay.
        stage: stage name, used for ``<stage>.safetensors``.
        modules: ``{name: nn.Module or state dict}``; saved as ``"<name>/<tensor>"``.
        config: pipeline config (dataclass or dict), replaces the stored one when given.
        transforms: ``{name: Transform or state dict}``, merged into the stored ones.
        geometry: geometry object or ``to_dict()``; must equal the one already stored.
        data_fingerprint: :func:`data_fingerprint` of the stage's training data.
        step: training step of these weights.
        ema: whether the weights are EMA weights.
        trainer_state: whether ``<stage>.trainer/`` holds resume state for this save.
        extra: any further JSON-serialisable facts about the stage.

    Returns:
        The directory path. The weights are written first, the manifest last, each
        atomically; the manifest records the weights' sha256, so a weights file replaced
        without its manifest is reported as corrupt rather than loaded.
    """
    if not stage or "/" in stage or stage.startswith("."):
        raise ValueError(f"bad stage name {stage!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if (d / MANIFEST_NAME).exists():
        manifest = _read_manifest(d)
    else:
        manifest = {
            "format": _FORMAT_TAG,
            "format_version": FORMAT_VERSION,
            "caloforge_version": __version__,
            "config": None,
            "geometry": None,
            "transforms": {},
            "stages": {},
        }
    if geometry is not None:
        g = _to_jsonable(geometry)
        if manifest["geometry"] is not None and not _same_geometry(manifest["geometry"], g):
            raise CheckpointError(
                f"checkpoint {d} holds stages for geometry {manifest['geometry'].get('name')!r}; "
                f"cannot add stage {stage!r} for geometry {g.get('name')!r}"
            )
        manifest["geometry"] = g
    if config is not None:
        manifest["config"] = _to_jsonable(config)
    for name, t in (transforms or {}).items():
        manifest["transforms"][name] = _to_jsonable(t)

    flat = _flatten(modules)
    _check_finite(flat, f"stage {stage!r}")
    weights = d / f"{stage}.safetensors"
    _save_tensors(flat, weights, {"format": "pt", "caloforge_stage": stage})
    prov = provenance()
    manifest["caloforge_version"] = __version__
    manifest["provenance"] = prov
    manifest["stages"][stage] = {
        "weights": weights.name,
        "sha256": _sha256(weights),
        "size": weights.stat().st_size,
        "modules": list(modules),
        "step": step,
        "ema": bool(ema),
        "trainer_state": f"{stage}.trainer" if trainer_state else None,
        "data_fingerprint": data_fingerprint,
        "provenance": prov,
        "extra": dict(extra or {}),
    }
    _write_json(d / MANIFEST_NAME, manifest)
    return d


# ------------------------------------------------------------------ load
@dataclasses.dataclass
class Checkpoint:
    """A loaded manifest plus lazy access to each stage's weights."""

    path: Path
    manifest: dict[str, Any]
    #: check every weights file against the manifest's sha256 (a missing hash is an error)
    verify: bool = True

    @property
    def stages(self) -> list[str]:
        return list(self.manifest["stages"])

    @property
    def config(self) -> dict[str, Any] | None:
        return self.manifest.get("config")

    @property
    def geometry(self) -> Any:
        """The geometry object rebuilt from ``to_dict()``, or None."""
        g = self.manifest.get("geometry")
        if g is None:
            return None
        from ..geometry import geometry_from_dict

        return geometry_from_dict(g)

    def transforms(self) -> dict[str, Any]:
        """``{name: Transform}`` rebuilt from their stored states."""
        from ..transforms import transform_from_state

        return {k: transform_from_state(v) for k, v in self.manifest.get("transforms", {}).items()}

    def stage_info(self, stage: str) -> dict[str, Any]:
        if stage not in self.manifest["stages"]:
            raise CheckpointError(
                f"checkpoint {self.path} has no stage {stage!r}; it has {self.stages or 'none'}"
            )
        return self.manifest["stages"][stage]

    def state_dicts(
        self, stage: str, map_location: str | torch.device = "cpu"
    ) -> dict[str, dict[str, torch.Tensor]]:
        """``{module: state dict}`` of a stage, after checking size and sha256.

        The weights file must lie inside the checkpoint directory, and its sha256 must be
        recorded in the manifest and match, unless the checkpoint was opened with
        ``verify=False`` (hand-made checkpoints; the CLI's ``--no-verify``).
        """
        info = self.stage_info(stage)
        path = _confined(self.path, info["weights"])
        if not path.is_file():
            raise CheckpointError(f"checkpoint {self.path} lacks weights file {info['weights']}")
        size = path.stat().st_size
        if size != info.get("size", size):
            raise CheckpointError(
                f"weights file {path} is {size} bytes, the manifest says {info['size']}: "
                "truncated or replaced"
            )
        if self.verify:
            if not info.get("sha256"):
                raise CheckpointError(
                    f"checkpoint {self.path}: stage {stage!r} records no sha256 for its weights, "
                    "so they cannot be verified (load with verify=False / --no-verify to trust "
                    "a hand-made checkpoint)"
                )
            if _sha256(path) != info["sha256"]:
                raise CheckpointError(
                    f"weights file {path} does not match its sha256 in the manifest: corrupt, "
                    "or an interrupted save"
                )
        tensors = _load_tensors(path, map_location)
        _check_finite(tensors, f"checkpoint {self.path}, stage {stage!r}")
        return _unflatten(tensors)

    def load_modules(
        self, stage: str, modules: Mapping[str, torch.nn.Module], *, strict: bool = True
    ) -> None:
        """Load a stage's weights into ``{name: module}`` (names as saved)."""
        sds = self.state_dicts(stage)
        missing = set(modules) - set(sds)
        if missing:
            raise CheckpointError(
                f"stage {stage!r} in {self.path} has no module(s) {sorted(missing)}; "
                f"it has {sorted(sds)}"
            )
        for name, mod in modules.items():
            try:
                mod.load_state_dict(sds[name], strict=strict)
            except RuntimeError as exc:
                detail = _misfit(mod.state_dict(), sds[name], exc)
                raise WeightsMismatchError(
                    f"weights of module {name!r} (stage {stage!r}) in {self.path} do not fit "
                    f"the model its config builds: {detail}", stage=stage,
                    detail=detail.replace(_STORED_MISMATCH, ""),
                ) from exc


class WeightsMismatchError(CheckpointError):
    """A stage's stored weights do not fit the modules the stored config builds."""

    def __init__(self, message: str, *, stage: str, detail: str) -> None:
        super().__init__(message)
        self.stage, self.detail = stage, detail


_STORED_MISMATCH = "; the stored config does not match the stored weights"


def _misfit(expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor],
            exc: Exception) -> str:
    """One line on why stored tensors do not load into a module: the first tensor whose
    shape differs (and how many more), else missing or unexpected names, else torch's
    own message folded onto one line."""
    shapes = [k for k in expected if k in stored
              and tuple(expected[k].shape) != tuple(stored[k].shape)]
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more tensor(s))" if len(shapes) > 1 else ""
        return (f"{k} is {tuple(stored[k].shape)} in the file but {tuple(expected[k].shape)} "
                f"in the model{more}{_STORED_MISMATCH}")
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        return f"missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}"
    return " ".join(str(exc).split())


def _confined(directory: Path, name: str) -> Path:
    """``directory / name``, refusing names that lead outside the directory."""
    target = (directory / name).resolve()
    if Path(name).is_absolute() or directory.resolve() not in target.parents:
        raise CheckpointError(
            f"checkpoint {directory}: file name {name!r} points outside the checkpoint directory"
        )
    return target


def load_checkpoint(directory: str | os.PathLike, *, expect_geometry: Any = None,
                    verify: bool = True) -> Checkpoint:
    """Open a checkpoint directory and check its manifest.

    Raises:
        CheckpointError: missing directory or manifest, corrupt JSON, another format
            version, or a geometry other than ``expect_geometry`` (compared by binning).
    """
    d = Path(directory)
    manifest = _read_manifest(d)
    if expect_geometry is not None:
        want = _to_jsonable(expect_geometry)
        have = manifest.get("geometry")
        if have is None:
            raise CheckpointError(
                f"checkpoint {d} records no geometry; expected {want.get('name')!r}"
            )
        if not _same_geometry(have, want):
            raise CheckpointError(
                f"checkpoint {d} was made for geometry {have.get('name')!r}, not for "
                f"{want.get('name')!r} (different voxel binning)"
            )
    return Checkpoint(d, manifest, verify=verify)


# ------------------------------------------------------------------ trainer state
def save_trainer_state(
    directory: str | os.PathLike,
    stage: str,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``DIR/<stage>.trainer/`` (state.safetensors + state.json) atomically.

    The state is written into a temporary directory which then replaces the old one, so
    a reader sees the old or the new state, never a mix.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{stage}.trainer"
    _remove_stale_state_dirs(d, stage)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stage}.trainer.p{os.getpid()}-", dir=d))
    try:
        from safetensors.torch import save_file

        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        _check_finite(cpu, f"resume state of stage {stage!r}")
        save_file(cpu, str(tmp / "state.safetensors"))
        meta = dict(meta, tensors_sha256=_sha256(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps(meta, allow_nan=False) + "\n", encoding="utf-8"
        )
        old = None
        if final.exists():
            old = d / f".{stage}.trainer.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_environment_error(exc):  # a full disk, permissions: one line, not a traceback
            raise output_error(str(final), exc) from None
        raise
    return final


def _remove_stale_state_dirs(d: Path, stage: str) -> None:
    """Remove the half-written state directories ``.<stage>.trainer.p<PID>-*`` of killed
    runs (and the older naming without a process id), and a swapped-out old copy
    ``.<stage>.trainer.old-<PID>`` of a dead process once the new state is in place: a
    run killed while saving must not leave a copy of its optimiser state behind."""
    prefix = f".{stage}.trainer."
    for p in d.iterdir():
        if not p.name.startswith(prefix) or p.is_symlink() or not p.is_dir():
            continue
        rest = p.name[len(prefix):]
        try:
            if rest.startswith("old-"):
                pid = rest[4:]
                stale = (d / f"{stage}.trainer").is_dir() and pid.isdigit() and \
                    is_stale_temporary(f"p{pid}-", p.stat().st_mtime)
            else:
                stale = is_stale_temporary(rest, p.stat().st_mtime)
        except OSError:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)


def load_trainer_state(
    directory: str | os.PathLike, stage: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_trainer_state` wrote; CheckpointError when absent or corrupt."""
    d = Path(directory) / f"{stage}.trainer"
    if not d.is_dir():
        # An interrupted swap leaves only the old copy; fall back to it.
        olds = sorted(Path(directory).glob(f".{stage}.trainer.old-*"))
        if not olds:
            raise CheckpointError(f"no resume state for stage {stage!r} in {directory}")
        d = olds[-1]
    try:
        meta = json.loads((d / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"resume state {d} lacks state.json") from exc
    except OSError as exc:
        raise _unreadable(d / "state.json", exc) from None
    except ValueError as exc:
        raise CheckpointError(f"corrupt resume state {d / 'state.json'}: {exc}") from exc
    if not isinstance(meta, dict) or not meta.get("tensors_sha256"):
        raise CheckpointError(f"resume state {d} records no sha256 of its tensors")
    if _sha256(d / "state.safetensors") != meta["tensors_sha256"]:
        raise CheckpointError(f"resume state {d / 'state.safetensors'} does not match its "
                              "sha256: corrupt, or replaced")
    tensors = _load_tensors(d / "state.safetensors")
    _check_finite(tensors, f"resume state {d}")
    return tensors, meta


def has_trainer_state(directory: str | os.PathLike, stage: str) -> bool:
    """Whether ``directory`` holds resume state for ``stage`` (possibly an interrupted swap)."""
    d = Path(directory)
    return (d / f"{stage}.trainer").is_dir() or any(d.glob(f".{stage}.trainer.old-*"))
