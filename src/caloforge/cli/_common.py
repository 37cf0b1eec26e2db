"""Argument checks shared by several sub-commands (not a sub-command itself)."""

from __future__ import annotations

import os

__all__ = ["check_device", "check_output_dir"]


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


def check_output_dir(path: str | os.PathLike, *, option: str = "-o") -> str:
    """Check, before any work and without creating anything, that ``path`` can be (or is)
    a directory this process may write into; returns it as a str.

    Raises :class:`caloforge.errors.OutputError`: ``path`` is an existing file, lies below a
    file, or its nearest existing directory is not writable.
    """
    from ..errors import OutputError

    path = os.fspath(path)
    full = os.path.abspath(path)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise OutputError(f"{option} {path}: exists and is not a directory "
                              "(give a directory to write into)")
        probe = full
    else:
        probe = os.path.dirname(full)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise OutputError(f"{option} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: permission denied in {probe}")
    return path
