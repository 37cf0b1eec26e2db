"""One write at a time on a background thread, so the next batch is made meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["BackgroundWrites"]


class BackgroundWrites:
    """Run ``write(item)`` calls on one background thread, at most one in flight.

    ``submit`` first waits for the previous write (re-raising its error in the caller's
    thread), then hands the new item over and returns: the caller fills its next buffer
    while the last one is written, so it may reuse a buffer two submissions later.
    Leaving the ``with`` block waits for the last write, also when the block ends with an
    exception (an interrupt), so the writer is never aborted halfway through a chunk; the
    write's own error, if any, is raised unless another one is already on its way.

    Example::

        with ShowerWriter(path, geometry) as w, BackgroundWrites(w.write) as bg:
            for chunk in chunks:
                bg.submit(chunk)
    """

    def __init__(self, write: Callable[[Any], None]) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="caloforge-writer")
        self._pending: Future | None = None

    def wait(self) -> None:
        """Block until the write in flight is done; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def submit(self, item: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, item)

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:
                with contextlib.suppress(BaseException):  # the block's own error wins
                    self.wait()
        finally:
            self._pool.shutdown(wait=True)
