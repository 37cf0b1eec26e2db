"""The Trainer's speed settings change how fast a step runs, never what it computes."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from _training_toys import RegressionStage, regression_data

from caloforge.configs import config_from_dict, config_to_dict
from caloforge.errors import ConfigError
from caloforge.models.autoencoders.quantizer import _code_counts
from caloforge.training import ShardedBatchSampler, Trainer, TrainerConfig
from caloforge.training.speed import effective_amp, fused_options, wants_resident_data


def _train(tmp_path, name, **cfg):
    stage = RegressionStage(seed=3)
    config = TrainerConfig(max_steps=30, batch_size=16, lr=3e-3, log_every=10, seed=7, **cfg)
    trainer = Trainer(stage, config, regression_data(), out_dir=tmp_path / name, progress=False)
    trainer.fit()
    return stage.net.state_dict(), trainer


def test_resident_data_trains_exactly_as_the_dataloader(tmp_path):
    w_loader, t_loader = _train(tmp_path, "loader", data_on_device="never")
    w_resident, t_resident = _train(tmp_path, "resident", data_on_device="always")
    for k in w_loader:
        assert torch.equal(w_loader[k], w_resident[k]), k
    assert [h.get("main") for h in t_loader.history] == [h.get("main") for h in t_resident.history]


def test_resumed_resident_run_matches_an_uninterrupted_one(tmp_path):
    whole, _ = _train(tmp_path, "whole")
    stage = RegressionStage(seed=3)
    config = TrainerConfig(max_steps=30, batch_size=16, lr=3e-3, log_every=10, seed=7,
                           checkpoint_every=10)
    Trainer(stage, config, regression_data(), out_dir=tmp_path / "parts",
            progress=False).fit(stop_at=13)
    stage = RegressionStage(seed=99)  # other initial weights: all must come from the state
    Trainer(stage, config, regression_data(), out_dir=tmp_path / "parts",
            progress=False).fit(resume=True)
    for k in whole:
        assert torch.equal(whole[k], stage.net.state_dict()[k]), k


@pytest.mark.parametrize("start_step,rank,world", [(0, 0, 1), (5, 0, 1), (23, 1, 3)])
def test_index_tensors_are_the_sampler_batches(start_step, rank, world):
    s = ShardedBatchSampler(50, 4, seed=11, rank=rank, world_size=world, start_step=start_step)
    lists, tensors = iter(s), s.index_tensors("cpu")
    for _ in range(20):  # several epochs
        assert next(tensors).tolist() == next(lists)


def test_resident_choice():
    data = regression_data(32)
    cpu = torch.device("cpu")
    assert wants_resident_data(TrainerConfig(), data, cpu)
    assert not wants_resident_data(TrainerConfig(data_on_device="never"), data, cpu)
    # workers exist to feed a DataLoader: auto leaves it to them
    assert not wants_resident_data(TrainerConfig(num_workers=2), data, cpu)
    plain = torch.utils.data.TensorDataset(torch.zeros(4, 2))
    assert not wants_resident_data(TrainerConfig(), plain, cpu)
    with pytest.raises(ConfigError, match="data_on_device='always' needs a tensor"):
        wants_resident_data(TrainerConfig(data_on_device="always"), plain, cpu)


def test_precision_resolution(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    for amp in ("auto", "none", "bf16", "fp16"):
        assert effective_amp(amp, cpu) == "none"  # a CPU run is float32 whatever is asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert effective_amp("auto", gpu) == "bf16"
    assert effective_amp("fp16", gpu) == "fp16"
    assert effective_amp("none", gpu) == "none"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert effective_amp("auto", gpu) == "none"  # an old GPU: no silent fp16 without scaling


def test_fused_kernels_only_where_torch_has_them():
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert fused_options(TrainerConfig(optimizer="adamw"), gpu) == {"fused": True}
    assert fused_options(TrainerConfig(optimizer="adam"), gpu) == {"fused": True}
    assert fused_options(TrainerConfig(optimizer="adamax"), gpu) == {}
    assert fused_options(TrainerConfig(fused="never"), gpu) == {}
    assert fused_options(TrainerConfig(), cpu) == {}


def test_speed_settings_are_validated():
    for bad in (dict(amp="fp8"), dict(data_on_device="gpu"), dict(fused="always"),
                dict(compile="yes")):
        with pytest.raises(ConfigError):
            TrainerConfig(**bad)


def test_stored_configs_without_speed_settings_still_read():
    stored = config_to_dict(TrainerConfig(amp="none"))
    for k in ("data_on_device", "compile", "fused"):
        del stored[k]  # a config stored before these settings existed
    cfg = config_from_dict(TrainerConfig, stored, require_all=True)
    assert (cfg.data_on_device, cfg.compile, cfg.fused) == ("auto", False, "auto")
    del stored["lr"]  # a setting that changes the result stays required
    with pytest.raises(ConfigError, match="missing required config key 'lr'"):
        config_from_dict(TrainerConfig, stored, require_all=True)


def test_resume_of_a_run_stored_with_amp_none_under_auto(tmp_path):
    """On a CPU 'none' and 'auto' train alike, so a run started under the old default
    resumes under the new one; a real change of precision is still refused."""
    config = TrainerConfig(max_steps=20, batch_size=16, seed=7, amp="none", checkpoint_every=10)
    Trainer(RegressionStage(seed=3), config, regression_data(), out_dir=tmp_path,
            progress=False).fit(stop_at=10)
    auto = dataclasses.replace(config, amp="auto")
    t = Trainer(RegressionStage(seed=3), auto, regression_data(), out_dir=tmp_path,
                progress=False)
    assert t.fit(resume=True)["step"] == 20


def test_code_counts_match_bincount():
    idx = torch.randint(0, 37, (5, 9, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_code_counts(idx, 40), torch.bincount(idx.reshape(-1), minlength=40))


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_training_step_learns_like_the_eager_one(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    # compiled code draws dropout masks from its own generator unless told to use eager's
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    w_eager, _ = _train(tmp_path, "eager")
    w_comp, t_comp = _train(tmp_path, "compiled", compile=True)
    for k in w_eager:
        assert torch.allclose(w_eager[k], w_comp[k], rtol=1e-4, atol=1e-5), k
    assert t_comp.history[-1]["main"] < t_comp.history[0]["main"]
