"""An HDF5 file written atomically, whose failures end as one clean error.

Shared by the shower and point-cloud writers. Every h5py call that touches the file goes
through :meth:`HDF5Output.call`: a failure of the machine (full disk, quota, permissions)
discards the temporary file and raises :class:`~caloforge.errors.OutputError`.

Discarding a file whose write failed needs care: HDF5 flushes its metadata when the file
is closed, which fails again on a full disk, and a file left half-closed crashes the
interpreter at exit (a segmentation fault). The temporary file is therefore truncated to
zero bytes first, which gives the space back, so the close can complete; then it is
removed. Some failures cannot be recovered that way (a disk already full when the file is
created; variable-length writes, where HDF5 itself crashes on a failed allocation), so
before creating the file and before every chunk the free space is checked against the
chunk's size plus :data:`SPACE_MARGIN_BYTES`, and a write that cannot fit stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

import h5py

from ..errors import OutputError
from .atomic import AtomicTarget, check_interrupted, output_error

__all__ = ["HDF5Output"]

T = TypeVar("T")

#: Free space kept beyond a chunk's size for HDF5's metadata and chunk cache flushes.
SPACE_MARGIN_BYTES = 4 << 20


def free_bytes(directory: str) -> int | None:
    """Bytes free for this user on the file system of ``directory`` (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return int(st.f_bavail) * int(st.f_frsize)

#: What a failed h5py write raises (OSError for I/O, RuntimeError from the id layer).
_WRITE_ERRORS = (OSError, RuntimeError)


class HDF5Output:
    """``h5py.File`` open for writing on the temporary of an :class:`AtomicTarget`.

    Args:
        path: the final file.
        mode: h5py mode for the temporary (``"w"``, or ``"a"`` for a file that ``prepare``
            created).
        prepare: called with the temporary path before it is opened with h5py (e.g. a
            layout created by another library).
    """

    def __init__(self, path: str | os.PathLike, *, mode: str = "w",
                 prepare: Callable[[str], None] | None = None):
        self.path = os.fspath(path)
        self._target = AtomicTarget(self.path, suffix=".h5")
        tmp = self._target.open()
        self.file: h5py.File | None = None
        try:
            self.ensure_space(0)
            if prepare is not None:
                prepare(tmp)
            self.file = h5py.File(tmp, mode)
        except _WRITE_ERRORS as exc:
            self.discard()
            raise output_error(self.path, exc) from None
        except BaseException:
            self.discard()
            raise

    def ensure_space(self, nbytes: int) -> None:
        """Stop with OutputError (file discarded) unless ``nbytes`` plus the margin are free."""
        free = free_bytes(os.path.dirname(os.path.abspath(self.path)))
        need = int(nbytes) + SPACE_MARGIN_BYTES
        if free is not None and free < need:
            self.discard()
            raise OutputError(
                f"cannot write {self.path}: no space left on device ({free / 1e6:.1f} MB "
                f"free, about {need / 1e6:.1f} MB needed); the temporary file was removed")

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` (h5py writes); a write failure discards the file and
        raises OutputError, a SIGINT/SIGTERM seen earlier raises Interrupted."""
        check_interrupted()
        try:
            return fn(*args, **kwargs)
        except _WRITE_ERRORS as exc:
            self.discard()
            raise output_error(self.path, exc) from None

    def commit(self) -> None:
        """Close the file and rename it onto the target."""
        check_interrupted()
        try:
            # flush first: a full disk shows here, while every object of the file is still
            # open, and discard() can then close the file cleanly; a failure inside close()
            # would leave h5py objects half-closed
            self.file.flush()
            self.file.close()
        except _WRITE_ERRORS as exc:
            self.discard()
            raise output_error(self.path, exc) from None
        except BaseException:
            self.discard()
            raise
        self._target.commit()

    def discard(self) -> None:
        """Throw the temporary file away (safe to call more than once)."""
        tmp = self._target.tmp
        try:
            if self.file is not None:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.truncate(tmp, 0)
                with contextlib.suppress(Exception):
                    if self.file.id.valid:
                        self.file.close()
        finally:
            self.file = None
            self._target.discard()
