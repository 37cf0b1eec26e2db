"""Conditional flow matching (CaloDREAM Eq. 5-8).

    L = < [ v(x_t, t, c) - (x1 - eps) ]^2 >,  x_t = (1 - t) eps + t x1,
        t ~ U(0, 1), eps ~ N(0, 1), independent of x1 (no minibatch OT coupling),

averaged over the batch and every element of x. The path is pluggable: with another
:class:`~caloforge.paths.ProbabilityPath` the network regresses that path's ``prediction``
(noise or data) instead of the velocity, with the same code.

Two ways to draw t:

* ``time="sample"``: one t per sample, shape (N,), the usual choice for a network that
  sees the whole x (the CaloDREAM shape ViT).
* ``time="element"``: an independent t for every element of x, t shaped like x. The
  CaloDREAM energy network runs one 1-D flow per calorimeter layer in parallel
  (x (N, L), t (N, L)); independent times make the L flows independent training problems,
  as they are at sampling time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import LinearFlowPath, ProbabilityPath

__all__ = ["TIME_MODES", "FlowMatchingObjective", "flow_matching_loss"]

#: how training times are drawn: one per sample, or one per element of x
TIME_MODES = ("sample", "element")


def _draw_time(
    path: ProbabilityPath, x1: Tensor, time: str, generator: torch.Generator | None
) -> Tensor:
    shape = (x1.shape[0],) if time == "sample" else tuple(x1.shape)
    return path.sample_time(shape, generator=generator, device=x1.device, dtype=x1.dtype)


def flow_matching_loss(
    velocity_fn: Callable[..., Tensor],
    x1: Tensor,
    cond: Mapping[str, Any] | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    *,
    path: ProbabilityPath | None = None,
    time: str = "sample",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean squared error between ``velocity_fn(x_t, t, **cond)`` and the path's target.

    Args:
        velocity_fn: called as ``velocity_fn(x_t, t, **cond)``; returns x1's shape.
        x1: data (N, ...).
        cond: keyword conditions passed to ``velocity_fn`` unchanged.
        t: times, (N,) or x1's shape; drawn from the path (per ``time``) when None.
        noise: eps (N, ...); standard normal from ``generator`` when None.
        path: the probability path; :class:`~caloforge.paths.LinearFlowPath` when None.
        time: "sample" (t of shape (N,)) or "element" (t of x1's shape), used when t is None.
        generator: random source for t and noise.

    Returns:
        0-d loss tensor.
    """
    if time not in TIME_MODES:
        raise ConfigError(f"time must be one of {TIME_MODES}, got {time!r}")
    path = LinearFlowPath() if path is None else path
    if t is None:
        t = _draw_time(path, x1, time, generator)
    if noise is None:
        noise = torch.randn(
            x1.shape, generator=generator, device=x1.device, dtype=x1.dtype
        )
    x_t, target = path.sample(x1, t, noise)
    pred = velocity_fn(x_t, t, **(cond or {}))
    if pred.shape != target.shape:
        raise ValueError(
            f"the model returned shape {tuple(pred.shape)}, expected {tuple(target.shape)}"
        )
    return (pred - target).square().mean()


@dataclass
class FlowMatchingObjective:
    """``terms = objective(model, batch)`` for a network trained on a probability path.

    ``batch["x"]`` is the data (N, ...); every other key of the batch is passed to the
    model as a keyword condition: ``model(x_t, t, **cond)``, returning x's shape.
    t is (N,) for ``time="sample"`` and x's shape for ``time="element"``.
    Returns ``{"loss": mean squared error}``.
    """

    path: ProbabilityPath = field(default_factory=LinearFlowPath)
    time: str = "sample"
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.time not in TIME_MODES:
            raise ConfigError(
                f"FlowMatchingObjective: time must be one of {TIME_MODES}, got {self.time!r}"
            )
        if not isinstance(self.path, ProbabilityPath):
            raise ConfigError(
                f"FlowMatchingObjective: path must be a ProbabilityPath, got {type(self.path)}"
            )

    def __call__(
        self, model: Callable[..., Tensor], batch: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        if "x" not in batch:
            raise KeyError(f"flow-matching batch needs key 'x'; got {sorted(batch)}")
        cond = {k: v for k, v in batch.items() if k != "x"}
        loss = flow_matching_loss(
            model, batch["x"], cond, path=self.path, time=self.time, generator=self.generator
        )
        return {"loss": loss}
