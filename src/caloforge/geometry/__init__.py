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
    "named_geometry",
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


def named_geometry(name: str) -> "CylindricalGeometry | PlanarGeometry":
    """A built-in geometry by name: the CaloChallenge presets (:func:`get_geometry`) or the
    ILD-like point-cloud ECAL, ``ild-ecal`` (30 x 30 cells, the window of ``caloforge
    simulate --points``) or ``ild-ecal:N`` (an N x N cell window)."""
    key = str(name).lower().replace("_", "-")
    if key == "ild-ecal" or key.startswith("ild-ecal:"):
        cells = key.partition(":")[2]
        if cells and not (cells.isdigit() and int(cells) > 0):
            raise GeometryError(f"geometry {name!r}: give ild-ecal or ild-ecal:N with N cells "
                                "per side, e.g. ild-ecal:80")
        return ild_ecal(int(cells)) if cells else ild_ecal()
    try:
        return get_geometry(name)
    except GeometryError:
        raise GeometryError(f"unknown geometry {name!r}; known geometries: "
                            f"{', '.join(PRESET_NAMES)}, ild-ecal, ild-ecal:N") from None
