"""Shower containers and file formats (CaloChallenge HDF5, showerdata point clouds)."""

from .atomic import (
    AtomicTarget,
    atomic_path,
    check_interrupted,
    check_output_path,
    interrupt_guard,
    remove_stale_temporaries,
)
from .background import BackgroundWrites
from .calochallenge import (
    COMPRESSIONS,
    ShowerFile,
    ShowerWriter,
    geometry_for_voxels,
    iter_showers,
    read_showers,
    write_showers,
)
from .checks import check_input_path, open_hdf5
from .energies import read_incident_energies
from .errors import ShowerDataError
from .pointclouds import (
    PointCloudWriter,
    is_point_cloud_file,
    iter_point_clouds,
    point_cloud_file_length,
    read_point_clouds,
    write_point_clouds,
)
from .showers import PointCloudData, ShowerData
from .summary import format_summary, resolve_geometry_arg, summarize_file

__all__ = [
    "COMPRESSIONS",
    "AtomicTarget",
    "BackgroundWrites",
    "PointCloudData",
    "PointCloudWriter",
    "ShowerData",
    "ShowerDataError",
    "ShowerFile",
    "ShowerWriter",
    "atomic_path",
    "check_input_path",
    "check_interrupted",
    "check_output_path",
    "format_summary",
    "geometry_for_voxels",
    "interrupt_guard",
    "is_point_cloud_file",
    "iter_point_clouds",
    "iter_showers",
    "open_hdf5",
    "point_cloud_file_length",
    "read_incident_energies",
    "read_point_clouds",
    "read_showers",
    "remove_stale_temporaries",
    "resolve_geometry_arg",
    "summarize_file",
    "write_point_clouds",
    "write_showers",
]
