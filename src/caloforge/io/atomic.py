"""Atomic file writes: write to a temporary file beside the target, then rename.

Guarantees, for every file caloforge writes:

* a reader never sees a half-written file: the data goes to ``.NAME.p<PID>-<random>.tmp``
  beside ``NAME`` and is renamed onto it only when complete;
* on an exception, SIGINT or SIGTERM the temporary file is removed and an existing file at
  the target is untouched (the signals are turned into :class:`~caloforge.errors.Interrupted`
  while a write is open, so the unwinding runs the cleanup; a signal whose exception was
  swallowed somewhere below, e.g. in a weakref callback of h5py, is recorded and stops the
  write at its next chunk or at the commit);
* a failed write (full disk, no permission, a directory in the way) is one
  :class:`~caloforge.errors.OutputError` naming the target and the reason;
* ``kill -9`` cannot be caught: its temporary file stays, and the next write to the same
  target removes it (:func:`remove_stale_temporaries`: temporaries of that target whose
  writing process is gone, or, for names without a process id, older than this process).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from ..errors import Interrupted, OutputError

__all__ = [
    "AtomicTarget",
    "atomic_path",
    "check_interrupted",
    "check_output_path",
    "interrupt_guard",
    "output_error",
    "remove_stale_temporaries",
]

#: errno values of a write that fails because of the machine, not of caloforge.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.EFBIG, errno.EIO, errno.EISDIR, errno.ENOTDIR}
#: the errno of a failed write inside an exception's text: h5py's ``errno = 28``, or a Rust
#: I/O error's ``(os error 28)`` (safetensors raises a plain SafetensorError with it)
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)|os error (\d+)")


def _errno_in_text(exc: BaseException) -> int | None:
    m = _ERRNO_IN_TEXT.search(str(exc))
    return int(m.group(1) or m.group(2)) if m else None


def _process_start_time() -> float:
    """Wall-clock start of this process (Linux /proc), else the time of this import."""
    try:
        with open("/proc/self/stat") as fh:
            # field 22 (starttime, clock ticks after boot) follows the ')' of the name
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_PROCESS_START = _process_start_time()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ signals
_guard_lock = threading.Lock()
_guard_depth = 0
_previous_handlers: dict[int, object] = {}
_received: int | None = None


_previous_unraisablehook = None


def _on_signal(signum, frame) -> None:
    global _received
    _received = signum
    raise Interrupted(signum)


def _quiet_unraisable(unraisable) -> None:
    # The handler's exception can land where Python cannot propagate it (a weakref or GC
    # callback inside h5py): Python would print "Exception ignored" with a traceback and
    # go on, which is how a Ctrl-C got lost. The signal is recorded in _received and
    # raised again at the next chunk or the commit, so that message is dropped.
    if isinstance(unraisable.exc_value, Interrupted):
        return
    (_previous_unraisablehook or sys.__unraisablehook__)(unraisable)


@contextlib.contextmanager
def interrupt_guard() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM raise :class:`~caloforge.errors.Interrupted`.

    Nests (the outermost guard installs and restores the handlers); a no-op outside the
    main thread, where Python cannot install signal handlers.
    """
    global _guard_depth, _received, _previous_unraisablehook
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _guard_lock:
        if _guard_depth == 0:
            _received = None
            for sig in (signal.SIGINT, signal.SIGTERM):
                _previous_handlers[sig] = signal.signal(sig, _on_signal)
            _previous_unraisablehook = sys.unraisablehook
            sys.unraisablehook = _quiet_unraisable
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                for sig, handler in _previous_handlers.items():
                    signal.signal(sig, handler)
                _previous_handlers.clear()
                sys.unraisablehook = _previous_unraisablehook or sys.__unraisablehook__
                _previous_unraisablehook = None
                _received = None


def check_interrupted() -> None:
    """Raise :class:`~caloforge.errors.Interrupted` if SIGINT/SIGTERM arrived inside the
    current :func:`interrupt_guard`, even when its first exception was swallowed."""
    if _received is not None:
        raise Interrupted(_received)


# ---------------------------------------------------------------- targets
def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code is None:  # h5py and safetensors put the errno of a failed write in the text
        code = _errno_in_text(exc)
    if code is not None and code in _ENVIRONMENT_ERRNOS:
        return os.strerror(code).lower()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def is_environment_error(exc: BaseException) -> bool:
    """True for an OSError (or h5py or safetensors error) caused by the machine: full
    disk, permissions."""
    if not isinstance(exc, (OSError, RuntimeError)) and \
            type(exc).__name__ != "SafetensorError":
        return False
    code = getattr(exc, "errno", None)
    if code is None:
        code = _errno_in_text(exc)
    return code in _ENVIRONMENT_ERRNOS


def output_error(path: str, exc: BaseException, *, removed: bool = True) -> OutputError:
    """The one-line error for a failed write of ``path`` (an OutputError passes unchanged:
    a writer's own check, e.g. for free space, is not wrapped a second time)."""
    if isinstance(exc, OutputError):
        return exc
    tail = "; the temporary file was removed" if removed else ""
    return OutputError(f"cannot write {path}: {_reason(exc)}{tail}")


def check_output_path(path: str | os.PathLike) -> str:
    """Check, before any work, that ``path`` can become a file; returns it as a str.

    Raises:
        OutputError: ``path`` is an existing directory, its parent is a file, or the
            parent directory cannot be created or written.
    """
    path = os.fspath(path)
    if not path or path.endswith(os.sep):
        raise OutputError(f"cannot write {path!r}: give a file name, not a directory")
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write {path}: {directory} is not a directory") from None
    except OSError as exc:
        raise output_error(path, exc, removed=False) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied in {directory}")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def is_stale_temporary(name_rest: str, mtime: float) -> bool:
    """Whether a temporary whose name continues with ``name_rest`` after its prefix was
    left by a killed writer: ``p<PID>-...`` when that process no longer runs (and is not
    this one), an older naming without a process id when older than this process."""
    m = re.match(r"p(\d+)-", name_rest)
    if m:
        pid = int(m.group(1))
        return pid != os.getpid() and not _pid_alive(pid)
    return mtime < _PROCESS_START


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove temporaries ``.NAME.*.tmp`` of the target ``path`` left by killed writers.

    A temporary named with a process id (``.NAME.p<PID>-...``) is stale when that process
    no longer runs; one without (an older naming) when it is older than this process.
    Temporaries of live writers, and anything that is not a regular file, are kept.

    Returns:
        The paths removed.
    """
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    prefix = f".{base}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
            if not os.path.isfile(full) or os.path.islink(full):
                continue
            if is_stale_temporary(name[len(prefix):], st.st_mtime):
                os.remove(full)
                removed.append(full)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
    return removed


class AtomicTarget:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit`.

    Example::

        t = AtomicTarget("out.h5", suffix=".h5")
        tmp = t.open()
        try:
            write(tmp)
        except BaseException:
            t.discard()
            raise
        t.commit()
    """

    def __init__(self, path: str | os.PathLike, suffix: str = ""):
        self.path = os.fspath(path)
        self.suffix = suffix
        self.tmp: str | None = None
        self._guard: contextlib.AbstractContextManager | None = None

    def open(self) -> str:
        """Check the target, clear stale temporaries, create the temporary; returns its path.

        From here until :meth:`commit` or :meth:`discard`, SIGINT and SIGTERM raise
        :class:`~caloforge.errors.Interrupted` (main thread only).
        """
        check_output_path(self.path)
        remove_stale_temporaries(self.path)
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.p{os.getpid()}-",
                                       suffix=self.suffix + ".tmp", dir=directory)
        except OSError as exc:
            raise output_error(self.path, exc, removed=False) from None
        os.close(fd)
        self.tmp = tmp
        self._guard = interrupt_guard()
        self._guard.__enter__()
        return tmp

    def _release(self) -> None:
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.__exit__(None, None, None)

    def commit(self) -> None:
        """Rename the temporary onto the target (a SIGINT/SIGTERM seen meanwhile aborts)."""
        if self.tmp is None:
            raise RuntimeError("AtomicTarget.commit() before open()")
        try:
            check_interrupted()
            # mkstemp creates the file private (0600); give the result the permissions an
            # ordinary open() would have given it.
            if os.path.isfile(self.tmp):
                os.chmod(self.tmp, 0o666 & ~_current_umask())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise output_error(self.path, exc) from None
        except BaseException:
            self.discard()
            raise
        self.tmp = None
        self._release()

    def discard(self) -> None:
        """Remove the temporary; the target is left as it was. Safe to call twice."""
        try:
            if self.tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.tmp)
                self.tmp = None
        finally:
            self._release()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception (SIGINT and SIGTERM included) the temporary file is removed and
    ``path`` is left untouched, so a reader never sees a half-written file. An OSError of
    the machine (full disk, permissions) becomes one :class:`~caloforge.errors.OutputError`.
    """
    target = AtomicTarget(path, suffix)
    tmp = target.open()
    try:
        yield tmp
    except BaseException as exc:
        target.discard()
        if is_environment_error(exc):
            raise output_error(target.path, exc) from None
        raise
    target.commit()
