"""CaloClouds II's trained stages in the :class:`~caloforge.training.TrainingStage` form.

* ``showerflow``: the Shower Flow learns the 65 shower summaries by maximum likelihood,
  conditioned on E_inc. Batches: ``x`` (B, 65), ``context`` (B, 1).
* ``diffusion``: the PointWise Net learns the EDM denoiser D(x; sigma | E, N) (§3.1) with
  the EDM weighting (docs/caloclouds.md, A3). Batches: ``points`` (B, P, 4) in [-1, 1]
  space, ``mask`` (B, P), ``cond`` (B, 2).
* ``distill``: consistency distillation of the frozen teacher (§3.2): student and target
  start from the teacher's EMA weights; the target follows the student as an EMA with a
  fixed rate and is the model that samples. Batches as ``diffusion``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ...objectives.consistency import cd_boundaries, consistency_distillation_loss
from ...objectives.edm import edm_denoising_loss
from ...paths.edm import ConsistencyPreconditioning, EDMPreconditioning
from ...training.ema import EMA

__all__ = ["DiffusionStage", "DistillationStage", "ShowerFlowStage"]


def _fixed_generator(x: Tensor, seed: int = 1234) -> torch.Generator:
    # validation losses draw their noise from a fixed stream: comparable across steps
    return torch.Generator(device=x.device).manual_seed(seed)


class ShowerFlowStage:
    """Negative log-likelihood of the Shower Flow."""

    name = "showerflow"

    def __init__(self, flow: nn.Module):
        self.flow = flow

    def modules(self) -> dict[str, nn.Module]:
        return {"shower_flow": self.flow}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"flow": list(self.flow.parameters())}

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        nll = -self.flow.log_prob(batch["x"], batch["context"]).mean()
        return {"flow": nll}

    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        return {"nll": float(-self.flow.log_prob(batch["x"], batch["context"]).mean())}


class DiffusionStage:
    """EDM denoising score matching of the PointWise Net, with its EMA (the final model,
    §3.3) kept as a second module ``pointwise_ema``.

    The EMA has the reference's warm-up, decay_k = min(ema_max, 1 - (1 + k)^-power), so it
    needs the update number: it is the training step, which the trainer restores on
    resume, and both networks are saved, so a resumed run continues bit for bit. The
    update after optimiser step k happens at the start of step k + 1 (the trainer steps
    the optimiser after ``training_step``).
    """

    name = "diffusion"

    def __init__(self, net: nn.Module, precond: EDMPreconditioning, masked: bool, *,
                 ema_max: float = 0.9999, ema_power: float = 2.0 / 3.0):
        self.net = net
        self.ema_net = copy.deepcopy(net).eval().requires_grad_(False)
        self.ema = EMA(self.net, ema_max, warmup_power=ema_power if ema_power > 0 else None)
        self.precond = precond
        self.masked = masked

    def to(self, device: torch.device | str) -> DiffusionStage:
        self.net.to(device)
        self.ema_net.to(device)
        return self

    def modules(self) -> dict[str, nn.Module]:
        return {"pointwise": self.net, "pointwise_ema": self.ema_net}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"pointwise": list(self.net.parameters())}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = self.ema.decay_at(step - 1)
        for e, p in zip(self.ema_net.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema_net.buffers(), self.net.buffers()):
            e.copy_(b)

    def _loss(self, net: nn.Module, batch: dict[str, Tensor],
              generator: torch.Generator | None) -> Tensor:
        cond = batch["cond"]

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            return self.precond.denoise(net, x, sigma, cond=cond)

        mask = batch["mask"] if self.masked else None
        return edm_denoising_loss(denoise, batch["points"], self.precond, mask=mask,
                                  generator=generator)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if step > 0:
            self._update_ema(step)
        return {"pointwise": self._loss(self.net, batch, None)}

    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        g = _fixed_generator(batch["points"])
        return {"loss": float(self._loss(self.net, batch, g)),
                "loss_ema": float(self._loss(self.ema_net, batch,
                                             _fixed_generator(batch["points"])))}


class DistillationStage:
    """Consistency distillation: student f, target f^- (EMA of f), frozen teacher D."""

    name = "distill"

    def __init__(self, teacher: nn.Module, teacher_precond: EDMPreconditioning,
                 n_boundaries: int, target_ema: float, rho: float, masked: bool):
        self.teacher = teacher.eval().requires_grad_(False)
        # §3.2 / reference: student and target both start from the teacher's EMA weights
        self.student = copy.deepcopy(teacher).train().requires_grad_(True)
        self.target = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.teacher_precond = teacher_precond
        p = teacher_precond
        self.cm_precond = ConsistencyPreconditioning(
            sigma_data=p.sigma_data, p_mean=p.p_mean, p_std=p.p_std, sigma_min=p.sigma_min,
            sigma_max=p.sigma_max)
        self.boundaries = cd_boundaries(n_boundaries, p.sigma_min, p.sigma_max, rho)
        self.target_ema = float(target_ema)
        self.masked = masked

    def to(self, device: torch.device | str) -> DistillationStage:
        for m in (self.teacher, self.student, self.target):
            m.to(device)
        return self

    def modules(self) -> dict[str, nn.Module]:
        # both are saved: the target samples, the student resumes training
        return {"student": self.student, "target": self.target}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"student": list(self.student.parameters())}

    @torch.no_grad()
    def _update_target(self) -> None:
        # the target follows the student after every optimiser step; done at the start of
        # the next step because the trainer steps the optimiser after training_step
        mu = self.target_ema
        for t, s in zip(self.target.parameters(), self.student.parameters()):
            t.mul_(mu).add_(s.detach(), alpha=1.0 - mu)

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator | None) -> Tensor:
        cond = batch["cond"]

        def student(x: Tensor, sigma: Tensor) -> Tensor:
            return self.cm_precond.denoise(self.student, x, sigma, cond=cond)

        def target(x: Tensor, sigma: Tensor) -> Tensor:
            return self.cm_precond.denoise(self.target, x, sigma, cond=cond)

        def teacher(x: Tensor, sigma: Tensor) -> Tensor:
            return self.teacher_precond.denoise(self.teacher, x, sigma, cond=cond)

        mask = batch["mask"] if self.masked else None
        return consistency_distillation_loss(
            student, target, teacher, batch["points"],
            self.boundaries.to(batch["points"].device), mask=mask, generator=generator)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if step > 0:
            self._update_target()
        return {"student": self._loss(batch, None)}

    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        return {"loss": float(self._loss(batch, _fixed_generator(batch["points"])))}
