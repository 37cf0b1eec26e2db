"""Cylindrical voxel geometry in the CaloChallenge convention.

A shower is a flat vector of ``V`` voxel energies. Voxels are ordered layer by layer;
inside a layer angular bins are the slow index and radial bins the fast index::

    index = layer_offset[layer] + alpha_bin * n_r[layer] + r_bin

Layers may have different radial edges and angular bin counts (dataset 1), and a layer
may hold no voxel at all (an ``r_edges`` of ``(0,)``, as in the dataset-1 binning files).
Angular bin centres are the mid-points of ``linspace(-pi, pi, n_alpha + 1)`` and the
CaloChallenge "eta" and "phi" cell coordinates are ``r cos(alpha)`` and ``r sin(alpha)``
(in mm), as in the challenge's own feature code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import CaloforgeError

__all__ = ["CylindricalGeometry", "GeometryError"]


class GeometryError(CaloforgeError, ValueError):
    """A geometry is malformed, or data does not fit the geometry it is paired with."""


@dataclass(frozen=True, eq=False)
class CylindricalGeometry:
    """Per-layer radial edges (mm) and angular bin counts of a cylindrical readout.

    Args:
        name: short identifier, e.g. ``"ds2"``.
        r_edges: one tuple of increasing radial edges (mm) per layer; ``(0.0,)`` marks a
            layer without voxels.
        n_alpha: number of angular bins per layer (1 means no angular binning).
        particle: the particle the geometry was made for (``"electron"``, ``"photon"``,
            ``"pion"``); informative, CaloChallenge files are per particle.
        layer_thickness_mm: depth of one readout layer, when known (used for positions
            along the shower axis); ``None`` when the geometry does not define it.
    """

    name: str
    r_edges: tuple[tuple[float, ...], ...]
    n_alpha: tuple[int, ...]
    particle: str = "electron"
    layer_thickness_mm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "r_edges", tuple(tuple(float(x) for x in e) for e in self.r_edges))
        object.__setattr__(self, "n_alpha", tuple(int(a) for a in self.n_alpha))
        if len(self.r_edges) != len(self.n_alpha):
            raise GeometryError(
                f"geometry {self.name!r}: {len(self.r_edges)} layers of radial edges but "
                f"{len(self.n_alpha)} angular bin counts"
            )
        if not self.r_edges:
            raise GeometryError(f"geometry {self.name!r} has no layers")
        for i, (edges, na) in enumerate(zip(self.r_edges, self.n_alpha)):
            if len(edges) < 1:
                raise GeometryError(f"geometry {self.name!r}, layer {i}: empty r_edges")
            if any(b <= a for a, b in zip(edges, edges[1:])):
                raise GeometryError(
                    f"geometry {self.name!r}, layer {i}: radial edges must increase: {edges}"
                )
            if edges[0] < 0:
                raise GeometryError(f"geometry {self.name!r}, layer {i}: negative radius")
            if na < 1:
                raise GeometryError(f"geometry {self.name!r}, layer {i}: n_alpha must be >= 1")
        if self.n_voxels == 0:
            raise GeometryError(f"geometry {self.name!r} has no voxels")

    # ------------------------------------------------------------------ sizes
    @property
    def n_layers(self) -> int:
        """Number of layers, including layers without voxels."""
        return len(self.r_edges)

    @cached_property
    def n_r(self) -> np.ndarray:
        """Radial bins per layer, shape (n_layers,)."""
        return np.array([len(e) - 1 for e in self.r_edges], dtype=np.int64)

    @cached_property
    def layer_sizes(self) -> np.ndarray:
        """Voxels per layer, shape (n_layers,); 0 for empty layers."""
        return self.n_r * np.array(self.n_alpha, dtype=np.int64)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """First voxel index of each layer plus the total, shape (n_layers + 1,)."""
        return np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(np.int64)

    @property
    def n_voxels(self) -> int:
        return int(self.layer_sizes.sum())

    @cached_property
    def active_layers(self) -> tuple[int, ...]:
        """Layers that hold voxels (the CaloChallenge "relevant layers")."""
        return tuple(int(i) for i in np.flatnonzero(self.layer_sizes > 0))

    @cached_property
    def alpha_binned_layers(self) -> tuple[int, ...]:
        """Active layers with more than one angular bin."""
        return tuple(i for i in self.active_layers if self.n_alpha[i] > 1)

    @property
    def is_regular(self) -> bool:
        """True when every layer has the same radial edges and angular bins (ds2, ds3)."""
        return len(set(self.r_edges)) == 1 and len(set(self.n_alpha)) == 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(layers, alpha, r) of a regular geometry; raises for irregular ones."""
        if not self.is_regular:
            raise GeometryError(
                f"geometry {self.name!r} is irregular (per-layer binning differs) and has no "
                "single (layer, alpha, r) image shape"
            )
        return (self.n_layers, self.n_alpha[0], int(self.n_r[0]))

    # --------------------------------------------------------------- indexing
    def voxel_index(self, layer, alpha, r) -> np.ndarray:
        """Flat voxel index of (layer, alpha bin, r bin); works on arrays."""
        layer = np.asarray(layer, dtype=np.int64)
        alpha = np.asarray(alpha, dtype=np.int64)
        r = np.asarray(r, dtype=np.int64)
        n_r = self.n_r[layer]
        n_a = np.asarray(self.n_alpha, dtype=np.int64)[layer]
        if np.any((r < 0) | (r >= n_r) | (alpha < 0) | (alpha >= n_a)):
            raise GeometryError(f"(layer, alpha, r) out of range for geometry {self.name!r}")
        return self.layer_offsets[layer] + alpha * n_r + r

    def unravel(self, index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse of :meth:`voxel_index`: (layer, alpha bin, r bin) of flat indices."""
        index = np.asarray(index, dtype=np.int64)
        if np.any((index < 0) | (index >= self.n_voxels)):
            raise GeometryError(f"voxel index out of range [0, {self.n_voxels})")
        return self.voxel_layer[index], self.voxel_alpha[index], self.voxel_r[index]

    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer of every voxel, shape (V,)."""
        return np.repeat(np.arange(self.n_layers), self.layer_sizes)

    @cached_property
    def voxel_alpha(self) -> np.ndarray:
        """Angular bin of every voxel, shape (V,)."""
        return np.concatenate(
            [np.repeat(np.arange(na), nr) for na, nr in zip(self.n_alpha, self.n_r) if nr > 0]
        )

    @cached_property
    def voxel_r(self) -> np.ndarray:
        """Radial bin of every voxel, shape (V,)."""
        return np.concatenate(
            [np.tile(np.arange(nr), na) for na, nr in zip(self.n_alpha, self.n_r) if nr > 0]
        )

    # ------------------------------------------------------------ coordinates
    @cached_property
    def r_centres(self) -> np.ndarray:
        """Radial bin mid-point of every voxel (mm), shape (V,)."""
        mids = [0.5 * (np.asarray(e[1:]) + np.asarray(e[:-1])) for e in self.r_edges]
        return np.concatenate([np.tile(m, na) for m, na in zip(mids, self.n_alpha) if len(m)])

    @cached_property
    def alpha_centres(self) -> np.ndarray:
        """Angular bin mid-point of every voxel (rad, in (-pi, pi)), shape (V,)."""
        out = []
        for na, nr in zip(self.n_alpha, self.n_r):
            if nr == 0:
                continue
            edges = np.linspace(-math.pi, math.pi, na + 1)
            out.append(np.repeat(0.5 * (edges[1:] + edges[:-1]), nr))
        return np.concatenate(out)

    @cached_property
    def eta(self) -> np.ndarray:
        """CaloChallenge "eta" cell coordinate r cos(alpha) (mm), shape (V,)."""
        return self.r_centres * np.cos(self.alpha_centres)

    @cached_property
    def phi(self) -> np.ndarray:
        """CaloChallenge "phi" cell coordinate r sin(alpha) (mm), shape (V,)."""
        return self.r_centres * np.sin(self.alpha_centres)

    def layer_slice(self, layer: int) -> slice:
        """Slice of the flat voxel vector that belongs to ``layer``."""
        if not 0 <= layer < self.n_layers:
            raise GeometryError(f"layer {layer} out of range for geometry {self.name!r}")
        return slice(int(self.layer_offsets[layer]), int(self.layer_offsets[layer + 1]))

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """Energy per layer, (N, V) -> (N, n_layers); empty layers give 0."""
        showers = np.asarray(showers)
        out = np.add.reduceat(showers, self.layer_offsets[:-1][self.layer_sizes > 0], axis=-1)
        full = np.zeros(showers.shape[:-1] + (self.n_layers,), dtype=out.dtype)
        full[..., list(self.active_layers)] = out
        return full

    def to_image(self, showers: np.ndarray) -> np.ndarray:
        """(N, V) -> (N, layers, alpha, r) for a regular geometry."""
        return np.asarray(showers).reshape(showers.shape[:-1] + self.image_shape)

    def from_image(self, images: np.ndarray) -> np.ndarray:
        """(N, layers, alpha, r) -> (N, V) for a regular geometry."""
        if tuple(images.shape[-3:]) != self.image_shape:
            raise GeometryError(
                f"image shape {tuple(images.shape[-3:])} does not match {self.image_shape}"
            )
        return np.asarray(images).reshape(images.shape[:-3] + (self.n_voxels,))

    # ------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cylindrical",
            "name": self.name,
            "particle": self.particle,
            "r_edges": [list(e) for e in self.r_edges],
            "n_alpha": list(self.n_alpha),
            "layer_thickness_mm": self.layer_thickness_mm,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CylindricalGeometry:
        d = dict(d)
        kind = d.pop("type", "cylindrical")
        if kind != "cylindrical":
            raise GeometryError(f"not a cylindrical geometry description (type={kind!r})")
        allowed = {"name", "particle", "r_edges", "n_alpha", "layer_thickness_mm"}
        unknown = set(d) - allowed
        if unknown:
            raise GeometryError(f"unknown geometry keys: {sorted(unknown)}")
        return cls(
            name=d["name"],
            r_edges=tuple(tuple(e) for e in d["r_edges"]),
            n_alpha=tuple(d["n_alpha"]),
            particle=d.get("particle", "electron"),
            layer_thickness_mm=d.get("layer_thickness_mm"),
        )

    def same_binning(self, other: CylindricalGeometry) -> bool:
        """True when both geometries put every voxel at the same place."""
        return self.r_edges == other.r_edges and self.n_alpha == other.n_alpha

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CylindricalGeometry):
            return NotImplemented
        return self.same_binning(other) and self.name == other.name

    def __hash__(self) -> int:
        return hash((self.name, self.r_edges, self.n_alpha))

    def __repr__(self) -> str:
        shape = f"{self.image_shape}" if self.is_regular else "irregular"
        return (
            f"CylindricalGeometry(name={self.name!r}, particle={self.particle!r}, "
            f"layers={self.n_layers}, voxels={self.n_voxels}, shape={shape})"
        )
