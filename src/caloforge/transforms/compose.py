"""A chain of one-tensor transforms, fitted and inverted in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import CheckpointError
from .base import Transform, _back, _to_tensor, register_transform, transform_from_state

__all__ = ["Compose"]


@register_transform("compose")
class Compose(Transform):
    """``Compose([t1, t2])(x) == t2(t1(x))``; the inverse runs in reverse order.

    ``fit`` fits each step on the output of the steps before it. Only transforms that map
    one tensor to one tensor can be chained; conditioning keywords are passed to none.
    """

    def __init__(self, transforms: Iterable[Transform] = ()) -> None:
        self.transforms: list[Transform] = list(transforms)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Compose:
        if config:
            raise TypeError(f"unexpected config keys {sorted(config)}")
        return cls()

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]

    @property
    def is_fitted(self) -> bool:
        return all(t.is_fitted for t in self.transforms)

    def fit(self, x: Any, **cond: Any) -> Compose:
        xt, _ = _to_tensor(x)
        for t in self.transforms:
            t.fit(xt)
            xt = t._forward(xt)
        return self

    def _forward(self, x: Any, **cond: Any) -> Any:
        for t in self.transforms:
            x = t._forward(x)
        return x

    def _inverse(self, y: Any, **cond: Any) -> Any:
        for t in reversed(self.transforms):
            y = t._inverse(y)
        return y

    def forward(self, x: Any, **cond: Any) -> Any:
        xt, was_np = _to_tensor(x)
        return _back(self._forward(xt), was_np)

    def inverse(self, y: Any, **cond: Any) -> Any:
        yt, was_np = _to_tensor(y)
        return _back(self._inverse(yt), was_np)

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d["transforms"] = [t.state_dict() for t in self.transforms]
        return d

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        children = state.get("transforms")
        if not isinstance(children, list):
            raise CheckpointError("compose state lacks its list of 'transforms'")
        self.transforms = [transform_from_state(c) for c in children]

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"
