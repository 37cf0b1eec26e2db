"""Argument checks shared by several sub-commands (not a sub-command itself)."""

from __future__ import annotations

__all__ = ["check_device"]


def check_device(device: str | None, *, option: str = "--device") -> None:
    """Reject an unknown device, or CUDA on a machine without it, before any work.

    ``None`` (the command's default) passes. Raises :class:`caloforge.errors.ConfigError`.
    """
    if device is None:
        return
    import torch

    from ..errors import ConfigError

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {device}: unknown device (use cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option} {device}: unsupported device (use cpu or cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {device}: CUDA is not available on this machine")
