"""Typed dataclass configs: strict conversion from and to plain dicts.

``config_from_dict`` walks the dataclass fields recursively and refuses unknown keys
(naming them, with a close match when there is one), missing required fields and values
of the wrong type, so a typo in a TOML file or a ``--set`` never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from ..errors import ConfigError

__all__ = ["SPEED_SETTING", "config_from_dict", "config_to_dict", "suggest"]

#: Field metadata of a setting that changes how fast something runs, never what it
#: computes (e.g. fused optimizer kernels). A stored config written before such a field
#: existed reads with its default instead of failing ``require_all``, so adding one does
#: not need a layout migration in every pipeline.
SPEED_SETTING: Mapping[str, Any] = types.MappingProxyType({"speed_setting": True})

C = TypeVar("C")


def suggest(name: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _where(path: str) -> str:
    return f" at '{path}'" if path else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str, require_all: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        # Tagged union of dataclasses: pick the member whose `type` default matches.
        if (
            isinstance(value, Mapping)
            and "type" in value
            and all(dataclasses.is_dataclass(a) for a in options)
        ):
            for a in options:
                f = {x.name: x for x in dataclasses.fields(a)}.get("type")
                if f is not None and f.default == value["type"]:
                    return config_from_dict(a, value, require_all=require_all, _path=path)
            tags = [
                {x.name: x for x in dataclasses.fields(a)}["type"].default
                for a in options
                if "type" in {x.name for x in dataclasses.fields(a)}
            ]
            raise ConfigError(
                f"unknown type {value['type']!r}{_where(path)}{suggest(str(value['type']), tags)}; "
                f"known: {tags}"
            )
        errors = []
        for a in options:
            try:
                return _convert(a, value, path, require_all)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"value {value!r}{_where(path)} does not match {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"value {value!r}{_where(path)} must be one of {list(args)}"
                f"{suggest(str(value), [str(a) for a in args])}"
            )
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table for {tp.__name__}{_where(path)}, got {value!r}")
        return config_from_dict(tp, value, require_all=require_all, _path=path)
    if origin in (list, tuple, typing.Sequence, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list{_where(path)}, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(
                    f"expected {len(args)} values{_where(path)}, got {len(value)}: {value!r}"
                )
            return tuple(
                _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table{_where(path)}, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, f"{path}.{k}", require_all) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true/false{_where(path)}, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer{_where(path)}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number{_where(path)}, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string{_where(path)}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"expected nothing (None){_where(path)}, got {value!r}")
        return None
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"expected {tp.__name__}{_where(path)}, got {value!r}")
        return value
    return value  # an annotation we do not check (e.g. a Protocol)


def config_from_dict(cls: type[C], d: Mapping[str, Any], *, require_all: bool = False,
                     _path: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) dict, strictly.

    With ``require_all`` every field must be given, also those with defaults (configs
    stored in checkpoints record every field; a missing one is damage, not a default),
    except fields marked :data:`SPEED_SETTING`, which take their default.

    Raises:
        ConfigError: unknown key (with a close-match suggestion), missing required field,
            or a value of the wrong type; the message names the dotted key.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if not isinstance(d, Mapping):
        raise ConfigError(f"expected a table for {cls.__name__}{_where(_path)}, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in d:
        if key not in fields:
            full = f"{_path}.{key}" if _path else str(key)
            raise ConfigError(
                f"unknown config key '{full}' for {cls.__name__}{suggest(str(key), fields)}; "
                f"known keys: {', '.join(fields)}"
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{_path}.{name}" if _path else name
        if name in d:
            kwargs[name] = _convert(hints.get(name, Any), d[name], sub, require_all)
        elif (require_all and not f.metadata.get("speed_setting")) or (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"missing required config key '{sub}' for {cls.__name__}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid {cls.__name__}{_where(_path)}: {exc}") from exc


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> nested dict of JSON/TOML values (tuples become lists)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"{cfg!r} is not a dataclass instance")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
