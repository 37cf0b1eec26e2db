"""CaloDREAM's trainable stages in the :class:`~caloforge.training.TrainingStage` form.

``energy`` and ``shape`` are conditional-flow-matching stages (Eq. 8) differing in the
network, the batch layout and whether t is drawn per element (the energy network: one
independent t for each layer's 1-D flow, §3.1) or per shower. ``vae`` trains the VAE of
the latent path with BCE + beta KL (Eq. 12).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...objectives import FlowMatchingObjective, VAEObjective

__all__ = ["FlowMatchingStage", "VAEStage"]


class FlowMatchingStage:
    """A network trained by conditional flow matching.

    Batches hold ``x`` (the data, or ``mu`` and ``logvar`` of a frozen encoder's
    posterior, from which a fresh latent sample is drawn each step: CaloDREAM Eq. 13
    trains on samples r ~ q(r|x), not on the means) plus the network's keyword
    conditions.
    """

    def __init__(self, name: str, model: nn.Module, *, time: str = "sample") -> None:
        self.name = name
        self.model = model
        self.objective = FlowMatchingObjective(time=time)

    def modules(self) -> dict[str, nn.Module]:
        return {self.name: self.model}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {self.name: list(self.model.parameters())}

    @staticmethod
    def _data(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "mu" not in batch:
            return dict(batch)
        out = {k: v for k, v in batch.items() if k not in ("mu", "logvar")}
        mu, logvar = batch["mu"], batch["logvar"]
        out["x"] = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return out

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        return {self.name: self.objective(self.model, self._data(batch))["loss"]}

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        return {"loss": float(self.objective(self.model, self._data(batch))["loss"])}


class VAEStage:
    """The VAE of the latent path. Batches: ``x`` (N, 1, L, A, R) layer fractions,
    ``cond`` (N, 1 + L)."""

    name = "vae"

    def __init__(self, vae: nn.Module, beta: float) -> None:
        self.vae = vae
        self.objective = VAEObjective(beta=beta)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vae": list(self.vae.parameters())}

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        terms = self.objective(self.vae, batch)
        return {"vae": terms["loss"], "rec": terms["rec"].detach(), "kl": terms["kl"].detach()}

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in self.objective(self.vae, batch).items()}
