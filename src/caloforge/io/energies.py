"""Incident energies read from a file (``--energies-from``, ``--energy file:PATH``).

The energies are validated like any other input: the dataset must be ``(N, 1)`` or
``(N,)`` numbers, at least one, all finite and positive. A second column is an error (a
file of another layout, not energies to be flattened silently).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .checks import HDF5_READ_ERRORS, check_numeric, corrupt_file_error, open_hdf5
from .errors import ShowerDataError
from .showers import check_finite_nonnegative

__all__ = ["read_incident_energies"]

_MEV_PER_GEV = 1000.0


def read_incident_energies(path: str | os.PathLike, *, option: str | None = None) -> np.ndarray:
    """The incident energies (MeV) of a CaloChallenge or showerdata point-cloud file.

    Reads ``incident_energies`` (MeV) of a CaloChallenge file, or ``energies`` (GeV) of a
    point-cloud file.

    Args:
        path: the file.
        option: the command-line option it came from (named in errors).

    Returns:
        (N,) float64 energies in MeV, file order.

    Raises:
        ShowerDataError: any problem of the file (see :func:`~caloforge.io.checks.open_hdf5`),
            no energy dataset, a shape other than (N,) / (N, 1), no rows, values that are
            not numbers, NaN/inf or not positive.
    """
    path = os.fspath(path)
    with open_hdf5(path, option=option) as f:
        try:
            if "incident_energies" in f:
                key, scale = "incident_energies", 1.0
            elif "energies" in f:  # showerdata layout stores GeV
                key, scale = "energies", _MEV_PER_GEV
            else:
                present = ", ".join(sorted(f.keys())) or "none"
                raise ShowerDataError(
                    f"no 'incident_energies' (or point-cloud 'energies') dataset "
                    f"(datasets present: {present})", path=path, option=option)
            ds = f[key]
            if not isinstance(ds, h5py.Dataset):
                raise ShowerDataError("is a group, expected a dataset", path=path,
                                      dataset=key, option=option)
            check_numeric(ds, path, key, option=option)
            if not (ds.ndim == 1 or (ds.ndim == 2 and ds.shape[1] == 1)):
                raise ShowerDataError(
                    f"expected shape (N, 1) or (N,), got {ds.shape}: one energy per shower",
                    path=path, dataset=key, option=option)
            if ds.shape[0] == 0:
                raise ShowerDataError("holds no incident energies (0 rows)", path=path,
                                      dataset=key, option=option)
            e = np.asarray(ds[...], dtype=np.float64).reshape(-1) * scale
        except ShowerDataError:
            raise
        except HDF5_READ_ERRORS as exc:
            raise corrupt_file_error(exc, path, option=option) from None
    try:
        check_finite_nonnegative(e, "incident energies", path=path, dataset=key,
                                 strictly_positive=True)
    except ShowerDataError as exc:
        raise exc.with_option(option) from None
    return e
