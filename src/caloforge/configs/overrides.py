"""Config overrides: TOML files and ``key.path=value`` strings from the command line."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError
from .schema import config_from_dict, config_to_dict, suggest

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 without tomllib
    _toml = None

__all__ = ["apply_overrides", "load_toml", "merge_dicts", "override_config", "parse_value"]

C = TypeVar("C")


def _need_toml() -> Any:
    if _toml is None:
        raise ConfigError(
            "reading TOML needs Python >= 3.11 (tomllib); on Python 3.10 use --set overrides "
            "or upgrade Python"
        )
    return _toml


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file into a dict; ConfigError names the file and the syntax problem."""
    toml = _need_toml()
    try:
        with open(path, "rb") as fh:
            return toml.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied (the file is not readable)"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})"
                          ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"invalid TOML in {path}: not UTF-8 text") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from exc


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value``.

    TOML literals first (``1e-4``, ``4``, ``true``, ``"x"``, ``[1, 2]``, ``{a = 1}``), then
    JSON and Python-style numbers (``.5``, ``1.``); anything else is a bare string, so
    ``model.kind=vqgan`` needs no quotes.
    """
    text = text.strip()
    if _toml is not None:
        try:
            return _toml.loads(f"v = {text}")["v"]
        except _toml.TOMLDecodeError:
            pass
    try:
        return json.loads(text)
    except ValueError:
        pass
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _descend(d: dict[str, Any], keys: list[str], full: str) -> dict[str, Any]:
    node: Any = d
    for i, k in enumerate(keys):
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{full}': '{'.'.join(keys[:i])}' is not a table")
        if k not in node:
            raise ConfigError(
                f"unknown config key '{'.'.join(keys[: i + 1])}' in override '{full}'"
                f"{suggest(k, node)}"
            )
        node = node[k]
    if not isinstance(node, dict):
        raise ConfigError(f"cannot set '{full}': '{'.'.join(keys)}' is not a table")
    return node


def apply_overrides(d: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``d`` with ``"a.b.c=value"`` overrides applied in order.

    Only existing keys can be set (start from ``config_to_dict(preset)``, which holds every
    key); an unknown path raises ConfigError naming it, with a close match.
    """
    out = copy.deepcopy(dict(d))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, _, text = item.partition("=")
        keys = [k.strip() for k in key.strip().split(".")]
        if not all(keys):
            raise ConfigError(f"override {item!r} has an empty key")
        parent = _descend(out, keys[:-1], key.strip())
        if keys[-1] not in parent:
            raise ConfigError(
                f"unknown config key '{key.strip()}' in override{suggest(keys[-1], parent)}; "
                f"known keys there: {', '.join(parent)}"
            )
        parent[keys[-1]] = parse_value(text)
    return out


def merge_dicts(
    base: Mapping[str, Any], update: Mapping[str, Any], _path: str = ""
) -> dict[str, Any]:
    """Deep-merge ``update`` (e.g. a TOML file) into a copy of ``base``.

    Tables merge key by key, except a table naming another ``type`` than the base's,
    which replaces it whole (switching a tagged union member); other values replace.
    A key absent from ``base`` raises
    ConfigError, so a typo in a file fails like a typo in ``--set``.
    """
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        full = f"{_path}.{k}" if _path else k
        if k not in out:
            raise ConfigError(f"unknown config key '{full}'{suggest(k, out)}")
        same_kind = (
            "type" not in v or v["type"] == out[k].get("type") if isinstance(v, Mapping) else False
        )
        if isinstance(out[k], dict) and isinstance(v, Mapping) and same_kind:
            out[k] = merge_dicts(out[k], v, full)
        else:
            out[k] = copy.deepcopy(v)
    return out


def override_config(
    cfg: C,
    *,
    toml_files: Iterable[str | os.PathLike] = (),
    overrides: Iterable[str] = (),
) -> C:
    """A new config: ``cfg`` with TOML files merged in order, then ``--set`` overrides.

    The result is rebuilt with :func:`config_from_dict`, so every type is checked.
    """
    d = config_to_dict(cfg)
    for path in toml_files:
        d = merge_dicts(d, load_toml(path))
    d = apply_overrides(d, overrides)
    return config_from_dict(type(cfg), d)
