"""The Trainer: optimisation loop of one stage, with EMA, AMP, checkpoints, resume and DDP."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import load_trainer_state, save_checkpoint, save_trainer_state
from ..configs import config_to_dict
from ..errors import CheckpointError, ConfigError
from .config import TrainerConfig
from .data import ShardedBatchSampler, collate_batch
from .distributed import (
    DistInfo,
    all_reduce_grads,
    broadcast_module,
    init_distributed,
    resolve_device,
)
from .ema import EMA
from .schedule import learning_rate
from .speed import effective_amp, fused_options, resident_batches, wants_resident_data
from .stage import TrainingStage

__all__ = ["Trainer", "seed_everything"]

#: Trainer settings that must not change between a run and its resumption, because they
#: change the data order or the meaning of the saved state.
_RESUME_FIXED = ("batch_size", "seed", "ema_decay", "amp")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ RNG state as JSON
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(s: Mapping[str, Any]) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray.fromhex(s["torch"]), dtype=torch.uint8))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray.fromhex(h), dtype=torch.uint8) for h in s["cuda"]]
        )


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Run a block (validation) without disturbing the training random streams."""
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


def _gather_json(obj: Any, info: DistInfo) -> list[Any]:
    """Collect one JSON object per rank on every rank, through tensors (no pickling)."""
    if info.world_size == 1:
        return [obj]
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8)
    n = torch.tensor([data.numel()], dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    buf = torch.zeros(longest, dtype=torch.uint8)
    buf[: data.numel()] = data
    bufs = [torch.zeros_like(buf) for _ in range(info.world_size)]
    dist.all_gather(bufs, buf)
    return [json.loads(bytes(b[: int(s.item())].tolist()).decode()) for b, s in zip(bufs, sizes)]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ------------------------------------------------------------------ optimizer state
def _optimizer_to_state(
    name: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{name}/{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_state(
    name: str,
    opt: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix) :].split("/", 1)
            state.setdefault(int(idx), {})[k] = v
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    # kernel choices (fused, foreach, ...) are this run's, not the saved run's: a run
    # resumed on another device keeps its own
    impl = ("fused", "foreach", "capturable", "differentiable")
    now = opt.param_groups
    groups = [
        dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]
    ]
    for g, cur in zip(groups, now):
        g.update({k: cur[k] for k in impl if k in cur})
    opt.load_state_dict({"state": state, "param_groups": groups})


class _StageModule(torch.nn.Module):
    """Presents a stage's training step as one module's forward, so DDP can wrap it.

    The stage's own modules are registered (not copied) so DDP sees their parameters and
    its gradient hooks fire when ``training_step`` uses them.
    """

    def __init__(self, stage: TrainingStage, modules: Mapping[str, torch.nn.Module]) -> None:
        super().__init__()
        self.stage = stage
        self.stage_modules = torch.nn.ModuleDict(dict(modules))

    def forward(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.stage.training_step(batch, step)


class Trainer:
    """Train one :class:`TrainingStage`.

    Args:
        stage: what to train.
        config: optimisation settings.
        train_data: a Dataset of dict samples (or tensors), e.g. :class:`TensorDictDataset`.
        val_data: optional validation Dataset for ``stage.validation_step``.
        out_dir: checkpoint directory; None trains without writing anything.
        checkpoint_meta: stored in the manifest with the weights; keys ``config``
            (pipeline config), ``transforms``, ``geometry``, ``data_fingerprint``, ``extra``.
        progress: show a tqdm bar (rank 0 only).

    Under ``torchrun`` every process builds the same stage and Trainer; weights start
    from rank 0's, each rank reads its own shard of every global batch, and only rank 0
    writes checkpoints and shows progress. A stage with one optimizer runs inside
    ``torch.nn.parallel.DistributedDataParallel`` (its training step is the forward of a
    wrapper module). A stage with several optimizers makes one backward per optimizer per
    step, which DDP's reducer does not support (it expects one backward per forward);
    there the trainer averages each optimizer's gradients with one ``all_reduce`` right
    after its backward, the same arithmetic DDP performs.
    """

    def __init__(
        self,
        stage: TrainingStage,
        config: TrainerConfig,
        train_data: Dataset,
        val_data: Dataset | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        checkpoint_meta: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.stage, self.config = stage, config
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = None if out_dir is None else Path(out_dir)
        meta = dict(checkpoint_meta or {})
        unknown = set(meta) - {"config", "transforms", "geometry", "data_fingerprint", "extra"}
        if unknown:
            raise ConfigError(f"unknown checkpoint_meta keys {sorted(unknown)}")
        self.checkpoint_meta = meta
        self.progress = progress
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.last_validation: dict[str, float] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.emas: dict[str, EMA] = {}
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self._ddp: torch.nn.Module | None = None
        self.amp = "none"  # the precision in use, resolved from config.amp in _setup

    # ------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.config
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(cfg.device, local_rank)
        self.dist = init_distributed(self.device)
        if hasattr(self.stage, "to"):
            self.stage.to(self.device)
        self.modules = dict(self.stage.modules())
        for m in self.modules.values():
            m.to(self.device)
            m.train()
        if self.dist.world_size > 1:
            for m in self.modules.values():
                broadcast_module(m)
        groups = self.stage.optimizer_groups()
        if not groups:
            raise ConfigError(f"stage {self.stage.name!r} has no optimizer groups")
        unknown_lr = set(cfg.group_lr) - set(groups)
        if unknown_lr:
            raise ConfigError(
                f"group_lr names {sorted(unknown_lr)} are not optimizers of stage "
                f"{self.stage.name!r} ({', '.join(groups)})"
            )
        self.params = {k: [p for p in v if p.requires_grad] for k, v in groups.items()}
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam,
                   "adamax": torch.optim.Adamax}[cfg.optimizer]
        self.optimizers = {
            k: opt_cls(
                ps,
                lr=cfg.group_lr.get(k, cfg.lr),
                betas=cfg.betas,
                eps=cfg.eps,
                weight_decay=cfg.weight_decay,
                **fused_options(cfg, self.device),
            )
            for k, ps in self.params.items()
        }
        self._ddp = None
        if self.dist.world_size > 1 and len(self.optimizers) == 1:
            from torch.nn.parallel import DistributedDataParallel

            # find_unused_parameters: a stage may leave some parameters out of a step's loss.
            self._ddp = DistributedDataParallel(
                _StageModule(self.stage, self.modules),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.emas = (
            {k: EMA(m, cfg.ema_decay) for k, m in self.modules.items()} if cfg.ema_decay > 0 else {}
        )
        self.amp = effective_amp(cfg.amp, self.device)  # "none" on a CPU
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        step_fn = self._ddp if self._ddp is not None else self.stage.training_step
        # compiled once per run; a step number used in Python control flow (a warm-up
        # switch) costs one recompilation where the branch changes, not one per step
        self._step_fn = torch.compile(step_fn) if cfg.compile else step_fn

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def _lr(self, name: str, step: int) -> float:
        cfg = self.config
        base = cfg.group_lr.get(name, cfg.lr)
        return learning_rate(
            cfg.schedule,
            step,
            base_lr=base,
            min_lr=cfg.min_lr * base / cfg.lr,
            warmup_steps=cfg.warmup_steps,
            max_steps=cfg.max_steps,
        )

    def _train_loader(self, start_step: int) -> Iterator[Any]:
        cfg = self.config
        sampler = ShardedBatchSampler(
            len(self.train_data),
            cfg.batch_size,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_step=start_step,
        )
        if wants_resident_data(cfg, self.train_data, self.device):
            return resident_batches(self.train_data, sampler, self.device)
        # Its own generator: creating a DataLoader iterator must not draw from the global
        # torch RNG, or a resumed run would see a different random stream.
        loader = DataLoader(
            self.train_data,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_batch,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=False,
        )
        return iter(loader)

    # ------------------------------------------------------------ state
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for mname, m in self.modules.items():
            for k, v in m.state_dict().items():
                tensors[f"module/{mname}/{k}"] = v
        for mname, e in self.emas.items():
            for k, v in e.state_dict().items():
                tensors[f"ema/{mname}/{k}"] = v
        optim_meta = {}
        for name, opt in self.optimizers.items():
            t, m = _optimizer_to_state(name, opt)
            tensors.update(t)
            optim_meta[name] = m
        meta = {
            "step": self.step,
            "world_size": self.dist.world_size,
            "trainer_config": config_to_dict(self.config),
            "amp_effective": self.amp,
            "optimizers": optim_meta,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": _gather_json(_rng_state(), self.dist),
            "sampler": {"seed": self.config.seed, "step": self.step},
        }
        return tensors, meta

    def _load_state(self) -> dict[str, Any]:
        if self.out_dir is None:
            raise ConfigError("resume needs an output directory")
        tensors, meta = load_trainer_state(self.out_dir, self.stage.name)
        saved_cfg = meta.get("trainer_config", {})
        for key in _RESUME_FIXED:
            now = config_to_dict(self.config)[key]
            if key == "amp" and key in saved_cfg:
                # what matters is the precision the run used ("auto" is none on a CPU)
                saved_cfg = dict(saved_cfg, amp=meta.get("amp_effective")
                                 or effective_amp(saved_cfg["amp"], self.device))
                now = self.amp
            if key in saved_cfg and saved_cfg[key] != now:
                raise ConfigError(
                    f"cannot resume with {key}={now!r}: the run was started with {saved_cfg[key]!r}"
                )
        if meta.get("world_size", 1) != self.dist.world_size:
            raise ConfigError(
                f"cannot resume on {self.dist.world_size} process(es): the run used "
                f"{meta.get('world_size')} (the data order depends on it)"
            )
        try:
            for mname, m in self.modules.items():
                sd = {
                    k[len(f"module/{mname}/") :]: v
                    for k, v in tensors.items()
                    if k.startswith(f"module/{mname}/")
                }
                m.load_state_dict(sd)
            for mname, e in self.emas.items():
                e.load_state_dict(
                    {
                        k[len(f"ema/{mname}/") :]: v.to(self.device)
                        for k, v in tensors.items()
                        if k.startswith(f"ema/{mname}/")
                    }
                )
            for name, opt in self.optimizers.items():
                _optimizer_from_state(name, opt, tensors, meta["optimizers"][name])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"resume state of stage {self.stage.name!r} in {self.out_dir} does not fit the "
                f"stage: {exc}"
            ) from exc
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step = int(meta["step"])
        return meta

    def save(self) -> None:
        """Write the stage's weights (EMA when on), manifest and resume state (rank 0)."""
        if self.out_dir is None:
            return
        tensors, meta = self._state()  # collective (RNG gathering): every rank calls it
        if self.dist.is_main:
            save_trainer_state(self.out_dir, self.stage.name, tensors, meta)
            weights = (
                {k: e.state_dict() for k, e in self.emas.items()} if self.emas else self.modules
            )
            cm = self.checkpoint_meta
            save_checkpoint(
                self.out_dir,
                self.stage.name,
                weights,
                config=cm.get("config"),
                transforms=cm.get("transforms"),
                geometry=cm.get("geometry"),
                data_fingerprint=cm.get("data_fingerprint"),
                step=self.step,
                ema=bool(self.emas),
                trainer_state=True,
                extra=dict(
                    cm.get("extra") or {},
                    trainer_config=config_to_dict(self.config),
                    world_size=self.dist.world_size,
                ),
            )
        if self.dist.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Mean of ``stage.validation_step`` over the validation set (all ranks)."""
        if self.val_data is None:
            return {}
        cfg = self.config
        idx = list(range(self.dist.rank, len(self.val_data), self.dist.world_size))
        loader = DataLoader(
            self.val_data,
            batch_size=cfg.batch_size,
            sampler=idx,
            collate_fn=collate_batch,
            num_workers=0,
        )
        sums: dict[str, float] = {}
        count = 0
        with contextlib.ExitStack() as stack:
            stack.enter_context(_rng_preserved())
            for e in self.emas.values():
                stack.enter_context(e.swapped())
            for m in self.modules.values():
                m.eval()
            with torch.no_grad(), self._autocast():
                for i, batch in enumerate(loader):
                    if cfg.val_batches and i >= cfg.val_batches:
                        break
                    out = self.stage.validation_step(_to_device(batch, self.device))
                    n = (
                        len(next(iter(batch.values())))
                        if isinstance(batch, Mapping)
                        else len(batch)
                    )
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * n
                    count += n
            for m in self.modules.values():
                m.train()
        keys = sorted(sums)
        if self.dist.world_size > 1:
            # Ranks may differ in which keys they saw only if they saw no batch at all.
            t = torch.tensor([sums.get(k, 0.0) for k in keys] + [float(count)], dtype=torch.float64)
            dist.all_reduce(t)
            sums, count = dict(zip(keys, t[:-1].tolist())), int(t[-1].item())
        return {f"val_{k}": sums[k] / max(count, 1) for k in keys}

    # ------------------------------------------------------------ loop
    def _optimise(self, out: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        cfg = self.config
        names = list(self.optimizers)
        stats: dict[str, float] = {}
        for i, name in enumerate(names):
            if name not in out:
                continue  # the stage skips this optimizer on this step
            opt, params = self.optimizers[name], self.params[name]
            for g in opt.param_groups:
                g["lr"] = self._lr(name, step)
            opt.zero_grad(set_to_none=True)
            # Keep the graph while a later loss may still need shared parts of it.
            retain = any(n in out for n in names[i + 1 :])
            self.scaler.scale(out[name]).backward(retain_graph=retain)
            if self._ddp is None:  # DDP has averaged them already
                all_reduce_grads(
                    params, self.dist.world_size
                )  # before unscale: same inf everywhere
            if cfg.grad_clip > 0:
                self.scaler.unscale_(opt)
                gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                stats[f"grad_norm_{name}"] = gn
            self.scaler.step(opt)
        self.scaler.update()
        for e in self.emas.values():
            e.update()
        return stats

    def fit(self, *, resume: bool = False, stop_at: int | None = None) -> dict[str, float]:
        """Train to ``config.max_steps`` (or until ``stop_at``), then save.

        Args:
            resume: continue from ``<out_dir>/<stage>.trainer/`` exactly where it stopped:
                weights, EMA, optimizer moments, step, RNG states, data position.
            stop_at: stop after this many steps in total (and save), as an interruption
                would; a later ``fit(resume=True)`` continues bit for bit.

        Returns:
            The last logged values (losses, learning rate, validation metrics, step).
        """
        from tqdm.auto import tqdm

        cfg = self.config
        self._setup()
        if resume:
            meta = self._load_state()
            self._truncate_log()
        else:
            self.step = 0
            seed_everything(cfg.seed + self.dist.rank)
        end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        data = self._train_loader(self.step)
        if resume:
            _set_rng_state(meta["rng"][self.dist.rank])
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (self.progress and self.dist.is_main),
            desc=self.stage.name,
            dynamic_ncols=True,
            leave=True,
        )
        window: dict[str, torch.Tensor] = {}
        window_steps, t0 = 0, time.perf_counter()
        samples_per_step = cfg.batch_size * self.dist.world_size
        last: dict[str, float] = {}
        try:
            while self.step < end:
                step = self.step
                batch = _to_device(next(data), self.device)
                with self._autocast():
                    out = self._step_fn(batch, step)
                unknown = [k for k in self.optimizers if k not in out]
                if len(unknown) == len(self.optimizers):
                    raise ConfigError(
                        f"training_step of stage {self.stage.name!r} returned no loss for any "
                        f"optimizer ({', '.join(self.optimizers)}); got keys {sorted(out)}"
                    )
                stats = self._optimise(out, step)
                self.step = step + 1
                for k, v in {**out, **stats}.items():
                    v = (
                        v.detach().float()
                        if isinstance(v, torch.Tensor)
                        else torch.tensor(float(v))
                    )
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                bar.update(1)
                if (cfg.log_every and self.step % cfg.log_every == 0) or self.step == end:
                    dt = time.perf_counter() - t0
                    last = {k: float(v) / window_steps for k, v in window.items()}
                    last.update(
                        step=self.step,
                        lr=self._lr(next(iter(self.optimizers)), step),
                        samples_per_s=window_steps * samples_per_step / max(dt, 1e-9),
                    )
                    bar.set_postfix(
                        {
                            k: f"{v:.4g}"
                            for k, v in last.items()
                            if k in self.optimizers or k == "samples_per_s"
                        }
                    )
                    self._log(last)
                    window, window_steps, t0 = {}, 0, time.perf_counter()
                if cfg.val_every and self.step % cfg.val_every == 0:
                    self.last_validation = self.validate()
                    self._log({"step": self.step, **self.last_validation})
                if (
                    self.step < end
                    and cfg.checkpoint_every
                    and self.step % cfg.checkpoint_every == 0
                ):
                    self.save()
            if self.val_data is not None and not (cfg.val_every and self.step % cfg.val_every == 0):
                self.last_validation = self.validate()
                self._log({"step": self.step, **self.last_validation})
            self.save()
        finally:
            bar.close()
            if self.dist.owns_group:
                dist.destroy_process_group()
        return {**last, **self.last_validation, "step": self.step}

    def _truncate_log(self) -> None:
        """Drop log records past the resumed step, so a resumed log does not repeat steps."""
        if self.out_dir is None or not self.dist.is_main:
            return
        path = self.out_dir / f"{self.stage.name}.log.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except ValueError:
                continue  # a line cut by the interruption
        path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def _log(self, record: dict[str, float]) -> None:
        self.history.append(dict(record))
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / f"{self.stage.name}.log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
