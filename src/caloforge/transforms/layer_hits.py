"""Hit-count map: each layer's number of hits, mapped given that layer's energy.

The voxel quantile map (:mod:`.voxel_quantiles`) gives every cell the data's spectrum and
fraction of empty voxels in each bin of the layer energy, so the mean number of hits of a
layer comes out right. How that number spreads from shower to shower does not: in the
data a layer's hits are its energy in quanta (GFlash spots, a detector's minimum-ionising
deposits), so at a given layer energy their number hardly varies, while a generative
model's faint voxels come and go independently of it. The 45 sparsities together then
separate the showers although each alone agrees (docs/calibration.md, 'Hits per layer').

This map fixes the count as CaloClouds II's calibration fixes its number of points: per
layer and per bin of the layer's energy (edges at quantiles of the data's), the model's
count n goes through the model's distribution of counts onto the data's,

    n' = F_data^-1( (F_model(n - 1) + F_model(n)) / 2 ),

stored as a table n -> n' per (bin, layer) (counts the model never had in the fit take the
level of the nearest ones it had). A layer with hits keeps at least one, an empty layer
stays empty. The shower is then edited as little as possible: with too many hits, the
faintest go; with too few, the voxels the model put most energy in among those that are
empty now come back, each as faint as the layer's faintest hit. The caller rescales every
layer to its energy afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["LayerHitCountMap", "fit_layer_hit_count_map"]

#: below this many layers (of showers in a bin) on either side, the bin maps n -> n
_MIN_LAYERS = 50


class LayerHitCountMap(nn.Module):
    """Map of hit counts per (layer-energy bin, layer); see the module docstring.

    ``n_bins = 0`` builds a map that is off (what maps stored before it load as).
    ``forward(mapped (N, V), raw (N, V), layer_energy (N, L))`` returns ``mapped`` with
    every layer's number of non-zero voxels mapped; ``raw`` ranks the voxels that may
    come back.
    """

    def __init__(self, n_bins: int, layer_of_voxel: Tensor, n_layers: int) -> None:
        super().__init__()
        if n_bins < 0:
            raise ConfigError(f"the hit-count map needs >= 0 energy bins, got {n_bins}")
        sizes = torch.bincount(layer_of_voxel.long(), minlength=n_layers)
        self.n_bins, self.n_layers = int(n_bins), int(n_layers)
        self.max_hits = int(sizes.max())
        self.register_buffer("layer_of_voxel", layer_of_voxel.long(), persistent=False)
        #: voxels per layer when every layer has as many (else the slow path per layer)
        self.layer_size = self.max_hits if bool((sizes == sizes[0]).all()) else None
        self.register_buffer("enabled", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("log_e_edges",
                             torch.zeros(n_layers, max(n_bins - 1, 0), dtype=torch.float64))
        identity = torch.arange(self.max_hits + 1, dtype=torch.int16)
        self.register_buffer("table", identity.expand(n_bins, n_layers, -1).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # maps stored before the hit-count map existed have none: they load with it off
        state_dict.setdefault(prefix + "enabled", torch.tensor(0, dtype=torch.int64))
        state_dict.setdefault(prefix + "log_e_edges", self.log_e_edges.clone())
        state_dict.setdefault(prefix + "table", self.table.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def is_on(self) -> bool:
        return bool(int(self.enabled)) and self.n_bins > 0

    def bins(self, layer_energy: Tensor) -> Tensor:
        """The bin (N, L) of every layer from its energy (N, L) MeV; empty layers bin 0."""
        log_e = torch.log(layer_energy.to(torch.float64))
        edges = self.log_e_edges.to(layer_energy.device)
        return torch.searchsorted(edges, log_e.T.contiguous()).T

    def target_counts(self, counts: Tensor, layer_energy: Tensor) -> Tensor:
        """The mapped count (N, L) of every layer: counts (N, L), energies (N, L) MeV."""
        b = self.bins(layer_energy)
        layer = torch.arange(self.n_layers, device=counts.device).expand_as(counts)
        flat = (b * self.n_layers + layer) * (self.max_hits + 1) + counts.long()
        return self.table.reshape(-1)[flat].long()

    @torch.no_grad()
    def forward(self, mapped: Tensor, raw: Tensor, layer_energy: Tensor) -> Tensor:
        if not self.is_on:
            return mapped
        if self.layer_size is None:
            return self._per_layer(mapped, raw, layer_energy)
        shape = (len(mapped), self.n_layers, self.layer_size)
        y, x = mapped.reshape(shape), raw.reshape(shape)
        hit = y > 0
        n = hit.sum(-1)
        change = self.target_counts(n, layer_energy) - n               # (N, L)
        return self._edit(y, x, hit, change).reshape(mapped.shape)

    @staticmethod
    def _edit(y: Tensor, x: Tensor, hit: Tensor, change: Tensor) -> Tensor:
        """Drop the ``-change`` faintest hits or revive the ``change`` strongest raw
        voxels among the empty ones, in every row of (..., S)."""
        out = y.clone()
        drop = change < 0
        if bool(drop.any()):
            key = torch.where(hit, y, torch.full_like(y, torch.inf))
            rank = _ranks(key, descending=False)
            out = torch.where(hit & (rank < (-change)[..., None]), torch.zeros_like(out), out)
        add = change > 0
        if bool(add.any()):
            spare = ~hit & (x > 0)
            key = torch.where(spare, x, torch.full_like(x, -torch.inf))
            rank = _ranks(key, descending=True)
            faint = torch.where(hit, y, torch.full_like(y, torch.inf)).amin(-1, keepdim=True)
            revive = spare & (rank < change.clamp_min(0)[..., None]) & torch.isfinite(faint)
            out = torch.where(revive, faint.expand_as(out), out)
        return out

    def _per_layer(self, mapped: Tensor, raw: Tensor, layer_energy: Tensor) -> Tensor:
        out = mapped.clone()
        hit_all = mapped > 0
        counts = torch.zeros(len(mapped), self.n_layers, dtype=torch.long, device=mapped.device)
        counts.index_add_(1, self.layer_of_voxel, hit_all.long())
        change = self.target_counts(counts, layer_energy) - counts
        for layer in range(self.n_layers):
            cols = torch.nonzero(self.layer_of_voxel == layer).reshape(-1)
            if len(cols):
                out[:, cols] = self._edit(mapped[:, cols], raw[:, cols], hit_all[:, cols],
                                          change[:, layer])
        return out


def _ranks(key: Tensor, descending: bool) -> Tensor:
    """The rank of every element of the last axis when sorted (ties by position)."""
    order = torch.argsort(key, dim=-1, descending=descending, stable=True)
    rank = torch.empty_like(order)
    positions = torch.arange(key.shape[-1], device=key.device).expand_as(order)
    return rank.scatter_(-1, order, positions)


def _count_table(model: np.ndarray, data: np.ndarray, size: int) -> np.ndarray:
    """n -> n' (size + 1,) from the counts of one (bin, layer) on each side."""
    k = np.arange(size + 1)
    h_m = np.bincount(model, minlength=size + 1).astype(np.float64)
    h_d = np.bincount(data, minlength=size + 1).astype(np.float64)
    cdf_m, cdf_d = np.cumsum(h_m) / h_m.sum(), np.cumsum(h_d) / h_d.sum()
    seen = h_m > 0
    mid = (cdf_m - h_m / (2 * h_m.sum()))[seen]
    # counts the model never had take the level of their neighbours
    level = np.interp(k, k[seen], mid)
    out = np.searchsorted(cdf_d, level - 1e-12, side="left").clip(0, size)
    out[0] = 0
    out[1:] = np.maximum(out[1:], 1)
    return out


def fit_layer_hit_count_map(hits: LayerHitCountMap, generated: Tensor,
                            reference: Tensor) -> LayerHitCountMap:
    """Fit ``hits`` in place from showers (N, V) MeV a model generated (after the
    voxel map, which sets which voxels are hits) and the reference showers (M, V) MeV,
    both already cut at the readout threshold; returns it, switched on."""
    if hits.n_bins == 0:
        return hits
    gen = torch.as_tensor(generated).to(torch.float64)
    ref = torch.as_tensor(reference).to(torch.float64)
    n_voxels = len(hits.layer_of_voxel)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != n_voxels or ref.shape[1] != n_voxels:
        raise ConfigError(f"the hit-count map needs showers (N, {n_voxels}), got "
                          f"{tuple(gen.shape)} and {tuple(ref.shape)}")
    sums, counts = [], []
    for x in (gen, ref):
        e = torch.zeros(len(x), hits.n_layers, dtype=torch.float64)
        c = torch.zeros(len(x), hits.n_layers, dtype=torch.long)
        sums.append(e.index_add_(1, hits.layer_of_voxel, x).numpy())
        counts.append(c.index_add_(1, hits.layer_of_voxel, (x > 0).long()).numpy())
    levels = np.arange(1, hits.n_bins) / hits.n_bins
    table = hits.table.numpy().copy()
    for layer in range(hits.n_layers):
        e_ref = sums[1][:, layer]
        if not (e_ref > 0).any():
            continue
        edges = np.quantile(np.log(e_ref[e_ref > 0]), levels)
        hits.log_e_edges[layer] = torch.as_tensor(edges)
        # layers quieter than any of the data's are left out, as in the voxel map
        floor = e_ref[e_ref > 0].min()
        sides = []
        for e, c in zip(sums, counts):
            keep = e[:, layer] >= floor
            b = np.searchsorted(edges, np.log(e[keep, layer]), side="left")
            sides.append((b, c[keep, layer]))
        for b in range(hits.n_bins):
            m, d = (c[bb == b] for bb, c in sides)
            if len(m) >= _MIN_LAYERS and len(d) >= _MIN_LAYERS:
                table[b, layer] = _count_table(m, d, hits.max_hits)
    hits.table.copy_(torch.as_tensor(table))
    hits.enabled.fill_(1)
    return hits
