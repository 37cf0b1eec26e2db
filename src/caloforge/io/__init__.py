"""Shower containers and file formats (CaloChallenge HDF5, showerdata point clouds)."""

from .atomic import atomic_path
from .calochallenge import (
    ShowerFile,
    ShowerWriter,
    geometry_for_voxels,
    iter_showers,
    read_showers,
    write_showers,
)
from .errors import ShowerDataError
from .pointclouds import (
    PointCloudWriter,
    iter_point_clouds,
    point_cloud_file_length,
    read_point_clouds,
    write_point_clouds,
)
from .showers import PointCloudData, ShowerData
from .summary import format_summary, resolve_geometry_arg, summarize_file

__all__ = [
    "PointCloudData",
    "PointCloudWriter",
    "ShowerData",
    "ShowerDataError",
    "ShowerFile",
    "ShowerWriter",
    "atomic_path",
    "format_summary",
    "geometry_for_voxels",
    "iter_point_clouds",
    "iter_showers",
    "point_cloud_file_length",
    "read_point_clouds",
    "read_showers",
    "resolve_geometry_arg",
    "summarize_file",
    "write_point_clouds",
    "write_showers",
]
