"""Detector geometries: where the voxels and cells of a calorimeter are."""

from .binning_xml import read_binning_xml
from .cylindrical import CylindricalGeometry, GeometryError
from .planar import PlanarGeometry, ild_ecal
from .presets import DS23_LAYER_THICKNESS_MM, PRESET_NAMES, get_geometry

__all__ = [
    "CylindricalGeometry",
    "DS23_LAYER_THICKNESS_MM",
    "GeometryError",
    "PRESET_NAMES",
    "PlanarGeometry",
    "get_geometry",
    "geometry_from_dict",
    "ild_ecal",
    "read_binning_xml",
]


def geometry_from_dict(d: dict) -> "CylindricalGeometry | PlanarGeometry":
    """Rebuild a geometry saved with ``to_dict()`` (checkpoints, file attributes)."""
    kind = d.get("type", "cylindrical")
    if kind == "cylindrical":
        return CylindricalGeometry.from_dict(d)
    if kind == "planar":
        return PlanarGeometry.from_dict(d)
    raise GeometryError(f"unknown geometry type {kind!r}")
