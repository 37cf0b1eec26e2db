"""One-screen summaries of shower files (``caloforge info``)."""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..geometry import CylindricalGeometry, get_geometry, read_binning_xml
from .calochallenge import ShowerFile
from .errors import ShowerDataError
from .pointclouds import point_cloud_file_length, read_point_clouds

__all__ = ["summarize_file", "format_summary", "resolve_geometry_arg"]


def resolve_geometry_arg(arg: str | CylindricalGeometry | None) -> CylindricalGeometry | None:
    """A geometry from a preset name, a binning XML path, an object, or None."""
    if arg is None or isinstance(arg, CylindricalGeometry):
        return arg
    if arg.lower().endswith(".xml"):
        return read_binning_xml(arg)
    return get_geometry(arg)


def _is_point_cloud(path: str) -> bool:
    with h5py.File(path, "r") as f:
        return "showers" in f and "num_points" in f and f["showers"].ndim == 1


def summarize_file(path: str | os.PathLike, geometry=None, max_showers: int = 100_000) -> dict:
    """Statistics of the first ``max_showers`` showers of a file, as a dict."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ShowerDataError("file does not exist", path=path)
    if not h5py.is_hdf5(path):
        raise ShowerDataError("not an HDF5 file", path=path)
    if _is_point_cloud(path):
        n = point_cloud_file_length(path)
        pc = read_point_clouds(path, 0, min(n, max_showers))
        e_vis = np.bincount(pc.shower_index(), weights=pc.points[:, 3], minlength=len(pc))
        return {
            "file": path, "format": "point cloud (showerdata layout)", "n_showers": n,
            "n_read": len(pc), "particle_pdg": pc.pdg,
            "incident_energy_MeV": [float(pc.incident_energies.min()), float(pc.incident_energies.max())],
            "points_per_shower_mean": float(pc.n_points.mean()),
            "points_per_shower_max": int(pc.n_points.max(initial=0)),
            "response_mean": float(np.mean(e_vis / pc.incident_energies)),
            "response_std": float(np.std(e_vis / pc.incident_energies)),
        }
    with ShowerFile(path, resolve_geometry_arg(geometry)) as f:
        n = len(f)
        e_all = f.read_energies()
        n_read = min(n, max_showers)
        tot, nonzero = [], 0
        for chunk in f.iter_chunks(5000, 0, n_read):
            tot.append(chunk.showers.sum(axis=1, dtype=np.float64))
            nonzero += int(np.count_nonzero(chunk.showers))
        tot = np.concatenate(tot) if tot else np.zeros(0)
        response = tot / e_all[:n_read]
        return {
            "file": path, "format": "CaloChallenge", "n_showers": n, "n_read": n_read,
            "geometry": f.geometry.name, "particle": f.particle,
            "n_voxels": f.geometry.n_voxels,
            "incident_energy_MeV": [float(e_all.min()), float(e_all.max())] if n else [0.0, 0.0],
            "sparsity_mean": 1.0 - nonzero / max(1, n_read * f.geometry.n_voxels),
            "response_mean": float(response.mean()) if n_read else float("nan"),
            "response_std": float(response.std()) if n_read else float("nan"),
        }


def format_summary(s: dict) -> str:
    """Human-readable lines for :func:`summarize_file`'s dict."""
    lo, hi = s["incident_energy_MeV"]
    lines = [f"file:              {s['file']}", f"format:            {s['format']}",
             f"showers:           {s['n_showers']}"
             + (f" (statistics from the first {s['n_read']})" if s["n_read"] < s["n_showers"] else "")]
    if "geometry" in s:
        lines += [f"geometry:          {s['geometry']} ({s['n_voxels']} voxels)",
                  f"particle:          {s['particle']}"]
    else:
        lines += [f"particle (PDG):    {s['particle_pdg']}",
                  f"points per shower: mean {s['points_per_shower_mean']:.1f}, "
                  f"max {s['points_per_shower_max']}"]
    lines.append(f"incident energy:   {lo / 1e3:.4g} .. {hi / 1e3:.4g} GeV")
    if "sparsity_mean" in s:
        lines.append(f"mean sparsity:     {s['sparsity_mean']:.4f} (fraction of zero voxels)")
    lines.append(f"E_tot / E_inc:     {s['response_mean']:.4f} +- {s['response_std']:.4f} (mean +- std)")
    return "\n".join(lines)
