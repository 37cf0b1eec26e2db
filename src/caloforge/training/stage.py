"""The contract between the Trainer and what it trains."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["TrainingStage"]


@runtime_checkable
class TrainingStage(Protocol):
    """One trainable stage of a pipeline (e.g. Calo-VQ's VQ-VAE, then its GPT prior).

    Attributes:
        name: stage name; the weights go to ``<checkpoint dir>/<name>.safetensors``.

    Methods:
        modules(): ``{name: module}`` — everything of this stage saved in the checkpoint
            (frozen earlier stages are not listed; the stage loads them itself).
        optimizer_groups(): ``{optimizer name: parameters}``; one AdamW per entry, stepped
            in this order, e.g. ``{"generator": [...], "discriminator": [...]}``.
        training_step(batch, step): a dict of tensors. Keys equal to optimizer names are
            losses: for each optimizer in order the trainer zeroes its gradients, calls
            ``backward`` on its loss and steps it. A missing key skips that optimizer this
            step (e.g. a discriminator warm-up). Every other key is logged (detached
            scalars). A later loss must not backpropagate through parameters an earlier
            optimizer already stepped (detach, as GAN discriminator losses do).
        validation_step(batch): ``{metric: float}``, averaged over the validation set
            (run in ``torch.no_grad()``, in eval mode, with EMA weights when enabled).

    Optional: ``to(device)`` if the stage holds modules beyond ``modules()`` (frozen earlier
    stages); otherwise the trainer moves ``modules()`` itself.
    """

    name: str

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def optimizer_groups(self) -> dict[str, list[torch.nn.Parameter]]: ...

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]: ...

    def validation_step(self, batch: Any) -> dict[str, float]: ...
