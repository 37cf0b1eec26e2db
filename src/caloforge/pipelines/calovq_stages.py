"""The two training stages of Calo-VQ, in the :class:`~caloforge.training.TrainingStage` form.

Stage 1 (``vqvae``): the VQ-VAE learns to reconstruct x = ln(a + b E/R)/c with the true R
(§1.2: "in the first stage the R factor is assumed known"), plus the adaptive-weight GAN
term once the discriminator warm-up is over (Eq. 3-4, spec A12).
Stage 2 (``gpt``): the GPT prior learns [R tokens][shower codes] by next-token
cross-entropy, on codes of the frozen stage-1 encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..objectives import NextTokenObjective, VQGANObjective, VQObjective

__all__ = ["CaloVQAutoencoderStage", "CaloVQPriorStage"]


class CaloVQAutoencoderStage:
    """Stage 1. Batches: ``x`` (model input layout), ``cond`` (N, 1)."""

    name = "vqvae"

    def __init__(self, vqvae: nn.Module, objective: VQGANObjective | VQObjective,
                 discriminator: nn.Module | None = None) -> None:
        if isinstance(objective, VQGANObjective) and discriminator is None:
            raise ValueError("a GAN objective needs a discriminator")
        self.vqvae, self.objective, self.discriminator = vqvae, objective, discriminator

    @property
    def adversarial(self) -> bool:
        return isinstance(self.objective, VQGANObjective)

    def modules(self) -> dict[str, nn.Module]:
        mods = {"vqvae": self.vqvae}
        if self.discriminator is not None:
            mods["discriminator"] = self.discriminator
        return mods

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"generator": list(self.vqvae.parameters())}
        if self.adversarial:
            groups["discriminator"] = list(self.discriminator.parameters())
        return groups

    @staticmethod
    def _logs(terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in terms.items()
                if k not in ("loss", "x_fake") and v.dim() == 0}

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        if not self.adversarial:
            terms = self.objective(self.vqvae, batch)
            return {"generator": terms["loss"], **self._logs(terms)}
        g = self.objective.generator_terms(self.vqvae, self.discriminator, batch, step)
        out = {"generator": g["loss"], **self._logs(g)}
        if self.objective.discriminator_active(step):
            d = self.objective.discriminator_terms(self.vqvae, self.discriminator, batch, step,
                                                   x_fake=g["x_fake"])
            out["discriminator"] = d["loss"]
            out["d_real"], out["d_fake"] = d["logits_real"], d["logits_fake"]
        return out

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        vq = self.objective.vq if self.adversarial else self.objective
        terms = vq(self.vqvae, batch)
        return {"loss": float(terms["loss"]), "rec": float(terms["rec"]),
                "perplexity": float(terms["perplexity"])}


class CaloVQPriorStage:
    """Stage 2. Batches: ``tokens`` (N, L) long, ``cond`` (N, 1)."""

    name = "gpt"

    def __init__(self, gpt: nn.Module, n_r_tokens: int) -> None:
        self.gpt = gpt
        self.objective = NextTokenObjective(n_r_tokens=n_r_tokens)

    def modules(self) -> dict[str, nn.Module]:
        return {"gpt": self.gpt}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"gpt": list(self.gpt.parameters())}

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        terms = self.objective(self.gpt, batch)
        return {"gpt": terms["loss"], "loss_r": terms["loss_r"],
                "loss_codes": terms["loss_codes"]}

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        terms = self.objective(self.gpt, batch)
        return {k: float(v) for k, v in terms.items()}
