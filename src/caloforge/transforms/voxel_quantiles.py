"""Voxel-energy calibration: a fitted quantile map from a model's voxels onto the data's.

Generators whose voxels come out of a continuous density (a logit of fractions, a
decoder's Gaussian) cannot make the gap between an empty voxel and the smallest deposit
the data has: the GFlash reference (like any detector whose hits are made of energy
quanta) has almost no voxel below a few MeV, a peak at the energy of one spot and its
multiples, while a flow or a VAE spreads a continuum of sub-MeV voxels over the outer
cells. Those voxels are a small part of the energy but most of what the sparsity, voxel
energy, width and centre features and a classifier see.

The calibration maps each generated voxel energy through the model's own distribution
onto the data's, per cell (layer, radial bin; the angular bins share one map, as the
geometry is symmetric in angle) and per energy bin, including the atom at zero. The
energy bins are bins of ln E_inc (``binning="incident"``) or of the energy of the
voxel's own layer in that shower, with edges per layer (``binning="layer"``): how many
cells a layer's energy reaches depends first on that energy, so maps conditioned on it
keep the link between a layer's energy and its number of hits, and the correlation of
hit counts between layers that the layer energies carry (docs/calibration.md).

    p = p0_model + (1 - p0_model) F_model+(e)          (e > 0; 0 stays 0)
    e' = 0                                             if p < p0_data
    e' = F_data+^-1((p - p0_data) / (1 - p0_data))      otherwise

where p0 are the fractions of empty voxels (below the readout threshold) and F+ the
distributions of the non-empty ones. The map is kept as ``n_quantiles`` pairs of knots
(ln e of the model, ln e of the data) at common levels P_k = P + (1 - P) k / K,
k = 0..K-1, of the joint distributions (the atom at zero included), P = max(p0_model,
p0_data): the knots cover only the part of the model's distribution that the map keeps.
(The first layout kept K quantiles of each F+ at uniform levels; where the data's
cell is far emptier than the model's, as the outer cells of low-energy showers are,
every kept voxel then fell beyond the model's last quantile and received the bottom of
the data's spectrum: docs/calibration.md. Stored maps of that layout still load and map
as they did.) Between knots ln e is interpolated linearly; above the last model knot it
is shifted as at that knot; a voxel below the first model knot is removed when the data
is the emptier side. It is monotone in e within a cell, so the order of a
shower's voxels in a cell is kept and only their scale changes. Afterwards every layer
is rescaled to the energy it had (the layer energies stay the model's own, or the ones a
composition imposed; voxels the rescale pushes below the threshold go and the layer is
rescaled again, upwards); a layer all of whose voxels the map removed keeps its energy
in its largest voxel.

Fitted after the model's last stage, on showers the model generates at the training
showers' incident energies against those training showers: the same construction as
CaloClouds II's calibrations, fitted in voxel space.

Its child ``hit_counts`` (:class:`~caloforge.transforms.layer_hits.LayerHitCountMap`),
fitted after it on the showers it maps, then sets every layer's number of hits given
that layer's energy; maps stored before it have it off.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..geometry import CylindricalGeometry
from .layer_hits import LayerHitCountMap

__all__ = ["BINNINGS", "VoxelQuantileCalibration", "fit_voxel_quantile_calibration"]

#: below this many non-empty voxels a cell's distribution is not estimated: the map
#: passes the model's voxels of that cell through unchanged (before the layer rescale)
_MIN_COUNT = 20

#: what the energy bins can be of (the index is the stored ``binning_code``)
BINNINGS = ("incident", "layer")

#: points per (bin, cell) of the table through which the map is evaluated at generation:
#: ln e spacing (top - bottom quantile) / 511; where the map bends between two points the
#: table cuts the corner, by a few 1e-3 in ln e at most (tests/test_voxel_calibration.py)
_GRID = 512

def _cells(geometry: CylindricalGeometry) -> tuple[Tensor, Tensor, Tensor]:
    """(cell of each voxel (V,), layer of each voxel (V,), layer of each cell (C,))."""
    cell_of_voxel, layer_of_voxel, layer_of_cell = [], [], []
    n_cells = 0
    for layer, (edges, n_alpha) in enumerate(zip(geometry.r_edges, geometry.n_alpha)):
        n_r = len(edges) - 1
        if n_r <= 0:
            continue
        cells = np.arange(n_cells, n_cells + n_r)
        cell_of_voxel.append(np.tile(cells, n_alpha))      # alpha slow, r fast
        layer_of_voxel.append(np.full(n_alpha * n_r, layer))
        layer_of_cell.append(np.full(n_r, layer))
        n_cells += n_r
    return (torch.as_tensor(np.concatenate(cell_of_voxel)),
            torch.as_tensor(np.concatenate(layer_of_voxel)),
            torch.as_tensor(np.concatenate(layer_of_cell)))


class VoxelQuantileCalibration(nn.Module):
    """Quantile map of voxel energies per (cell, energy bin); see the module docstring.

    Build it for a geometry (:meth:`for_geometry`), then fit it
    (:func:`fit_voxel_quantile_calibration`) or load its buffers from a checkpoint.
    ``forward(showers (N, V) MeV, incident_energy (N,) MeV)`` returns calibrated showers.
    Which energy the bins are of is stored with the map (buffer ``binning_code``), so a
    loaded map bins as it was fitted whatever the configuration says.
    """

    def __init__(self, n_bins: int, n_quantiles: int, cell_of_voxel: Tensor,
                 layer_of_voxel: Tensor, layer_of_cell: Tensor, n_layers: int,
                 threshold_mev: float, binning: str = "incident",
                 hit_count_bins: int = 0) -> None:
        super().__init__()
        if n_bins < 1 or n_quantiles < 2:
            raise ConfigError(f"the voxel calibration needs at least 1 energy bin and 2 "
                              f"quantiles, got {n_bins} and {n_quantiles}")
        if binning not in BINNINGS:
            raise ConfigError(f"the voxel calibration bins by one of {', '.join(BINNINGS)}, "
                              f"got {binning!r}")
        if not threshold_mev >= 0:
            raise ConfigError(f"the voxel calibration's readout threshold must be >= 0, "
                              f"got {threshold_mev} MeV")
        n_cells = len(layer_of_cell)
        self.n_bins, self.n_quantiles, self.n_layers = int(n_bins), int(n_quantiles), n_layers
        self.threshold_mev = float(threshold_mev)
        # derived from the geometry, not stored
        self.register_buffer("cell_of_voxel", cell_of_voxel.long(), persistent=False)
        self.register_buffer("layer_of_voxel", layer_of_voxel.long(), persistent=False)
        self.register_buffer("layer_of_cell", layer_of_cell.long(), persistent=False)
        #: 0: bins of ln E_inc (edges ``log_e_edges``); 1: bins of ln E of the voxel's
        #: layer (edges ``layer_log_e_edges``, one row per layer)
        self.register_buffer("binning_code", torch.tensor(BINNINGS.index(binning)))
        self.register_buffer("log_e_edges", torch.zeros(n_bins - 1, dtype=torch.float64))
        self.register_buffer("layer_log_e_edges",
                             torch.zeros(n_layers, n_bins - 1, dtype=torch.float64))
        self.register_buffer("empty_model", torch.zeros(n_bins, n_cells))
        self.register_buffer("empty_data", torch.zeros(n_bins, n_cells))
        self.register_buffer("log_q_model", torch.zeros(n_bins, n_cells, n_quantiles))
        self.register_buffer("log_q_data", torch.zeros(n_bins, n_cells, n_quantiles))
        #: 1: paired knots at common joint levels; 0: the first layout (uniform levels of
        #: each F+), which checkpoints stored before the paired knots hold
        self.register_buffer("knot_layout", torch.tensor(1, dtype=torch.int64))
        sizes = torch.bincount(self.layer_of_voxel, minlength=n_layers)
        #: voxels per layer when every layer has as many (layer sums by reshaping)
        self.layer_size = int(sizes[0]) if bool((sizes == sizes[0]).all()) else None
        #: the hit count of every layer, mapped after the voxels (off until fitted)
        self.hit_counts = LayerHitCountMap(hit_count_bins, self.layer_of_voxel, n_layers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # maps stored before the paired knots have no layout tensor: they are layout 0;
        # maps stored before the layer binning bin by E_inc
        state_dict.setdefault(prefix + "knot_layout", torch.tensor(0, dtype=torch.int64))
        state_dict.setdefault(prefix + "binning_code", torch.tensor(0, dtype=torch.int64))
        state_dict.setdefault(prefix + "layer_log_e_edges",
                              torch.zeros_like(self.layer_log_e_edges))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def binning(self) -> str:
        """What the energy bins are of: ``"incident"`` or ``"layer"`` (module docstring)."""
        return BINNINGS[int(self.binning_code)]

    def energy_bins(self, x: Tensor, incident_energy: Tensor) -> Tensor:
        """The energy bin (N, L) of every shower's layers: thresholded showers (N, V) MeV
        and incident energies (N,) MeV. Under the E_inc binning all layers of a shower
        share its bin; under the layer binning an empty layer is in bin 0."""
        e = torch.as_tensor(incident_energy, dtype=torch.float64, device=x.device).reshape(-1)
        if self.binning == "incident":
            bins = torch.bucketize(torch.log(e), self.log_e_edges.to(x.device))
            return bins[:, None].expand(len(x), self.n_layers)
        log_layer = torch.log(self.layer_sums(x).to(torch.float64))     # -inf: empty layer
        edges = self.layer_log_e_edges.to(x.device)
        return torch.searchsorted(edges, log_layer.T.contiguous()).T

    @property
    def paired_knots(self) -> bool:
        return int(self.knot_layout) == 1

    @classmethod
    def for_geometry(cls, geometry: CylindricalGeometry, *, n_bins: int, n_quantiles: int,
                     threshold_mev: float, binning: str = "incident",
                     hit_count_bins: int = 0) -> VoxelQuantileCalibration:
        cell_of_voxel, layer_of_voxel, layer_of_cell = _cells(geometry)
        return cls(n_bins, n_quantiles, cell_of_voxel, layer_of_voxel, layer_of_cell,
                   geometry.n_layers, threshold_mev, binning, hit_count_bins)

    @property
    def levels(self) -> Tensor:
        """The quantile levels (K,): mid-points of K equal slices of [0, 1]."""
        k = self.n_quantiles
        return (torch.arange(k, dtype=torch.float64) + 0.5) / k

    def layer_sums(self, x: Tensor) -> Tensor:
        """Per-layer sums (N, L) of voxel energies (N, V)."""
        if self.layer_size is not None:      # every layer has as many voxels: a reshape
            return x.reshape(len(x), self.n_layers, self.layer_size).sum(-1)
        out = torch.zeros(len(x), self.n_layers, dtype=x.dtype, device=x.device)
        return out.index_add_(1, self.layer_of_voxel, x)

    def _scale_layers(self, y: Tensor, scale: Tensor) -> Tensor:
        if self.layer_size is not None:
            return (y.reshape(len(y), self.n_layers, self.layer_size)
                    * scale[:, :, None]).reshape(y.shape)
        return y * scale[:, self.layer_of_voxel]

    def map_log_energies(self, lv: Tensor, row: Tensor) -> tuple[Tensor, Tensor]:
        """The map itself, in float64: ln e (M,) of non-empty voxels whose (bin, cell)
        rows (bin * n_cells + cell) are ``row`` (M,) -> (ln e' (M,), kept (M,) bool).

        :meth:`forward` evaluates it through a fine table (:meth:`_tables`); this is the
        definition, used to build the table and by the tests.
        """
        kq = self.n_quantiles
        f64 = torch.float64
        lv = lv.to(f64)
        qm = self.log_q_model.reshape(-1, kq).to(f64)[row]          # (M, K)
        qd = self.log_q_data.reshape(-1, kq).to(f64)[row]
        p0m = self.empty_model.reshape(-1).to(f64)[row]
        p0d = self.empty_data.reshape(-1).to(f64)[row]
        if self.paired_knots:
            return self._map_paired(lv, qm, qd, p0m, p0d)
        j = torch.searchsorted(qm, lv[:, None]).reshape(-1).clamp(1, kq - 1)
        x0, x1 = qm.gather(1, j[:, None] - 1)[:, 0], qm.gather(1, j[:, None])[:, 0]
        w = ((lv - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        f = (j - 0.5 + w) / kq               # the levels are (i + 0.5) / K
        p = p0m + (1.0 - p0m) * f
        keep = p >= p0d
        u2 = (p - p0d) / (1.0 - p0d).clamp_min(1e-12)
        # the data's levels are uniform: the bracketing index follows from u2 directly
        pos_k = (u2 * kq - 0.5).clamp(0.0, kq - 1.0)
        i0 = pos_k.floor().long().clamp(0, kq - 2)
        w2 = pos_k - i0
        out = (qd.gather(1, i0[:, None])[:, 0] * (1.0 - w2)
               + qd.gather(1, i0[:, None] + 1)[:, 0] * w2)
        # above the model's top quantile: shifted as at the top
        out = torch.where(lv > qm[:, -1], out + lv - qm[:, -1], out)
        return out, keep

    @staticmethod
    def _map_paired(lv: Tensor, qm: Tensor, qd: Tensor, p0m: Tensor,
                    p0d: Tensor) -> tuple[Tensor, Tensor]:
        """Layout 1: linear between paired knots (module docstring)."""
        kq = qm.shape[1]
        j = torch.searchsorted(qm.contiguous(), lv[:, None].contiguous()).reshape(-1)
        j = j.clamp(1, kq - 1)
        x0, x1 = qm.gather(1, j[:, None] - 1)[:, 0], qm.gather(1, j[:, None])[:, 0]
        w = ((lv - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        out = qd.gather(1, j[:, None] - 1)[:, 0] * (1.0 - w) + qd.gather(1, j[:, None])[:, 0] * w
        out = torch.where(lv > qm[:, -1], qd[:, -1] + lv - qm[:, -1], out)
        # the data emptier: the first model knot sits at the data's empty fraction
        keep = (p0d <= p0m) | (lv >= qm[:, 0])
        return out, keep

    def _cuts(self, qm: Tensor) -> Tensor:
        """The smallest kept ln e of every row (R,): where p reaches p0_data."""
        kq = self.n_quantiles
        p0m = self.empty_model.reshape(-1).to(torch.float64)
        p0d = self.empty_data.reshape(-1).to(torch.float64)
        if self.paired_knots:
            return torch.where(p0d <= p0m, torch.full_like(qm[:, 0], -torch.inf), qm[:, 0])
        f_cut = (p0d - p0m) / (1.0 - p0m).clamp_min(1e-12)
        levels = self.levels.to(qm.device)
        pos_k = (f_cut * kq - 0.5).clamp(0.0, kq - 1.0)
        i0 = pos_k.floor().long().clamp(0, kq - 2)
        w = pos_k - i0
        cut = (qm.gather(1, i0[:, None])[:, 0] * (1 - w)
               + qm.gather(1, i0[:, None] + 1)[:, 0] * w)
        cut = torch.where(f_cut <= levels[0], torch.full_like(cut, -torch.inf), cut)
        return torch.where(f_cut > levels[-1], torch.full_like(cut, torch.inf), cut)

    def _tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The map of every row on ``_GRID`` points equally spaced in ln e between the
        model's first and last quantile: (lowest ln e (R,), 1 / spacing (R,), the
        smallest kept ln e (R,), ln e' on the grid (R * _GRID,)), float32; rebuilt when
        the buffers change (fit, load, move)."""
        key = tuple((b.data_ptr(), b._version) for b in
                    (self.log_q_model, self.log_q_data, self.empty_model, self.empty_data,
                     self.knot_layout))
        if getattr(self, "_table_key", None) != key:
            kq, g = self.n_quantiles, _GRID
            qm = self.log_q_model.reshape(-1, kq).to(torch.float64)
            n_rows = len(qm)
            lo, hi = qm[:, 0], qm[:, -1]
            step = ((hi - lo) / (g - 1)).clamp_min(1e-9)
            grid = lo[:, None] + step[:, None] * torch.arange(g, dtype=torch.float64,
                                                              device=qm.device)
            rows = torch.arange(n_rows, device=qm.device).repeat_interleave(g)
            grid = grid.reshape(-1)
            # in slices: the definition gathers K quantiles per point
            table = torch.cat([self.map_log_energies(grid[a:a + 65536], rows[a:a + 65536])[0]
                               for a in range(0, len(grid), 65536)])
            # the smallest kept ln e: where p reaches p0_data (the map is monotone)
            cut = self._cuts(qm)
            self._table = (lo.float(), (1.0 / step).float(), cut.float(), table.float())
            self._table_key = key
        return self._table

    @torch.no_grad()
    def map_voxels(self, x: Tensor, incident_energy: Tensor) -> Tensor:
        """The map alone, through the table: voxel energies (N, V) MeV (empty below the
        threshold) -> mapped energies (N, V) float32, before the layers are rescaled."""
        x = x.to(torch.float32)
        lo, inv_step, cut, table = self._tables()
        bins = self.energy_bins(x, incident_energy)
        n, vox = torch.nonzero(x, as_tuple=True)
        row = bins[n, self.layer_of_voxel[vox]] * self.empty_data.shape[1] + self.cell_of_voxel[vox]
        lv = torch.log(x[n, vox])
        lo_r, inv_r = lo[row], inv_step[row]
        t = ((lv - lo_r) * inv_r).clamp(0.0, _GRID - 1.0)
        i = t.floor().long().clamp(max=_GRID - 2)
        flat = row * _GRID + i
        t0, t1 = table[flat], table[flat + 1]
        out = t0 + (t - i) * (t1 - t0)
        top = lo_r + (_GRID - 1) / inv_r
        out = torch.where(lv > top, out + (lv - top), out)
        y = torch.zeros_like(x)
        y[n, vox] = torch.where(lv >= cut[row], torch.exp(out), torch.zeros_like(out))
        return y

    @torch.no_grad()
    def forward(self, showers: Tensor, incident_energy: Tensor) -> Tensor:
        x = showers.to(torch.float32)
        e = torch.as_tensor(incident_energy, dtype=torch.float64, device=x.device).reshape(-1)
        if x.dim() != 2 or len(e) != len(x) or x.shape[1] != len(self.cell_of_voxel):
            raise ConfigError(f"the voxel calibration needs showers (N, "
                              f"{len(self.cell_of_voxel)}) and N incident energies, got "
                              f"{tuple(x.shape)} and {tuple(e.shape)}")
        raw = x
        x = torch.where(x < self.threshold_mev, torch.zeros_like(x), x)
        y = self.map_voxels(x, e)
        before = self.layer_sums(x)
        y = self._settle(y, before)
        lost = (self.layer_sums(y) == 0) & (before > 0)
        if bool(lost.any()):
            y = self._restore_lost_layers(x, y, before, lost)
        if self.hit_counts.is_on:
            # the model's own energies, below the threshold too, rank the voxels a layer
            # short of hits gets back
            edited = self.hit_counts(y, raw, before)
            # only the layers whose hits changed are rescaled: the others keep their
            # voxels bit for bit
            changed = self.layer_sums((edited != y).to(y.dtype)) > 0
            if bool(changed.any()):
                y = self._settle(edited, torch.where(changed, before, self.layer_sums(edited)))
        return y.to(showers.dtype)

    def _settle(self, y: Tensor, before: Tensor) -> Tensor:
        """Rescale every layer to its energy ``before`` (N, L); a layer scaled down may
        leave voxels below the threshold: they go, and the layer is scaled up again (by a
        factor >= 1, so no other voxel falls below)."""
        y = self._rescale(y, before)
        if self.threshold_mev > 0:
            y = torch.where(y < self.threshold_mev, torch.zeros_like(y), y)
            y = self._rescale(y, before)
        return y

    def _rescale(self, y: Tensor, target: Tensor) -> Tensor:
        """Scale every layer of y to the layer energies ``target`` (N, L); a layer of y
        that is empty stays empty."""
        now = self.layer_sums(y)
        return self._scale_layers(y, torch.where(now > 0, target / now.clamp_min(1e-30),
                                                 torch.zeros_like(now)))

    def _restore_lost_layers(self, x: Tensor, y: Tensor, before: Tensor, lost: Tensor) -> Tensor:
        """Give each layer the map emptied its energy back, in its largest voxel."""
        if self.layer_size is not None:
            rows, layers = torch.nonzero(lost, as_tuple=True)
            shape = (len(x), self.n_layers, self.layer_size)
            top = x.reshape(shape)[rows, layers].argmax(1)
            y = y.reshape(shape).clone()
            y[rows, layers, top] = before[rows, layers]
            return y.reshape(len(x), -1)
        for layer in torch.nonzero(lost.any(0)).reshape(-1).tolist():
            cols = torch.nonzero(self.layer_of_voxel == layer).reshape(-1)
            rows = torch.nonzero(lost[:, layer]).reshape(-1)
            top = cols[x[rows][:, cols].argmax(1)]
            y[rows, top] = before[rows, layer]
        return y


def _bins_for_fit(calibration: VoxelQuantileCalibration, gen: np.ndarray, ref: np.ndarray,
                  log_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Set the map's edges and return the bin (N, L) of every layer of every generated and
    reference shower; -1 leaves a layer out of the fit (under the layer binning: an empty
    layer, which has no voxels to map, and a layer quieter than any of the data's)."""
    n_bins, n_layers = calibration.n_bins, calibration.n_layers
    levels = np.arange(1, n_bins) / n_bins
    if calibration.binning == "incident":
        edges = np.quantile(log_e, levels)
        calibration.log_e_edges.copy_(torch.as_tensor(edges))
        bins = np.searchsorted(edges, log_e, side="right")
        both = np.repeat(bins[:, None], n_layers, axis=1)
        return both, both
    sums = [calibration.layer_sums(torch.as_tensor(x)).double().numpy() for x in (gen, ref)]
    out = []
    for layer in range(n_layers):
        ref_e = sums[1][:, layer]
        ref_e = ref_e[ref_e > 0]
        edges = (np.quantile(np.log(ref_e), levels) if len(ref_e)
                 else np.full(n_bins - 1, np.inf))
        calibration.layer_log_e_edges[layer] = torch.as_tensor(edges)
    edges = calibration.layer_log_e_edges.numpy()
    # a layer quieter than any the data has is left out of the fit: there is nothing to
    # match it to, and its faint voxels would lower the cut of the quiet layers the data has
    smallest = [float(np.min(r[r > 0], initial=np.inf)) for r in sums[1].T]
    for layer_sums in sums:
        bins = np.full(layer_sums.shape, -1)
        for layer in range(n_layers):
            e = layer_sums[:, layer]
            fit = e >= smallest[layer]
            bins[fit, layer] = np.searchsorted(edges[layer], np.log(e[fit]), side="left")
        out.append(bins)
    return out[0], out[1]


def _knots(g: np.ndarray, r: np.ndarray, size_g: int, size_r: int,
           steps: np.ndarray, floor: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(p0 model, p0 data, model knots, data knots) of one (bin, cell) from its non-empty
    voxel energies and the number of voxels (empty included) on each side."""
    n_g, n_r = len(g), len(r)
    p0m = 1.0 - n_g / size_g if size_g else 1.0
    p0d = 1.0 - n_r / size_r if size_r else 1.0
    if n_r >= _MIN_COUNT and n_g >= _MIN_COUNT:
        # knots where the map acts: the joint levels above the larger empty fraction,
        # read off each side's distribution of non-empty voxels
        top = max(p0m, p0d)
        joint = top + (1.0 - top) * steps
        qg = np.quantile(np.log(g), np.clip((joint - p0m) / (1.0 - p0m), 0.0, 1.0))
        qr = np.quantile(np.log(r), np.clip((joint - p0d) / (1.0 - p0d), 0.0, 1.0))
        return p0m, p0d, qg, qr
    # too few voxels to estimate a map: pass the model's voxels through
    if n_g >= _MIN_COUNT:
        q = np.quantile(np.log(g), steps)
    elif n_r >= _MIN_COUNT:
        q = np.quantile(np.log(r), steps)
    else:
        q = np.full(len(steps), floor)
    return p0m, p0m, q, q


def fit_voxel_quantile_calibration(
        calibration: VoxelQuantileCalibration, generated: Tensor, reference: Tensor,
        incident_energy: Tensor) -> VoxelQuantileCalibration:
    """Fit ``calibration`` in place from showers (N, V) MeV a model generated at the
    incident energies (N,) MeV of ``reference`` (N, V) MeV, the training showers.

    The energy bins hold equal numbers of showers (of reference showers with energy in
    the layer, under the layer binning); both sides are cut at the readout threshold
    first. Returns ``calibration``.
    """
    gen = np.asarray(torch.as_tensor(generated).cpu(), dtype=np.float32)
    ref = np.asarray(torch.as_tensor(reference).cpu(), dtype=np.float32)
    log_e = np.log(np.asarray(torch.as_tensor(incident_energy, dtype=torch.float64).cpu())
                   .reshape(-1))
    n_bins, k = calibration.n_bins, calibration.n_quantiles
    if gen.shape != ref.shape or gen.ndim != 2 or len(log_e) != len(gen):
        raise ConfigError(f"the voxel calibration needs generated and reference showers of one "
                          f"shape (N, V) and N incident energies; got {gen.shape}, {ref.shape} "
                          f"and {log_e.shape}")
    if gen.shape[1] != len(calibration.cell_of_voxel):
        raise ConfigError(f"showers have {gen.shape[1]} voxels, the calibration's geometry "
                          f"{len(calibration.cell_of_voxel)}")
    if len(gen) < 2 * n_bins:
        raise ConfigError(f"fitting the voxel calibration in {n_bins} energy bins needs at "
                          f"least {2 * n_bins} showers, got {len(gen)}")
    thr = calibration.threshold_mev
    gen[gen < thr] = 0.0
    ref[ref < thr] = 0.0
    bins_g, bins_r = _bins_for_fit(calibration, gen, ref, log_e)
    steps = np.arange(k) / k          # the common joint levels are P + (1 - P) * steps
    cell_of_voxel = calibration.cell_of_voxel.numpy()
    layer_of_cell = calibration.layer_of_cell.numpy()
    floor = np.log(max(thr, 1e-3))
    incident = calibration.binning == "incident"
    for layer in np.unique(layer_of_cell):
        cells = np.nonzero(layer_of_cell == layer)[0]
        cols = np.nonzero(np.isin(cell_of_voxel, cells))[0]
        for b in range(n_bins):
            sel_g, sel_r = bins_g[:, layer] == b, bins_r[:, layer] == b
            if incident and not sel_g.any():   # discrete energies (ds1): the bin takes all
                sel_g = sel_r = np.ones(len(gen), dtype=bool)
            gen_b, ref_b = gen[sel_g][:, cols], ref[sel_r][:, cols]
            for c in cells:
                in_cell = cell_of_voxel[cols] == c
                g, r = gen_b[:, in_cell].ravel(), ref_b[:, in_cell].ravel()
                p0m, p0d, qg, qr = _knots(g[g > 0], r[r > 0], len(g), len(r), steps, floor)
                calibration.empty_model[b, c] = p0m
                calibration.empty_data[b, c] = p0d
                calibration.log_q_model[b, c] = torch.as_tensor(qg)
                calibration.log_q_data[b, c] = torch.as_tensor(qr)
    calibration.knot_layout.fill_(1)
    return calibration
