"""Reader for the CaloChallenge binning XML files (``binning_dataset_*.xml``)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from .cylindrical import CylindricalGeometry, GeometryError

__all__ = ["read_binning_xml"]

_PARTICLE_BY_PDG = {11: "electron", 22: "photon", 211: "pion"}


def read_binning_xml(path: str | os.PathLike, name: str | None = None) -> CylindricalGeometry:
    """Build a :class:`CylindricalGeometry` from an official CaloChallenge binning file.

    Layers are taken in the order of their ``id`` attribute; a layer with ``r_edges="0"``
    holds no voxel, as in the files themselves.
    """
    path = os.fspath(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise GeometryError(f"{path}: cannot read binning XML ({exc})") from None
    bins = root.findall("Bin")
    if len(bins) != 1:
        raise GeometryError(f"{path}: expected exactly one <Bin> element, found {len(bins)}")
    b = bins[0]
    layers = []
    for el in b.findall("Layer"):
        try:
            lid = int(el.attrib["id"])
            edges = tuple(float(s) for s in el.attrib["r_edges"].split(","))
            n_alpha = int(el.attrib["n_bin_alpha"])
        except (KeyError, ValueError) as exc:
            raise GeometryError(f"{path}: malformed <Layer> element: {exc}") from None
        layers.append((lid, edges, n_alpha))
    if not layers:
        raise GeometryError(f"{path}: no <Layer> elements")
    layers.sort()
    ids = [lid for lid, _, _ in layers]
    if ids != list(range(len(ids))):
        raise GeometryError(f"{path}: layer ids must be 0..{len(ids) - 1}, got {ids}")
    pid = int(b.attrib.get("pid", 0))
    particle = b.attrib.get("name") or _PARTICLE_BY_PDG.get(pid, "unknown")
    return CylindricalGeometry(
        name or os.path.splitext(os.path.basename(path))[0],
        tuple(e for _, e, _ in layers),
        tuple(a for _, _, a in layers),
        particle=particle,
    )
