"""The :class:`Transform` contract, its registry and JSON-serialisable state.

A transform is fitted once on training data, applied in both directions, and stored in
the checkpoint as plain JSON (``state_dict()``): a ``type`` name from the registry, the
constructor arguments (``config``) and the fitted statistics (``stats``, nested lists of
floats). :func:`transform_from_state` rebuilds it without pickle.

Transforms compute with torch; numpy inputs are accepted and numpy comes back, at the
cost of one conversion each way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from ..errors import CaloforgeError, CheckpointError

__all__ = [
    "NotFittedError",
    "STATE_VERSION",
    "Transform",
    "list_transforms",
    "register_transform",
    "transform_from_state",
]

#: Version of the layout of ``Transform.state_dict()``.
STATE_VERSION = 1

_REGISTRY: dict[str, type[Transform]] = {}

T = TypeVar("T", bound="type[Transform]")


class NotFittedError(CaloforgeError, RuntimeError):
    """A transform with statistics was used before ``fit`` or ``load_state_dict``."""


def register_transform(name: str) -> Callable[[T], T]:
    """Class decorator: make a transform rebuildable from its ``state_dict()`` by name."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"transform type {name!r} is registered twice")
        cls.type_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_transforms() -> list[str]:
    """Names of all registered transform types."""
    return sorted(_REGISTRY)


def transform_from_state(state: dict[str, Any]) -> Transform:
    """Rebuild a transform from ``Transform.state_dict()`` output.

    Raises:
        CheckpointError: unknown type, other state version, or malformed state.
    """
    if not isinstance(state, dict) or "type" not in state:
        raise CheckpointError(
            f"transform state must be a dict with a 'type' key, got {state!r:.200}"
        )
    name = state["type"]
    if name not in _REGISTRY:
        raise CheckpointError(
            f"unknown transform type {name!r}; known types: {', '.join(list_transforms())}"
        )
    cls = _REGISTRY[name]
    try:
        obj = cls.from_config(state.get("config", {}))
    except TypeError as exc:
        raise CheckpointError(f"bad config for transform {name!r}: {exc}") from exc
    obj.load_state_dict(state)
    return obj


def _to_tensor(x: Any) -> tuple[torch.Tensor, bool]:
    """(tensor, was_numpy): numpy arrays are viewed as tensors without a copy."""
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    return torch.as_tensor(x), False


def _back(y: Any, was_numpy: bool) -> Any:
    if not was_numpy:
        return y
    if isinstance(y, tuple):
        return tuple(_back(v, True) for v in y)
    return y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y


def _stat_to_json(v: torch.Tensor | None) -> Any:
    # float64 lists: JSON round trips Python floats exactly, so stats reload bit-for-bit.
    if v is None:
        return None
    return v.detach().to(torch.float64).cpu().tolist()


class Transform:
    """Base class of fitted, invertible preprocessing steps.

    Subclasses implement ``_forward`` / ``_inverse`` on tensors, list their constructor
    arguments in ``config()`` and their fitted tensors in ``stat_names``. Stats are kept
    as float64 tensors and cast to the input's dtype and device when applied.
    """

    type_name: ClassVar[str] = ""
    #: Names of fitted tensor attributes (None until fitted).
    stat_names: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ contract
    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Transform:
        return cls(**config)

    def fit(self, x: Any, **cond: Any) -> Transform:
        """Fit statistics on training data; stateless transforms return self unchanged."""
        return self

    def _forward(self, x: torch.Tensor, **cond: Any) -> Any:
        raise NotImplementedError

    def _inverse(self, y: torch.Tensor, **cond: Any) -> Any:
        raise NotImplementedError

    # --------------------------------------------------------------- public API
    def forward(self, x: Any, **cond: Any) -> Any:
        """Apply the transform (torch tensors, or numpy arrays in and out)."""
        xt, was_np = _to_tensor(x)
        cond_t = {k: _to_tensor(v)[0] for k, v in cond.items()}
        return _back(self._forward(xt, **cond_t), was_np)

    def __call__(self, x: Any, **cond: Any) -> Any:
        return self.forward(x, **cond)

    def inverse(self, y: Any, **cond: Any) -> Any:
        """Undo :meth:`forward`."""
        yt, was_np = _to_tensor(y)
        cond_t = {k: _to_tensor(v)[0] for k, v in cond.items()}
        return _back(self._inverse(yt, **cond_t), was_np)

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, n, None) is not None for n in self.stat_names)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} has no statistics: call fit() or load_state_dict() first"
            )

    def _stat(self, name: str, like: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"type", "version", "config", "stats"}``."""
        return {
            "type": self.type_name,
            "version": STATE_VERSION,
            "config": self.config(),
            "stats": {n: _stat_to_json(getattr(self, n, None)) for n in self.stat_names},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load fitted statistics saved by :meth:`state_dict`."""
        if state.get("type") != self.type_name:
            raise CheckpointError(
                f"state of transform {state.get('type')!r} cannot be loaded into {self.type_name!r}"
            )
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise CheckpointError(
                f"transform state version {state.get('version')} is not supported "
                f"(this caloforge reads version {STATE_VERSION})"
            )
        stats = state.get("stats", {}) or {}
        unknown = set(stats) - set(self.stat_names)
        if unknown:
            raise CheckpointError(f"unknown statistics {sorted(unknown)} for {self.type_name!r}")
        for n in self.stat_names:
            v = stats.get(n)
            setattr(self, n, None if v is None else torch.tensor(v, dtype=torch.float64))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        fitted = "" if not self.stat_names else (", fitted" if self.is_fitted else ", not fitted")
        return f"{type(self).__name__}({args}{fitted})"
