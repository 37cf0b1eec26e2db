"""CaloLatent's training stages in the :class:`~caloforge.training.TrainingStage` form.

* ``layer``: the layer-energy model learns eps-prediction denoising score matching on the
  preprocessed u, conditioned on E_inc. Batches: ``x`` (N, L), ``cond`` (N, 1).
* ``vae``: the VAE learns ``Rec + beta KL`` (:func:`vae_loss`) on the preprocessed voxel
  fractions, conditioned on (E_inc, u). Batches: ``x`` (N, 1, L, A, R), ``cond`` (N, 1 + L).
* ``latent``: the latent model learns score matching on reparameterised draws
  z = mu + sigma eps of the frozen encoder, a fresh eps at every step (the posterior
  parameters are computed once, which is exact because the encoder is frozen).
  Batches: ``mu``, ``log_sigma`` (N, D), ``cond`` (N, 1 + L).

Every stage clips each gradient tensor to ``clip`` in norm (the reference's
``clip_by_norm(grad, 1)``), through hooks on the parameters (:func:`clip_each_gradient`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ...objectives import ScoreMatchingObjective, gaussian_kl
from ...paths import VPSDEPath

__all__ = ["CaloLatentScoreStage", "CaloLatentVAEStage", "clip_each_gradient", "vae_loss"]


def clip_each_gradient(params: Iterable[nn.Parameter], max_norm: float) -> list:
    """Clip every parameter's gradient tensor to norm ``max_norm`` as it is computed.

    g <- g * max_norm / max(||g||, max_norm), per tensor (not the global norm). Hooks run
    on each backward before the gradient is accumulated; under DDP that is before the
    all-reduce, so each process clips its own gradient. Returns the hook handles.
    """
    if max_norm <= 0:
        return []

    def hook(g: Tensor) -> Tensor:
        return g * (max_norm / g.norm().clamp_min(max_norm))

    return [p.register_hook(hook) for p in params if p.requires_grad]


def vae_loss(vae: nn.Module, x: Tensor, cond: Tensor, beta: float,
             estimator: str = "mc") -> dict[str, Tensor]:
    """CaloLatent's VAE loss ``Rec + beta KL`` per shower, averaged over the batch.

    Rec = sum over voxels of (x - x_hat)^2, a fixed-width Gaussian in the preprocessed
    space, at one reparameterised draw z = mu + sigma eps. KL against N(0, I), summed over
    the latent: "mc" evaluates log q(z|x) - log N(z; 0, I) at that draw (the reference's),
    "analytic" the closed form.

    Returns ``{"loss", "rec", "kl", "sigma"}`` (0-d; ``sigma`` the mean posterior width).
    """
    mu, log_sigma = vae.encode_posterior(x, cond)
    eps = torch.randn_like(mu)
    z = mu + torch.exp(log_sigma) * eps
    x_hat = vae.decode(z, cond)
    rec = (x - x_hat).square().reshape(len(x), -1).sum(1).mean()
    if estimator == "mc":
        # log q = -eps^2/2 - log sigma - log(2 pi)/2; log p = -z^2/2 - log(2 pi)/2
        kl = (0.5 * z.square() - 0.5 * eps.square() - log_sigma).sum(1).mean()
    else:
        kl = gaussian_kl(mu, 2.0 * log_sigma).sum(1).mean()
    return {"loss": rec + beta * kl, "rec": rec, "kl": kl,
            "sigma": torch.exp(log_sigma).mean()}


class CaloLatentScoreStage:
    """Stage ``layer`` or ``latent``: a noise-prediction network on the VP-SDE.

    Batches hold ``cond`` and either ``x`` (data) or ``mu`` and ``log_sigma`` (a posterior,
    drawn from at every step).
    """

    def __init__(self, name: str, module_name: str, model: nn.Module, path: VPSDEPath,
                 reduction: str = "sum", clip: float = 1.0) -> None:
        self.name, self.module_name, self.model = name, module_name, model
        self.objective = ScoreMatchingObjective(path, reduction)
        self._hooks = clip_each_gradient(model.parameters(), clip)

    def modules(self) -> dict[str, nn.Module]:
        return {self.module_name: self.model}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {self.name: list(self.model.parameters())}

    @staticmethod
    def _data(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "x" in batch:
            return {"x": batch["x"], "cond": batch["cond"]}
        mu, log_sigma = batch["mu"], batch["log_sigma"]
        return {"x": mu + torch.exp(log_sigma) * torch.randn_like(mu), "cond": batch["cond"]}

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        return {self.name: self.objective(self.model, self._data(batch))["loss"]}

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        return {"loss": float(self.objective(self.model, self._data(batch))["loss"])}


class CaloLatentVAEStage:
    """Stage ``vae``. Batches: ``x`` (N, 1, L, A, R), ``cond`` (N, 1 + L)."""

    name = "vae"

    def __init__(self, vae: nn.Module, beta: float, estimator: str = "mc",
                 clip: float = 1.0) -> None:
        self.vae, self.beta, self.estimator = vae, float(beta), estimator
        self._hooks = clip_each_gradient(vae.parameters(), clip)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vae": list(self.vae.parameters())}

    def training_step(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        terms = vae_loss(self.vae, batch["x"], batch["cond"], self.beta, self.estimator)
        return {"vae": terms["loss"], **{k: terms[k].detach() for k in ("rec", "kl", "sigma")}}

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        terms = vae_loss(self.vae, batch["x"], batch["cond"], self.beta, self.estimator)
        return {k: float(v) for k, v in terms.items()}
