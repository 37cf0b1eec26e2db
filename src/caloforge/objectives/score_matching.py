"""Denoising score matching with epsilon prediction (CaloLatent's score models).

    L = < sum_dims [ eps_hat(x_t, t, c) - eps ]^2 >_batch,
        x_t = alpha(t) x0 + sigma(t) eps,  t ~ U(t_min, 1),  eps ~ N(0, I),

unweighted in t, on the VP-SDE (:class:`~caloforge.paths.VPSDEPath`). The paper gives no
loss; this is the reading of docs/calolatent.md (CaloScore-family defaults). Minimising it
makes -eps_hat / sigma(t) the score of the noised data, which is what the samplers of
:mod:`caloforge.sampling.sde` integrate.

Reduction: ``"sum"`` (default, CaloLatent's) sums over the elements of one sample and
averages over the batch; ``"mean"`` averages over everything (a constant factor, the
number of elements per sample, which only rescales the learning rate of non-Adam-type
optimisers and the clipping threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import ProbabilityPath, VPSDEPath

__all__ = ["ScoreMatchingObjective", "denoising_score_matching_loss"]

_REDUCTIONS = ("sum", "mean")


def denoising_score_matching_loss(
    noise_fn: Callable[..., Tensor],
    x0: Tensor,
    cond: Mapping[str, Any] | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    *,
    path: ProbabilityPath | None = None,
    reduction: str = "sum",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Squared error between ``noise_fn(x_t, t, **cond)`` and the noise that made x_t.

    Args:
        noise_fn: called as ``noise_fn(x_t, t, **cond)`` with t of shape (N,); returns x0's
            shape.
        x0: data (N, ...).
        cond: keyword conditions passed to ``noise_fn`` unchanged.
        t: times (N,); drawn from the path when None.
        noise: eps (N, ...); standard normal from ``generator`` when None.
        path: a path with ``prediction == "noise"``; :class:`VPSDEPath` when None.
        reduction: "sum" (over a sample's elements, mean over the batch) or "mean".
        generator: random source for t and noise.

    Returns:
        0-d loss tensor.
    """
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    path = VPSDEPath() if path is None else path
    if path.prediction != "noise":
        raise ConfigError(f"score matching needs a noise-prediction path, got {path.prediction!r}")
    if t is None:
        t = path.sample_time((x0.shape[0],), generator=generator, device=x0.device,
                             dtype=x0.dtype)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, target = path.sample(x0, t, noise)
    pred = noise_fn(x_t, t, **(cond or {}))
    if pred.shape != target.shape:
        raise ValueError(
            f"the model returned shape {tuple(pred.shape)}, expected {tuple(target.shape)}"
        )
    err = (pred - target).square()
    if reduction == "mean":
        return err.mean()
    return err.reshape(err.shape[0], -1).sum(1).mean()


@dataclass
class ScoreMatchingObjective:
    """``terms = objective(model, batch)`` for an epsilon-prediction network.

    ``batch["x"]`` is the data (N, ...); every other key of the batch is passed to the
    model as a keyword condition: ``model(x_t, t, **cond)`` with t (N,), returning x's
    shape. Returns ``{"loss": ...}``.
    """

    path: ProbabilityPath = field(default_factory=VPSDEPath)
    reduction: str = "sum"
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.reduction not in _REDUCTIONS:
            raise ConfigError(
                f"ScoreMatchingObjective: reduction must be one of {_REDUCTIONS}, "
                f"got {self.reduction!r}"
            )
        if not isinstance(self.path, ProbabilityPath) or self.path.prediction != "noise":
            raise ConfigError("ScoreMatchingObjective: path must be a noise-prediction path")

    def __call__(
        self, model: Callable[..., Tensor], batch: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        if "x" not in batch:
            raise KeyError(f"score-matching batch needs key 'x'; got {sorted(batch)}")
        cond = {k: v for k, v in batch.items() if k != "x"}
        loss = denoising_score_matching_loss(
            model, batch["x"], cond, path=self.path, reduction=self.reduction,
            generator=self.generator,
        )
        return {"loss": loss}
