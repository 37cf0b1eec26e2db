"""The four CaloChallenge 2022 geometries, encoded as numbers (no files needed).

Numbers transcribed from the official binning files (``binning_dataset_1_photons.xml``,
``binning_dataset_1_pions.xml``, ``binning_dataset_2.xml``, ``binning_dataset_3.xml``);
the test suite checks them voxel by voxel against those files.
"""

from __future__ import annotations

from .cylindrical import CylindricalGeometry, GeometryError

__all__ = ["PRESET_NAMES", "get_geometry", "DS23_LAYER_THICKNESS_MM"]

#: Depth of one readout layer of datasets 2 and 3: two 1.4 mm W + 0.3 mm Si pairs.
DS23_LAYER_THICKNESS_MM = 3.4

_EMPTY = (0.0,)
_N_DS1_LAYERS = 24


def _ds1(layers: dict[int, tuple[tuple[float, ...], int]], name: str, particle: str):
    r_edges = [layers.get(i, (_EMPTY, 1))[0] for i in range(_N_DS1_LAYERS)]
    n_alpha = [layers.get(i, (_EMPTY, 1))[1] for i in range(_N_DS1_LAYERS)]
    return CylindricalGeometry(name, tuple(r_edges), tuple(n_alpha), particle=particle)


def _ds1_photons() -> CylindricalGeometry:
    return _ds1(
        {
            0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
            1: ((0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200), 10),
            2: ((0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300,
                 350, 400), 10),
            3: ((0, 50, 100, 200, 400, 600), 1),
            12: ((0, 100, 200, 400, 1000, 2000), 1),
        },
        "ds1-photons",
        "photon",
    )


def _ds1_pions() -> CylindricalGeometry:
    return _ds1(
        {
            0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
            1: ((0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200), 10),
            2: ((0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400), 10),
            3: ((0, 50, 100, 200, 400, 600), 1),
            12: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000),
                 10),
            13: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000,
                  2000), 10),
            14: ((0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000), 1),
        },
        "ds1-pions",
        "pion",
    )


def _regular(name: str, n_layers: int, dr: float, n_r: int, n_alpha: int):
    # Edges are k * dr rounded as the binning files print them (4.65, 9.3, ...).
    edges = tuple(round(k * dr, 6) for k in range(n_r + 1))
    return CylindricalGeometry(
        name,
        (edges,) * n_layers,
        (n_alpha,) * n_layers,
        particle="electron",
        layer_thickness_mm=DS23_LAYER_THICKNESS_MM,
    )


_FACTORIES = {
    "ds1-photons": _ds1_photons,
    "ds1-pions": _ds1_pions,
    "ds2": lambda: _regular("ds2", 45, 4.65, 9, 16),
    "ds3": lambda: _regular("ds3", 45, 2.325, 18, 50),
}

#: Names accepted by :func:`get_geometry`.
PRESET_NAMES: tuple[str, ...] = tuple(_FACTORIES)

_CACHE: dict[str, CylindricalGeometry] = {}


def get_geometry(name: str) -> CylindricalGeometry:
    """Built-in CaloChallenge geometry by name (``ds1-photons``, ``ds1-pions``, ``ds2``, ``ds3``)."""
    key = name.lower().replace("_", "-")
    if key not in _FACTORIES:
        raise GeometryError(
            f"unknown geometry {name!r}; known geometries: {', '.join(PRESET_NAMES)}"
        )
    if key not in _CACHE:
        _CACHE[key] = _FACTORIES[key]()
    return _CACHE[key]
