"""One-screen summaries of shower files (``caloforge info``).

The file is streamed in small chunks (about :data:`SUMMARY_CHUNK_VOXELS` voxels, 500
dataset-3 showers), so the summary of a file of any size needs about 100 MB beside the
interpreter; only per-shower sums are kept.
"""

from __future__ import annotations

import os

import numpy as np

from ..geometry import CylindricalGeometry, get_geometry, read_binning_xml
from .calochallenge import ShowerFile
from .checks import HDF5_READ_ERRORS, corrupt_file_error, open_hdf5
from .pointclouds import iter_point_clouds, point_cloud_file_length

__all__ = ["SUMMARY_CHUNK_VOXELS", "format_summary", "resolve_geometry_arg", "summarize_file"]

#: Voxels read per chunk by :func:`summarize_file`: 500 showers of dataset 3 (40500
#: voxels), 3125 of dataset 2; about 81 MB of float32.
SUMMARY_CHUNK_VOXELS = 20_250_000


def resolve_geometry_arg(arg: str | CylindricalGeometry | None) -> CylindricalGeometry | None:
    """A geometry from a preset name, a binning XML path, an object, or None."""
    if arg is None or isinstance(arg, CylindricalGeometry):
        return arg
    if arg.lower().endswith(".xml"):
        return read_binning_xml(arg)
    return get_geometry(arg)


def _is_point_cloud(path: str, option: str | None) -> bool:
    with open_hdf5(path, option=option) as f:
        try:
            return "showers" in f and "num_points" in f and f["showers"].ndim == 1
        except HDF5_READ_ERRORS as exc:
            raise corrupt_file_error(exc, path, option=option) from None


def summarize_file(path: str | os.PathLike, geometry=None, max_showers: int = 100_000, *,
                   option: str | None = None) -> dict:
    """Statistics of the first ``max_showers`` showers of a file, as a dict.

    An empty file (0 showers) is summarised with ``n_read == 0`` and no statistics
    (``None``), never NaN.

    Raises:
        ShowerDataError: the file cannot be read (see :func:`~caloforge.io.open_hdf5`) or
            holds invalid values.
    """
    path = os.fspath(path)
    if max_showers < 1:
        raise ValueError("max_showers must be >= 1")
    if _is_point_cloud(path, option):
        return _summarize_point_clouds(path, max_showers)
    with ShowerFile(path, resolve_geometry_arg(geometry), option=option) as f:
        n = len(f)
        n_read = min(n, max_showers)
        e_all = f.read_energies()
        tot = np.zeros(n_read, dtype=np.float64)
        nonzero = 0
        chunk = max(1, SUMMARY_CHUNK_VOXELS // f.geometry.n_voxels)
        lo = 0
        for part in f.iter_chunks(chunk, 0, n_read):
            tot[lo:lo + len(part)] = part.showers.sum(axis=1, dtype=np.float64)
            nonzero += int(np.count_nonzero(part.showers))
            lo += len(part)
        response = tot / e_all[:n_read]
        return {
            "file": path, "format": "CaloChallenge", "n_showers": n, "n_read": n_read,
            "geometry": f.geometry.name, "particle": f.particle,
            "n_voxels": f.geometry.n_voxels,
            "incident_energy_MeV": [float(e_all.min()), float(e_all.max())] if n else None,
            "sparsity_mean": (1.0 - nonzero / (n_read * f.geometry.n_voxels)) if n_read else None,
            "response_mean": float(response.mean()) if n_read else None,
            "response_std": float(response.std()) if n_read else None,
        }


def _summarize_point_clouds(path: str, max_showers: int) -> dict:
    n = point_cloud_file_length(path)
    n_read = min(n, max_showers)
    e_inc, e_vis, n_points, pdg = [], [], [], None
    for pc in iter_point_clouds(path, chunk_size=10_000):
        take = min(len(pc), n_read - sum(len(x) for x in e_inc))
        if take <= 0:
            break
        pc = pc[:take] if take < len(pc) else pc
        pdg = pc.pdg if pdg is None else pdg
        e_inc.append(pc.incident_energies.astype(np.float64))
        e_vis.append(np.bincount(pc.shower_index(), weights=pc.points[:, 3], minlength=len(pc)))
        n_points.append(pc.n_points)
    if not n_read:
        return {"file": path, "format": "point cloud (showerdata layout)", "n_showers": n,
                "n_read": 0, "particle_pdg": None, "incident_energy_MeV": None,
                "points_per_shower_mean": None, "points_per_shower_max": None,
                "response_mean": None, "response_std": None}
    e_inc, e_vis, n_points = (np.concatenate(x) for x in (e_inc, e_vis, n_points))
    response = e_vis / e_inc
    return {
        "file": path, "format": "point cloud (showerdata layout)", "n_showers": n,
        "n_read": n_read, "particle_pdg": pdg,
        "incident_energy_MeV": [float(e_inc.min()), float(e_inc.max())],
        "points_per_shower_mean": float(n_points.mean()),
        "points_per_shower_max": int(n_points.max(initial=0)),
        "response_mean": float(np.mean(response)),
        "response_std": float(np.std(response)),
    }


def format_summary(s: dict) -> str:
    """Human-readable lines for :func:`summarize_file`'s dict."""
    lines = [f"file:              {s['file']}", f"format:            {s['format']}"]
    if s["n_showers"] == 0:
        lines.append("showers:           0 (the file holds no showers: nothing to summarise)")
    else:
        lines.append(f"showers:           {s['n_showers']}"
                     + (f" (statistics from the first {s['n_read']})"
                        if s["n_read"] < s["n_showers"] else ""))
    if "geometry" in s:
        lines += [f"geometry:          {s['geometry']} ({s['n_voxels']} voxels)",
                  f"particle:          {s['particle']}"]
    elif s["n_read"]:
        lines += [f"particle (PDG):    {s['particle_pdg']}",
                  f"points per shower: mean {s['points_per_shower_mean']:.1f}, "
                  f"max {s['points_per_shower_max']}"]
    if not s["n_read"]:
        return "\n".join(lines)
    lo, hi = s["incident_energy_MeV"]
    lines.append(f"incident energy:   {lo / 1e3:.4g} .. {hi / 1e3:.4g} GeV")
    if s.get("sparsity_mean") is not None:
        lines.append(f"mean sparsity:     {s['sparsity_mean']:.4f} (fraction of zero voxels)")
    lines.append(f"E_tot / E_inc:     {s['response_mean']:.4f} +- {s['response_std']:.4f} (mean +- std)")
    return "\n".join(lines)
