"""Next-token cross-entropy for the stage-2 GPT prior ([P] §5.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["next_token_cross_entropy", "NextTokenObjective"]


def next_token_cross_entropy(
    logits: Tensor, tokens: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy (nats per token).

    logits (N, T, V) where ``logits[:, t]`` predicts ``tokens[:, t]``; tokens (N, T) long.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), label_smoothing=label_smoothing
    )


@dataclass
class NextTokenObjective:
    """``objective(model, batch)`` for a GPT prior.

    batch: ``tokens`` (N, L) long, ``cond`` (N, cond_in_dim), optional ``class_id`` (N,).
    Returns ``{"loss": nats per token, "loss_r": over the first ``n_r_tokens``,
    "loss_codes": over the rest}`` (the split is reported, the sum is optimised).
    """

    n_r_tokens: int = 0
    label_smoothing: float = 0.0

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch["tokens"]
        logits = model(tokens, batch["cond"], batch.get("class_id"))
        loss = next_token_cross_entropy(logits, tokens, self.label_smoothing)
        k = self.n_r_tokens
        out = {"loss": loss}
        lr = (
            next_token_cross_entropy(logits[:, :k], tokens[:, :k]).detach()
            if k > 0
            else loss.new_zeros(())
        )
        lc = (
            next_token_cross_entropy(logits[:, k:], tokens[:, k:]).detach()
            if tokens.shape[1] > k
            else loss.new_zeros(())
        )
        out["loss_r"], out["loss_codes"] = lr, lc
        return out
