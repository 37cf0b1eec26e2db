"""Strict dataclass configs, TOML, overrides and the preset registry."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from caloforge.configs import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    get_preset,
    list_presets,
    load_toml,
    merge_dicts,
    override_config,
    parse_value,
    register_preset,
)
from caloforge.errors import ConfigError


@dataclasses.dataclass
class Opt:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    amp: Literal["none", "bf16", "fp16"] = "none"


@dataclasses.dataclass
class ConvNet:
    type: str = "conv"
    channels: list[int] = dataclasses.field(default_factory=lambda: [8, 16])


@dataclasses.dataclass
class MLPNet:
    type: str = "mlp"
    width: int = 32


@dataclasses.dataclass
class Top:
    name: str
    trainer: Opt = dataclasses.field(default_factory=Opt)
    model: ConvNet | MLPNet = dataclasses.field(default_factory=ConvNet)
    n_layers: int = 2
    use_ema: bool = True
    note: str | None = None


def test_round_trip():
    cfg = Top(name="x", model=MLPNet(width=7), note="n")
    d = config_to_dict(cfg)
    assert d["trainer"]["betas"] == [0.9, 0.99]
    assert config_from_dict(Top, d) == cfg


def test_unknown_key_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer\.lrr'.*did you mean 'lr'"):
        config_from_dict(Top, {"name": "x", "trainer": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match="n_layer"):
        config_from_dict(Top, {"name": "x", "n_layer": 3})


@pytest.mark.parametrize(
    "d,match",
    [
        ({"name": 3}, "'name'"),
        ({"name": "x", "n_layers": 2.5}, "n_layers"),
        ({"name": "x", "n_layers": True}, "n_layers"),
        ({"name": "x", "use_ema": 1}, "use_ema"),
        ({"name": "x", "trainer": {"betas": [0.9]}}, "trainer.betas"),
        ({"name": "x", "trainer": {"amp": "bf61"}}, "bf16"),
        ({"name": "x", "model": {"type": "gru"}}, "unknown type 'gru'"),
        ({}, "missing required config key 'name'"),
    ],
)
def test_wrong_types_rejected(d, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(Top, d)


def test_int_accepted_as_float_and_tagged_union():
    cfg = config_from_dict(Top, {"name": "x", "trainer": {"lr": 1}, "model": {"type": "mlp"}})
    assert cfg.trainer.lr == 1.0 and isinstance(cfg.trainer.lr, float)
    assert isinstance(cfg.model, MLPNet)


def test_parse_value():
    assert parse_value("1e-4") == 1e-4
    assert parse_value("4") == 4 and isinstance(parse_value("4"), int)
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("vqgan") == "vqgan"
    assert parse_value('"4"') == "4"
    assert parse_value(".5") == 0.5


def test_apply_overrides():
    d = config_to_dict(Top(name="x"))
    out = apply_overrides(d, ["trainer.lr=1e-4", "n_layers=4", "use_ema=false", "note=hello"])
    assert d["trainer"]["lr"] == 1e-3  # input untouched
    cfg = config_from_dict(Top, out)
    assert (cfg.trainer.lr, cfg.n_layers, cfg.use_ema, cfg.note) == (1e-4, 4, False, "hello")
    with pytest.raises(ConfigError, match=r"'trainer\.lrate'.*did you mean 'lr'"):
        apply_overrides(d, ["trainer.lrate=1"])
    with pytest.raises(ConfigError, match="trainr"):
        apply_overrides(d, ["trainr.lr=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(d, ["trainer.lr"])
    with pytest.raises(ConfigError, match="n_layers"):
        config_from_dict(Top, apply_overrides(d, ["n_layers=abc"]))


def test_toml_file_and_override_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('n_layers = 6\n[trainer]\nlr = 2e-4\n[model]\ntype = "mlp"\nwidth = 9\n')
    cfg = override_config(Top(name="x"), toml_files=[p], overrides=["trainer.amp=bf16"])
    assert cfg.n_layers == 6 and cfg.trainer.lr == 2e-4 and cfg.trainer.amp == "bf16"
    assert cfg.model == MLPNet(width=9)
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match="trainer.learning_rate"):
        override_config(Top(name="x"), toml_files=[bad])
    broken = tmp_path / "broken.toml"
    broken.write_text("n_layers = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        merge_dicts({"a": 1}, {"foo": 2})


def test_preset_registry():
    register_preset("test-top", lambda: Top(name="t"), "a test preset")
    assert "test-top" in list_presets()
    a, b = get_preset("test-top"), get_preset("test-top")
    assert a == b and a is not b  # fresh object each time
    with pytest.raises(
        ConfigError, match=r"unknown preset 'test-tpo'.*did you mean 'test-top'.*known presets"
    ):
        get_preset("test-tpo")


def test_trainer_config_round_trips_through_dicts_and_overrides():
    from caloforge.training import TrainerConfig

    d = config_to_dict(TrainerConfig(group_lr={"discriminator": 1e-4}))
    assert d["betas"] == [0.9, 0.999]
    cfg = config_from_dict(
        TrainerConfig, apply_overrides(d, ["lr=3e-4", "amp=bf16", "betas=[0.5, 0.9]"])
    )
    assert cfg.lr == 3e-4 and cfg.amp == "bf16" and cfg.betas == (0.5, 0.9)
    assert cfg.group_lr == {"discriminator": 1e-4}
    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict(TrainerConfig, dict(d, ema_decay=1.5))
    with pytest.raises(ConfigError, match="'max_step'.*did you mean 'max_steps'"):
        config_from_dict(TrainerConfig, {"max_step": 3})


@pytest.mark.parametrize(
    "module", ["caloforge.configs", "caloforge.training", "caloforge.transforms"]
)
def test_every_exported_name_imports(module):
    import importlib

    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
