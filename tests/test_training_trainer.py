"""Trainer: loss falls, bit-for-bit resume, EMA, two optimisers, schedule, data order."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _training_toys import RegressionStage, ToyGANStage, regression_data

from caloforge.errors import ConfigError
from caloforge.training import (
    EMA,
    ShardedBatchSampler,
    TensorDictDataset,
    Trainer,
    TrainerConfig,
    TrainingStage,
    cosine_lr,
    load_checkpoint,
)


def _cfg(**kw):
    base = dict(
        max_steps=30,
        batch_size=32,
        lr=3e-3,
        warmup_steps=5,
        min_lr=1e-4,
        grad_clip=1.0,
        log_every=10,
        seed=7,
        weight_decay=0.01,
    )
    base.update(kw)
    return TrainerConfig(**base)


def test_stage_protocol():
    assert isinstance(RegressionStage(), TrainingStage)
    assert isinstance(ToyGANStage(), TrainingStage)


def test_loss_falls(tmp_path):
    data, val = regression_data(512), regression_data(128, seed=1)
    stage = RegressionStage()
    tr = Trainer(
        stage,
        _cfg(max_steps=100, val_every=50, lr=2e-2, min_lr=1e-3),
        data,
        val,
        out_dir=tmp_path,
        progress=False,
    )
    res = tr.fit()
    losses = [h["main"] for h in tr.history if "main" in h]
    vals = [h["val_mse"] for h in tr.history if "val_mse" in h]
    assert losses[-1] < 0.2 * losses[0]
    assert vals[-1] < vals[0] and res["val_mse"] == vals[-1]
    assert res["step"] == 100 and res["samples_per_s"] > 0
    log = [json.loads(line) for line in (tmp_path / "regressor.log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 100


def _weights(stage):
    return {
        f"{m}.{k}": v.clone()
        for m, mod in stage.modules().items()
        for k, v in mod.state_dict().items()
    }


@pytest.mark.parametrize("how", ["stop_at", "crash"])
def test_resume_is_bit_for_bit(tmp_path, how):
    data, val = regression_data(200), regression_data(64, seed=1)
    cfg = _cfg(ema_decay=0.9, checkpoint_every=6, val_every=9)  # 200 // 32 = 6 batches per epoch
    ref = RegressionStage(seed=1)
    tr_ref = Trainer(ref, cfg, data, val, out_dir=tmp_path / "ref", progress=False)
    tr_ref.fit()

    first = RegressionStage(seed=1, crash_at=14 if how == "crash" else None)
    tr1 = Trainer(first, cfg, data, val, out_dir=tmp_path / "run", progress=False)
    if how == "crash":
        with pytest.raises(KeyboardInterrupt):
            tr1.fit()  # last checkpoint at step 12
    else:
        tr1.fit(stop_at=13)  # stops (and saves) mid-epoch, off the checkpoint grid
    ck = load_checkpoint(tmp_path / "run")
    assert ck.stage_info("regressor")["step"] == (12 if how == "crash" else 13)

    second = RegressionStage(seed=99)  # different init: everything must come from the state
    tr2 = Trainer(second, cfg, data, val, out_dir=tmp_path / "run", progress=False)
    tr2.fit(resume=True)
    w_ref, w_res = _weights(ref), _weights(second)
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        assert torch.equal(w_ref[k], w_res[k]), k
    for k, v in tr_ref.emas["net"].shadow.items():
        assert torch.equal(v, tr2.emas["net"].shadow[k]), k
    s_ref = tr_ref.optimizers["main"].state_dict()["state"]
    s_res = tr2.optimizers["main"].state_dict()["state"]
    for i in s_ref:
        for k in s_ref[i]:
            assert torch.equal(s_ref[i][k], s_res[i][k])
    # the saved inference weights are the EMA weights, identical in both runs
    a = load_checkpoint(tmp_path / "ref").state_dicts("regressor")["net"]
    b = load_checkpoint(tmp_path / "run").state_dicts("regressor")["net"]
    for k in a:
        assert torch.equal(a[k], b[k])
        assert torch.equal(a[k], tr_ref.emas["net"].shadow[k])


def test_resume_refuses_changed_batch_size(tmp_path):
    data = regression_data(200)
    Trainer(RegressionStage(), _cfg(max_steps=6), data, out_dir=tmp_path, progress=False).fit()
    tr = Trainer(
        RegressionStage(), _cfg(max_steps=8, batch_size=16), data, out_dir=tmp_path, progress=False
    )
    with pytest.raises(ConfigError, match="batch_size"):
        tr.fit(resume=True)


def test_ema_known_answer():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
        lin.bias.fill_(0.0)
    ema = EMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(-2.0)
    for _ in range(5):
        ema.update()
    # s_k = p + (s0 - p) * d**k with s0 = 0
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1 - 0.9**5))
    assert torch.allclose(ema.shadow["bias"], torch.full((1,), -2 * (1 - 0.9**5)))
    with ema.swapped() as m:
        assert torch.allclose(m.weight, torch.full((1, 2), 1 - 0.9**5))
    assert torch.equal(lin.weight, torch.ones(1, 2))  # restored


def test_trainer_ema_lags_raw_weights(tmp_path):
    data = regression_data(128)
    stage = RegressionStage()
    tr = Trainer(stage, _cfg(max_steps=20, ema_decay=0.95), data, out_dir=tmp_path, progress=False)
    tr.fit()
    saved = load_checkpoint(tmp_path).state_dicts("regressor")["net"]
    raw = stage.net.state_dict()
    assert load_checkpoint(tmp_path).stage_info("regressor")["ema"] is True
    assert not torch.equal(saved["0.weight"], raw["0.weight"])
    assert torch.equal(saved["0.weight"], tr.emas["net"].shadow["0.weight"])


def test_two_optimisers_gan_stage(tmp_path):
    x = 3.0 + 0.5 * torch.randn(512, 1, generator=torch.Generator().manual_seed(0))
    data = TensorDictDataset(x=x)
    stage = ToyGANStage(disc_start=3)
    g0 = {k: v.clone() for k, v in stage.gen.state_dict().items()}
    d0 = {k: v.clone() for k, v in stage.disc.state_dict().items()}
    cfg = _cfg(
        max_steps=150,
        batch_size=64,
        lr=3e-2,
        group_lr={"discriminator": 7.5e-3},
        warmup_steps=0,
        min_lr=0.0,
        grad_clip=0.0,
        betas=(0.5, 0.9),
        log_every=100,
    )
    tr = Trainer(stage, cfg, data, TensorDictDataset(x=x[:128]), out_dir=tmp_path, progress=False)
    res = tr.fit()
    assert stage.calls[0] == (0, ("generator",)) and stage.calls[3] == (
        3,
        ("generator", "discriminator"),
    )
    assert list(tr.optimizers) == ["generator", "discriminator"]
    assert (
        tr.optimizers["discriminator"].param_groups[0]["lr"]
        < tr.optimizers["generator"].param_groups[0]["lr"]
    )
    assert not torch.equal(g0["bias"], stage.gen.bias)
    assert not torch.equal(d0["0.weight"], stage.disc[0].weight)
    # the generator's output mean moves from ~0 toward the data mean 3
    assert res["val_mean_gap"] < 1.0, res
    assert set(load_checkpoint(tmp_path).state_dicts("gan")) == {"generator", "discriminator"}


def test_cosine_schedule():
    kw = dict(base_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert cosine_lr(0, **kw) == pytest.approx(0.1)
    assert cosine_lr(9, **kw) == pytest.approx(1.0)
    assert cosine_lr(10, **kw) == pytest.approx(1.0)
    assert cosine_lr(60, **kw) == pytest.approx(0.55)
    assert cosine_lr(110, **kw) == pytest.approx(0.1)
    assert cosine_lr(5, base_lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=10) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.5))
    )


def test_sampler_resumable_and_sharded():
    full = ShardedBatchSampler(100, 8, seed=3)
    it = iter(full)
    seq = [next(it) for _ in range(40)]  # 12 batches/epoch: crosses epochs
    tail = iter(ShardedBatchSampler(100, 8, seed=3, start_step=17))
    assert [next(tail) for _ in range(23)] == seq[17:]
    assert sorted(sum(seq[:12], [])) != list(range(96))  # shuffled ...
    assert len(set(sum(seq[:12], []))) == 96  # ... without repeats within an epoch
    r0 = iter(ShardedBatchSampler(100, 8, seed=3, rank=0, world_size=2))
    r1 = iter(ShardedBatchSampler(100, 8, seed=3, rank=1, world_size=2))
    b0, b1 = next(r0), next(r1)
    assert not set(b0) & set(b1) and len(b0) == len(b1) == 8
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        ShardedBatchSampler(10, 8, world_size=2)


def test_dataset_and_config_validation():
    ds = TensorDictDataset(a=torch.zeros(5, 2), b=torch.arange(5))
    assert len(ds) == 5 and ds[2]["b"] == 2
    assert ds.__getitems__([0, 3])["a"].shape == (2, 2)
    assert "n=5" in repr(ds)
    with pytest.raises(ValueError):
        TensorDictDataset(a=torch.zeros(5), b=torch.zeros(4))
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainerConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="group_lr"):
        Trainer(
            ToyGANStage(),
            _cfg(group_lr={"disc": 1e-3}),
            TensorDictDataset(x=torch.zeros(64, 1)),
            progress=False,
        ).fit()
