"""One error path for every file that enters caloforge.

:func:`open_hdf5` checks, in this order, that the path exists, is a regular file (not a
directory, a FIFO or a device), can be read, is not empty, carries the HDF5 signature, and
opens; each failure is a :class:`ShowerDataError` naming the file and the problem, so a
command prints one line instead of an h5py or OS traceback. Reads of a file that opened
but is damaged further on (a truncated data region, a flipped byte in a compressed chunk)
are wrapped by :func:`corrupt_file_error`.
"""

from __future__ import annotations

import errno
import os
import stat

import h5py

from .errors import ShowerDataError

__all__ = ["HDF5_READ_ERRORS", "check_input_path", "check_numeric", "corrupt_file_error",
           "open_hdf5"]

#: What h5py raises on a damaged file: OSError for failed reads and filters, the others
#: for corrupt metadata (object headers, attribute messages, B-trees).
HDF5_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _short(exc: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def check_input_path(path: str | os.PathLike, *, option: str | None = None) -> str:
    """Check that ``path`` names a readable, non-empty regular file; returns it as a str.

    Raises:
        ShowerDataError: does not exist, a directory, not a regular file, not readable
            (permission), or empty.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        problem = ("broken symbolic link" if os.path.islink(path) else "file does not exist")
        raise ShowerDataError(problem, path=path, option=option) from None
    except PermissionError:
        raise ShowerDataError("permission denied (cannot reach the file)", path=path,
                              option=option) from None
    except OSError as exc:
        raise ShowerDataError(f"cannot access the file ({_short(exc)})", path=path,
                              option=option) from None
    if stat.S_ISDIR(st.st_mode):
        raise ShowerDataError("is a directory, expected a file", path=path, option=option)
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block the reader forever, a device is never a shower file
        raise ShowerDataError("is not a regular file", path=path, option=option)
    try:
        with _open_for_probe(path) as fh:
            head = fh.read(8)
    except PermissionError:
        raise ShowerDataError("permission denied (the file is not readable)", path=path,
                              option=option) from None
    except OSError as exc:
        raise ShowerDataError(f"cannot read the file ({_short(exc)})", path=path,
                              option=option) from None
    if not head:
        raise ShowerDataError("file is empty (0 bytes)", path=path, option=option)
    return path


def _open_for_probe(path: str):
    # a seam for tests: as root (CI), permission bits never stop a read
    return open(path, "rb")


def open_hdf5(path: str | os.PathLike, *, option: str | None = None) -> h5py.File:
    """Open an HDF5 file for reading after :func:`check_input_path`.

    Raises:
        ShowerDataError: any problem of :func:`check_input_path`, not an HDF5 file, or an
            HDF5 file that cannot be opened (truncated, corrupt superblock).
    """
    path = check_input_path(path, option=option)
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise ShowerDataError(f"cannot read the file ({_short(exc)})", path=path,
                              option=option) from None
    if not is_hdf5:
        raise ShowerDataError("not an HDF5 file", path=path, option=option)
    try:
        return h5py.File(path, "r")
    except HDF5_READ_ERRORS as exc:
        raise corrupt_file_error(exc, path, option=option) from None


def corrupt_file_error(exc: BaseException, path: str, *, dataset: str | None = None,
                       option: str | None = None, what: str = "cannot read") -> ShowerDataError:
    """The one-line error for an h5py failure on a file that looked like HDF5."""
    text = str(exc)
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        problem = "permission denied (the file is not readable)"
    elif "truncated" in text:
        problem = f"{what}: the file is truncated (was it copied or written completely?)"
    else:
        problem = f"{what}: the file is corrupt ({_short(exc)})"
    return ShowerDataError(problem, path=path, dataset=dataset, option=option)


def check_numeric(ds: h5py.Dataset, path: str, key: str, *,
                  option: str | None = None) -> None:
    """Refuse datasets whose values are not numbers (strings, compounds, references)."""
    try:
        kind = ds.dtype.kind
    except HDF5_READ_ERRORS as exc:
        raise corrupt_file_error(exc, path, dataset=key, option=option) from None
    if kind not in "fiu" or ds.dtype.names is not None:
        raise ShowerDataError(f"values of type {ds.dtype} are not numbers", path=path,
                              dataset=key, option=option)
