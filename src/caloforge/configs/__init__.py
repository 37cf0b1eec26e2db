"""Typed dataclass configurations: strict dict conversion, TOML, overrides and presets."""

from .overrides import (
    apply_overrides,
    load_toml,
    merge_dicts,
    override_config,
    parse_value,
)
from .registry import get_preset, list_presets, preset_description, register_preset
from .schema import SPEED_SETTING, config_from_dict, config_to_dict, suggest

__all__ = [
    "SPEED_SETTING",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
    "list_presets",
    "load_toml",
    "merge_dicts",
    "override_config",
    "parse_value",
    "preset_description",
    "register_preset",
    "suggest",
]
