"""Training Calo-VQ from a CaloChallenge file: data preparation and the two stages.

Each stage trains alone and writes into the same checkpoint directory: stage 1 (``vqvae``)
fits the transforms and stores them; stage 2 (``gpt``) reads the frozen stage 1 and the
stored transforms. ``resume=True`` continues an interrupted stage exactly where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..configs.calovq import CaloVQConfig
from ..errors import CheckpointError, ConfigError
from ..geometry import get_geometry
from ..io import ShowerData, ShowerFile
from ..objectives import VQGANObjective, VQObjective
from ..training import (
    MANIFEST_NAME,
    TensorDictDataset,
    Trainer,
    data_fingerprint,
    load_checkpoint,
)
from ..transforms import OccupancyCalibration
from .calovq import (
    CaloVQ,
    CaloVQTransforms,
    build_calovq_models,
    calovq_config_from_manifest,
    calovq_config_to_manifest,
)
from .calovq_stages import CaloVQAutoencoderStage, CaloVQPriorStage

__all__ = ["CALOVQ_STAGES", "encode_tokens", "fit_occupancy", "read_training_showers",
           "train_calovq"]

#: Stage names, in training order.
CALOVQ_STAGES = ("vqvae", "gpt")


def read_training_showers(path: str | os.PathLike, config: CaloVQConfig) -> ShowerData:
    """All (or ``config.max_showers``) showers of a file, checked against the geometry."""
    geometry = get_geometry(config.geometry)
    with ShowerFile(path, geometry) as f:
        n = len(f) if config.max_showers is None else min(len(f), config.max_showers)
        if n < 20:
            raise ConfigError(f"{path}: {n} showers are too few to train on")
        return f.read(0, n)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _stage1_tensors(model: CaloVQ, showers: Tensor, energies: Tensor) -> dict[str, Tensor]:
    t = model.transforms
    fractions, _ = t.normalisation(showers)
    x = t.log(fractions).to(torch.float32)
    return {"x": model.showers_to_model_input(x).contiguous(),
            "cond": t.condition(energies)}


@torch.no_grad()
def encode_tokens(model: CaloVQ, showers: Tensor, energies: Tensor,
                  batch_size: int = 512) -> Tensor:
    """Token sequences [R tokens][shower codes] (N, seq_len) of showers, for stage 2."""
    t = model.transforms
    r_tokens = t.r_tokens.encode(t.r_ratio(showers, energies))
    model.vqvae.eval()
    codes = []
    for lo in range(0, len(showers), batch_size):
        b = _stage1_tensors(model, showers[lo:lo + batch_size], energies[lo:lo + batch_size])
        z = model.vqvae.encode(b["x"].to(model.device), b["cond"].to(model.device))
        _, idx, _ = model.vqvae.quantizer(z)
        codes.append(idx.reshape(idx.shape[0], -1).cpu())
    return torch.cat([r_tokens.to(torch.long), torch.cat(codes)], dim=1)


@torch.no_grad()
def fit_occupancy(model: CaloVQ, showers: Tensor, energies: Tensor, tokens: Tensor,
                  max_showers: int = 5000, batch_size: int = 512) -> OccupancyCalibration:
    """Fit the occupancy cut on stage-1 reconstructions (true R) of training showers.

    The cut is fitted on each voxel's share of the reconstructed shower's energy, the
    quantity :meth:`CaloVQTransforms.calibrate_fractions` cuts on.
    """
    n = min(len(showers), max_showers)
    thr = model.config.output_threshold_mev
    k = model.config.n_r_tokens
    fractions, eligible = [], []
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        cond = model.transforms.condition(energies[lo:hi]).to(model.device)
        f = model.model_output_to_flat(
            model.vqvae.decode_indices(tokens[lo:hi, k:].to(model.device), cond)).cpu()
        _, r = model.transforms.normalisation(showers[lo:hi].double())
        rec = model.transforms.normalisation.inverse(f.double(), r)
        # the cut acts on shares of the whole shower's energy (see calibrate_fractions)
        fractions.append(rec / rec.sum(-1, keepdim=True).clamp_min(1e-30))
        eligible.append(rec > thr)
    target = (showers[:n] > thr).sum(-1)
    return OccupancyCalibration().fit(torch.cat(fractions), energy=energies[:n],
                                      eligible=torch.cat(eligible), target_counts=target)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def train_calovq(config: CaloVQConfig, data_path: str | os.PathLike, out_dir: str | os.PathLike,
                 *, stages: tuple[str, ...] = CALOVQ_STAGES, resume: bool = False,
                 progress: bool = True, device: str | None = None) -> CaloVQ | None:
    """Train the requested stages of Calo-VQ on a CaloChallenge file.

    Args:
        config: the model (a preset, possibly with overrides).
        data_path: training file; ``config.validation_fraction`` of it is held out.
        out_dir: checkpoint directory (created; later stages are added to it).
        stages: subset of ``("vqvae", "gpt")``; a lone ``gpt`` needs a trained ``vqvae``
            in ``out_dir``.
        resume: continue interrupted stages from their last checkpoint.
        device: overrides both trainers' ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``).

    Returns:
        The trained generator when both stages exist in ``out_dir``, else None.
    """
    unknown = set(stages) - set(CALOVQ_STAGES)
    if unknown or not stages:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; Calo-VQ has {CALOVQ_STAGES}")
    if device is not None:
        config.stage1.device = config.stage2.device = device
    out = Path(out_dir)
    geometry = get_geometry(config.geometry)
    data = read_training_showers(data_path, config)
    showers = torch.from_numpy(np.ascontiguousarray(data.showers, dtype=np.float32))
    energies = torch.from_numpy(data.incident_energies.astype(np.float64))
    train_idx, val_idx = _split(len(data), config.validation_fraction, config.stage1.seed)
    fingerprint = data_fingerprint(data, path=data_path)

    existing = (out / MANIFEST_NAME).exists()
    if existing:
        ckpt = load_checkpoint(out, expect_geometry=geometry)
        stored = calovq_config_from_manifest(ckpt.config, str(out))
        if stored.autoencoder_config != config.autoencoder_config and "vqvae" not in stages:
            raise CheckpointError(
                f"{out} holds a stage 1 trained with another autoencoder configuration"
            )
    reuse_transforms = existing and ("vqvae" not in stages or resume)
    if reuse_transforms:
        transforms = CaloVQTransforms.from_state(load_checkpoint(out).manifest["transforms"])
    else:
        transforms = CaloVQTransforms.new(config, geometry).fit(
            showers[train_idx].double(), energies[train_idx])

    if "vqvae" in stages:
        vqvae, gpt, disc = build_calovq_models(config, with_discriminator=True)
        model = CaloVQ(config, geometry, vqvae, gpt, transforms)
        vq = VQObjective(config.log_a, config.log_b, config.log_c, beta=config.beta)
        if config.gan.enabled:
            objective = VQGANObjective(vq, disc_weight=config.gan.weight,
                                       disc_start=config.gan.start, disc_ramp=config.gan.ramp)
            stage = CaloVQAutoencoderStage(vqvae, objective, disc)
        else:
            stage = CaloVQAutoencoderStage(vqvae, vq)
        tr = _stage1_tensors(model, showers[train_idx], energies[train_idx])
        va = _stage1_tensors(model, showers[val_idx], energies[val_idx]) if len(val_idx) else None
        trainer = Trainer(
            stage, config.stage1, TensorDictDataset(tr),
            TensorDictDataset(va) if va is not None else None, out_dir=out,
            checkpoint_meta=dict(config=calovq_config_to_manifest(config),
                                 transforms=transforms.state(), geometry=geometry.to_dict(),
                                 data_fingerprint=fingerprint),
            progress=progress,
        )
        trainer.fit(resume=resume)
        del tr, va, trainer
        _barrier()

    if "gpt" in stages:
        ckpt = load_checkpoint(out, expect_geometry=geometry)
        if "vqvae" not in ckpt.stages:
            raise CheckpointError(
                f"{out} has no trained stage 1; run `caloforge train ... --stage vqvae` first"
            )
        vqvae, gpt = build_calovq_models(config)
        ckpt.load_modules("vqvae", {"vqvae": vqvae})
        transforms.fit_r_tokens(config, showers[train_idx].double(), energies[train_idx])
        model = CaloVQ(config, geometry, vqvae, gpt, transforms)
        tokens = encode_tokens(model, showers, energies)
        if config.occupancy_calibration:
            transforms.occupancy = fit_occupancy(model, showers[train_idx], energies[train_idx],
                                                 tokens[train_idx])
        cond = transforms.condition(energies)
        stage = CaloVQPriorStage(gpt, config.n_r_tokens)
        val = (TensorDictDataset(tokens=tokens[val_idx], cond=cond[val_idx])
               if len(val_idx) else None)
        trainer = Trainer(
            stage, config.stage2, TensorDictDataset(tokens=tokens[train_idx], cond=cond[train_idx]),
            val, out_dir=out,
            checkpoint_meta=dict(config=calovq_config_to_manifest(config),
                                 transforms=transforms.state(), geometry=geometry.to_dict(),
                                 data_fingerprint=fingerprint),
            progress=progress,
        )
        trainer.fit(resume=resume)
        _barrier()

    final = load_checkpoint(out)
    if all(s in final.stages for s in CALOVQ_STAGES):
        return CaloVQ.load(out)
    return None
