"""The two training stages of Calo-VQ, in the :class:`~caloforge.training.TrainingStage` form.

Stage 1 (``vqvae``): the VQ-VAE learns to reconstruct x = ln(a + b E/R)/c with the true R
(Calo-VQ §4.1: "in the first stage the R factor is assumed known"), plus the adaptive-weight GAN
term once the discriminator warm-up is over (Eq. 3-4; docs/calovq.md).
Stage 2 (``gpt``): the GPT prior learns [R tokens][shower codes] by next-token
cross-entropy, on codes of the frozen stage-1 encoder.

Every validation of stage 1 reports the codebook's usage (fraction of codes chosen in a
validation batch) and perplexity, and warns (:class:`CodebookCollapseWarning`) when the
usage falls below the configured fraction (docs/calovq.md "Codebook health").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ...objectives import NextTokenObjective, VQGANObjective, VQObjective

__all__ = ["CaloVQAutoencoderStage", "CaloVQPriorStage", "CodebookCollapseWarning"]


class CodebookCollapseWarning(UserWarning):
    """Stage 1 uses only a small part of its codebook (a collapsing VQ-VAE)."""


class CaloVQAutoencoderStage:
    """Stage 1. Batches: ``x`` (model input layout), ``cond`` (N, 1).

    ``usage_warning``: warn when a validation batch uses fewer than this fraction of the
    codes it could use (all codes, or one per latent position when the batch has fewer
    positions than codes); 0 never warns.
    """

    name = "vqvae"

    def __init__(self, vqvae: nn.Module, objective: VQGANObjective | VQObjective,
                 discriminator: nn.Module | None = None, *, usage_warning: float = 0.0) -> None:
        if isinstance(objective, VQGANObjective) and discriminator is None:
            raise ValueError("a GAN objective needs a discriminator")
        self.vqvae, self.objective, self.discriminator = vqvae, objective, discriminator
        self.usage_warning = float(usage_warning)
        # steps trained so far (as of the latest training_step), and that count at the
        # last warning: one warning per validation round, not one per batch
        self._step = 0
        self._warned_at = -1

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
        self._step = step + 1  # the trainer validates after this step
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
        """Losses and codebook statistics of one validation batch: ``loss``, ``rec``,
        ``usage`` (fraction of codes chosen), ``perplexity``."""
        vq = self.objective.vq if self.adversarial else self.objective
        x = batch["x"]
        out = self.vqvae(x, batch["cond"], batch.get("class_id"))
        terms = vq.terms(x, out)
        usage, perplexity = float(terms["usage"]), float(terms["perplexity"])
        self._check_usage(usage, perplexity, out.indices.numel())
        return {"loss": float(terms["loss"]), "rec": float(terms["rec"]),
                "usage": usage, "perplexity": perplexity}

    def _check_usage(self, usage: float, perplexity: float, n_positions: int) -> None:
        n_codes = self.vqvae.quantizer.n_codes
        attainable = min(1.0, n_positions / n_codes)
        if usage >= self.usage_warning * attainable or self._warned_at == self._step:
            return
        self._warned_at = self._step
        where = f" after {self._step} steps" if self._step else ""
        q = self.vqvae.quantizer
        if q.revive_dead_codes:
            # ema_counts start at 1 and decay by usage_decay per step while a code is unused
            steps = math.log(1.0 / max(q.dead_code_threshold, 1e-12)) / (1.0 - q.usage_decay)
            advice = (f"dead codes are revived once unused for about {steps:.0f} steps; if "
                      "usage stays low after that, lower the learning rate or raise "
                      "vqvae.dead_code_threshold")
        else:
            advice = ("switch on the codebook health options (vqvae.codebook_init='data', "
                      "vqvae.codebook_update='ema', vqvae.revive_dead_codes=true)")
        warnings.warn(
            f"Calo-VQ stage 1{where}: a validation batch uses only {usage:.1%} of the "
            f"{n_codes} codes (perplexity {perplexity:.1f}; warning below "
            f"{self.usage_warning * attainable:.1%}): the codebook is collapsing; {advice} "
            "(docs/calovq.md, \"Codebook health\").", CodebookCollapseWarning, stacklevel=2)


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
