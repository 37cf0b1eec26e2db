"""Adversarial term of Calo-VQ stage 1 (Eq. 3-4, docs/calovq.md, A12).

* Discriminator: the log-likelihood loss of Eq. 3 as binary cross-entropy on logits,
  softplus(-D(x)) + softplus(D(x_fake)).
* Generator: the non-saturating form softplus(-D(x_fake)) (= -log sigmoid D(x_fake)).
* Adaptive weight (Taming Transformers, the paper's ref. [21]):
  lambda = ||grad_G_L L_rec|| / (||grad_G_L L_GAN|| + delta), delta = 1e-4, clamped to
  [0, 1e4], detached, where G_L is the decoder's last layer before the softmax.
  lambda's size depends on how the losses are reduced (ours are means over voxels, so it
  is about 1/V of the value with per-shower sums); what it guarantees is scale-free: the
  adversarial gradient at G_L has the norm of the reconstruction gradient (times the
  warm-up factor and ``disc_weight``) unless delta or the clamp bites. That ratio is
  logged as ``gan_grad_ratio`` (docs/calovq.md).
* Warm-up: before ``disc_start`` steps neither the GAN term nor the discriminator update is
  applied (the reconstruction learns first); an optional linear ramp follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vq import VQObjective, x_from_fractions

__all__ = [
    "discriminator_loss",
    "generator_loss",
    "adaptive_weight",
    "adaptive_weight_and_norms",
    "warmup_factor",
    "VQGANObjective",
]


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """-[log D(x) + log(1 - D(x_fake))], averaged: softplus(-real) + softplus(fake)."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def generator_loss(logits_fake: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(x_fake) = softplus(-fake), averaged."""
    return F.softplus(-logits_fake).mean()


def adaptive_weight_and_norms(
    rec_loss: Tensor,
    gan_loss: Tensor,
    last_layer: Tensor,
    delta: float = 1e-4,
    max_weight: float = 1e4,
) -> tuple[Tensor, Tensor, Tensor]:
    """(lambda, ||d rec / d W||, ||d gan / d W||), all detached 0-d tensors.

    lambda = ||d rec / d W|| / (||d gan / d W|| + delta), clamped to [0, max_weight].
    Both losses must depend on ``last_layer`` (W) through a graph that is kept
    (gradients are taken with ``retain_graph=True``).
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0].norm()
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0].norm()
    lam = (g_rec / (g_gan + delta)).clamp(0.0, max_weight)
    return lam.detach(), g_rec.detach(), g_gan.detach()


def adaptive_weight(
    rec_loss: Tensor,
    gan_loss: Tensor,
    last_layer: Tensor,
    delta: float = 1e-4,
    max_weight: float = 1e4,
) -> Tensor:
    """lambda = ||d rec / d W|| / (||d gan / d W|| + delta), clamped to [0, max_weight].

    Both losses must depend on ``last_layer`` (W) through a graph that is kept
    (gradients are taken with ``retain_graph=True``). Returns a detached 0-d tensor.
    """
    return adaptive_weight_and_norms(rec_loss, gan_loss, last_layer, delta, max_weight)[0]


def warmup_factor(step: int, start: int, ramp: int = 0) -> float:
    """0 before ``start``; then a linear ramp over ``ramp`` steps up to 1."""
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / ramp)


@dataclass
class VQGANObjective:
    """Eq. 4: L_VQ + lambda * L_GAN, with a separate discriminator loss.

    Fields:
        vq: the stage-1 objective (Eq. 2).
        disc_weight: factor on lambda (Taming's ``disc_weight``; 1 = plain Eq. 4).
        disc_start: warm-up steps without GAN term and without discriminator updates.
        disc_ramp: steps of a linear ramp after ``disc_start`` (0 = switch on at once).
        delta, max_weight: of the adaptive weight.

    Use per step: ``g = obj.generator_terms(model, disc, batch, step)``, minimise
    ``g["loss"]`` over the VQ-VAE; then ``d = obj.discriminator_terms(model, disc, batch,
    step, x_fake=g["x_fake"])`` and minimise ``d["loss"]`` over the discriminator.
    """

    vq: VQObjective = field(default_factory=VQObjective)
    disc_weight: float = 1.0
    disc_start: int = 0
    disc_ramp: int = 0
    delta: float = 1e-4
    max_weight: float = 1e4

    def discriminator_active(self, step: int) -> bool:
        """Whether the GAN term and the discriminator update are on at ``step`` (a stage
        can leave the discriminator's loss out of its step while this is False)."""
        return warmup_factor(step, self.disc_start, self.disc_ramp) > 0.0

    def generator_terms(
        self, model: nn.Module, discriminator: nn.Module, batch: Mapping[str, Tensor], step: int
    ) -> dict[str, Tensor]:
        """VQ-VAE loss terms; keys of :class:`VQObjective` plus ``gan``, ``lambda``,
        ``gan_grad_ratio`` (norm of the weighted adversarial gradient at the decoder's
        last layer over that of the reconstruction gradient: ``disc_weight`` times the
        warm-up factor when the weight works as intended, 0 before the warm-up or without
        gradients) and ``x_fake`` (the detached x-space reconstruction, for the
        discriminator step)."""
        x, cond, cid = batch["x"], batch["cond"], batch.get("class_id")
        out = model(x, cond, cid)
        terms = self.vq.terms(x, out)
        x_fake = x_from_fractions(out.fractions, self.vq.a, self.vq.b, self.vq.c)
        factor = warmup_factor(step, self.disc_start, self.disc_ramp)
        zero = torch.zeros((), device=x.device, dtype=x.dtype)
        gan, lam, ratio = zero, zero, zero
        if factor > 0.0:
            gan = generator_loss(discriminator(x_fake, cond, cid))
            if torch.is_grad_enabled() and gan.requires_grad:
                lam, g_rec, g_gan = adaptive_weight_and_norms(
                    terms["rec"], gan, model.last_layer, self.delta, self.max_weight
                )
                ratio = factor * self.disc_weight * lam * g_gan / g_rec.clamp_min(1e-30)
            # without gradients (validation) the weight cannot be formed: report gan only
            terms["loss"] = terms["loss"] + factor * self.disc_weight * lam * gan
        terms["gan"] = gan.detach() if factor > 0.0 else zero
        terms["lambda"] = lam
        terms["gan_grad_ratio"] = ratio
        terms["x_fake"] = x_fake.detach()
        return terms

    def discriminator_terms(
        self,
        model: nn.Module,
        discriminator: nn.Module,
        batch: Mapping[str, Tensor],
        step: int,
        x_fake: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Discriminator loss (0 with no gradient during warm-up); keys ``loss``,
        ``logits_real``, ``logits_fake`` (batch means)."""
        x, cond, cid = batch["x"], batch["cond"], batch.get("class_id")
        if x_fake is None:
            with torch.no_grad():
                f = model(x, cond, cid).fractions
            x_fake = x_from_fractions(f, self.vq.a, self.vq.b, self.vq.c)
        real = discriminator(x, cond, cid)
        fake = discriminator(x_fake.detach(), cond, cid)
        factor = warmup_factor(step, self.disc_start, self.disc_ramp)
        loss = factor * discriminator_loss(real, fake)
        return {
            "loss": loss,
            "logits_real": real.mean().detach(),
            "logits_fake": fake.mean().detach(),
        }
