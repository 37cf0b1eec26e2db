"""Named config presets (``calovq-ds2``, ``calovq-ds2-tiny``, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .schema import suggest

__all__ = ["get_preset", "list_presets", "preset_description", "register_preset"]

_PRESETS: dict[str, tuple[Callable[[], Any], str]] = {}

#: Each system declares its presets in its pipeline package; the pipeline registry loads
#: them on first use (they import models and training, which import this package).
_BUILTIN_PRESET_MODULES = ("caloforge.pipelines",)
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import importlib

        for module in _BUILTIN_PRESET_MODULES:
            importlib.import_module(module).load_builtin_pipelines()


def register_preset(name: str, factory: Callable[[], Any], description: str = "") -> None:
    """Register ``factory`` (no arguments, returns a fresh config) under ``name``."""
    if name in _PRESETS and _PRESETS[name][0] is not factory:
        raise ConfigError(f"preset {name!r} is already registered")
    _PRESETS[name] = (factory, description)


def list_presets() -> list[str]:
    """Registered preset names, sorted."""
    _load_builtins()
    return sorted(_PRESETS)


def _entry(name: str) -> tuple[Callable[[], Any], str]:
    _load_builtins()
    if name not in _PRESETS:
        known = list_presets()
        raise ConfigError(
            f"unknown preset {name!r}{suggest(name, known)}; known presets: "
            f"{', '.join(known) if known else '(none registered)'}"
        )
    return _PRESETS[name]


def get_preset(name: str) -> Any:
    """A fresh config object built by the preset's factory."""
    return _entry(name)[0]()


def preset_description(name: str) -> str:
    """The one-line description given at registration."""
    return _entry(name)[1]
