"""Consistency distillation (Song et al. 2023; CaloClouds II CM, docs/caloclouds.md, A14).

A student consistency function f (preconditioned with
:class:`~caloforge.paths.ConsistencyPreconditioning`, so f(x, eps) = x) learns to map every
point of a probability-flow trajectory of a frozen teacher denoiser D to the trajectory's
end. With boundaries eps = s_1 < ... < s_N = sigma_max (EDM schedule, N = 18), one step:

1. draw x0 from the data and an interval n uniformly from the N - 1 intervals, one per sample;
2. x_{n+1} = x0 + s_{n+1} z, z ~ N(0, I);
3. one Heun step of dx/ds = (x - D(x; s)) / s with the teacher from s_{n+1} to s_n gives
   x_n (no gradients; two teacher calls);
4. L = < [ f_student(x_{n+1}, s_{n+1}) - f_target(x_n, s_n) ]^2 >, averaged over the
   elements (uniform weighting lambda = 1), the target without gradients.

The target network is an EMA of the student (:class:`~caloforge.training.EMA`, fixed decay
0.95 in CaloClouds II). The paper's formula for step 3 reads like a single denoiser call;
the text's "one ODE solver step" and the reference code make it a Heun step
(docs/caloclouds.md, A14).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import ConsistencyPreconditioning, EDMPreconditioning, broadcast_time
from ..sampling.edm import karras_sigmas
from .edm import masked_mean

__all__ = ["ConsistencyDistillation", "cd_boundaries", "consistency_distillation_loss",
           "heun_step"]

Fn = Callable[[Tensor, Tensor], Tensor]


def cd_boundaries(
    n: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """The n EDM-schedule levels from sigma_min to sigma_max, ascending, float64 (n,)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"consistency distillation needs n >= 2 boundaries, got {n!r}")
    return karras_sigmas(n, sigma_min, sigma_max, rho)[:-1].flip(0)


def heun_step(denoiser: Fn, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One Heun step of dx/ds = (x - D(x; s)) / s from sigma to sigma_next (both (N,), > 0)."""
    s, s_next = broadcast_time(sigma, x), broadcast_time(sigma_next, x)
    d = (x - denoiser(x, sigma)) / s
    x_euler = x + (s_next - s) * d
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / s_next
    return x + (s_next - s) * 0.5 * (d + d_next)


def _ascending(boundaries: Tensor) -> Tensor:
    b = torch.as_tensor(boundaries, dtype=torch.float64)
    if b.dim() != 1 or b.numel() < 2:
        raise ValueError(f"boundaries must be 1-D with at least 2 levels, got shape {tuple(b.shape)}")
    if b[0] > b[-1]:
        b = b.flip(0)
    if not (b[1:] > b[:-1]).all() or not b[0] > 0:
        raise ValueError(f"boundaries must be positive and strictly monotone, got {b.tolist()}")
    return b


def consistency_distillation_loss(
    student: Fn,
    target: Fn,
    teacher: Fn,
    x0: Tensor,
    boundaries: Tensor,
    *,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Squared distance between the student at x_{n+1} and the target at the teacher's x_n.

    Args:
        student: the consistency function being trained, ``student(x, sigma)``, sigma (N,).
        target: its EMA copy, called without gradients.
        teacher: the teacher's denoiser D(x, sigma), called without gradients.
        x0: clean data (N, ...).
        boundaries: the noise levels (:func:`cd_boundaries`), increasing or decreasing.
        mask: optional validity mask of a leading part of x0's shape ((N, P) for point
            clouds (N, P, F)); None counts every element.
        generator: random source of the intervals and the noise.

    Returns:
        0-d loss tensor (gradients reach only the student).
    """
    b = _ascending(boundaries).to(device=x0.device)
    n = torch.randint(0, b.numel() - 1, (x0.shape[0],), generator=generator, device=x0.device)
    s_lo, s_hi = b[n].to(x0.dtype), b[n + 1].to(x0.dtype)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_hi = x0 + broadcast_time(s_hi, x0) * z
    with torch.no_grad():
        x_lo = heun_step(teacher, x_hi, s_hi, s_lo)
        goal = target(x_lo, s_lo)
    pred = student(x_hi, s_hi)
    if pred.shape != x0.shape or goal.shape != x0.shape:
        raise ValueError(
            f"student and target must return the data's shape {tuple(x0.shape)}, got "
            f"{tuple(pred.shape)} and {tuple(goal.shape)}"
        )
    return masked_mean((pred - goal.detach()).square(), mask)


@dataclass
class ConsistencyDistillation:
    """``cd(student_net, target_net, teacher_net, x0, mask=None, **cond) -> {"loss": ...}``.

    Holds the consistency preconditioning (also its sigma_min and sigma_max for the
    boundaries), the number of boundaries and the teacher's EDM preconditioning (None:
    EDM's with the same constants), and wraps the *raw networks*
    ``net(c_in x, c_noise, **cond)``: student and target through ``precond.denoise``
    (consistency functions), the teacher through ``teacher_precond.denoise``.
    """

    precond: ConsistencyPreconditioning = field(default_factory=ConsistencyPreconditioning)
    n_boundaries: int = 18
    rho: float = 7.0
    teacher_precond: EDMPreconditioning | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.precond, ConsistencyPreconditioning):
            raise ConfigError(
                "ConsistencyDistillation: precond must be a ConsistencyPreconditioning, "
                f"got {type(self.precond)}"
            )
        self.boundaries  # noqa: B018 - validates n_boundaries and rho early

    @property
    def boundaries(self) -> Tensor:
        """The ascending noise levels (float64)."""
        return cd_boundaries(self.n_boundaries, self.precond.sigma_min, self.precond.sigma_max,
                             self.rho)

    def __call__(
        self,
        student: Callable[..., Tensor],
        target: Callable[..., Tensor],
        teacher: Callable[..., Tensor],
        x0: Tensor,
        mask: Tensor | None = None,
        **cond: Tensor,
    ) -> dict[str, Tensor]:
        pre = self.precond
        # the teacher is a denoiser: EDM's scalings with the student's constants by default
        tpre = self.teacher_precond or EDMPreconditioning(
            sigma_data=pre.sigma_data, p_mean=pre.p_mean, p_std=pre.p_std,
            sigma_min=pre.sigma_min, sigma_max=pre.sigma_max,
        )
        loss = consistency_distillation_loss(
            lambda x, s: pre.denoise(student, x, s, **cond),
            lambda x, s: pre.denoise(target, x, s, **cond),
            lambda x, s: tpre.denoise(teacher, x, s, **cond),
            x0, self.boundaries, mask=mask, generator=self.generator,
        )
        return {"loss": loss}
