"""Calo-VQ as one deterministic module for export (docs/export.md).

:class:`CaloVQExportModule` computes what :meth:`CaloVQ.sample` computes, with the token
draws taken from an explicit input::

    showers (N, V) float32 MeV = module(incident_energy (N,) float64 MeV,
                                        token_uniforms (N, seq_len) float32 in [0, 1))

Position t of every sequence is drawn by inverting the cumulative distribution of the
GPT's next-token probabilities at ``token_uniforms[:, t]``, as the torch sampler does.
The token loop is a :class:`~caloforge.export.spec.LoopSpec`: one step per position, on a
key/value cache of fixed size seq_len whose later positions are masked (the exporter
writes it as one ONNX ``Loop``). Every step of the decoding (R digits -> R, decoder,
occupancy cut, Eq. 6, threshold) uses only operators that ONNX has: segment sums and
maxima are per-layer slices, the occupancy cut's interpolation in log E is written out,
and ``searchsorted`` is a count. The fitted statistics become float64 buffers, so the
graph is self-contained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...export.spec import ExportableGenerator, LoopModule, LoopSpec, NoiseInput
from ...sampling.tokens import filter_logits, invert_cdf

__all__ = ["CaloVQExportModule", "calovq_exportable"]


def _f64(x) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().clone().cpu()


class CaloVQExportModule(nn.Module):
    """The fitted constants and the decoding of a loaded
    :class:`~caloforge.pipelines.calovq.CaloVQ` (shares its networks); the token loop
    is :class:`_Prologue`, :class:`_TokenStep` and :class:`_Epilogue` around it."""

    def __init__(self, model) -> None:
        super().__init__()
        cfg, t = model.config, model.transforms
        self.vqvae, self.gpt = model.vqvae.eval(), model.gpt.eval()
        self.is_dense = cfg.is_dense
        self.image_shape = None if cfg.is_dense else tuple(model.geometry.image_shape)
        self.seq_len, self.n_r_tokens = int(cfg.gpt.seq_len), int(cfg.n_r_tokens)
        self.n_codes = int(cfg.autoencoder_config.n_codes)
        self.temperature, self.top_k = float(cfg.temperature), cfg.top_k
        self.threshold = float(cfg.output_threshold_mev)
        g = self.gpt.config
        self.n_layers, self.n_heads, self.d_model = g.n_layers, g.n_heads, g.d_model
        self.total_and_shares = cfg.r_representation == "total_and_shares"

        # incident-energy condition: (pre(E) - shift) / scale
        e = t.energy
        self.energy_log = e.mode.startswith("log")
        self.register_buffer("energy_shift", _f64(e.shift))
        self.register_buffer("energy_scale", _f64(e.scale))

        # R digits -> values: low + level / (levels - 1) * span, then the log mapping
        r = t.r_tokens
        self.n_digits, self.base, self.n_levels = r.n_digits, r.base, r.n_levels
        self.r_log, self.r_log_eps = r.mapping == "log", float(r.log_eps)
        low, high = _f64(r.low), _f64(r.high)
        self.register_buffer("r_low", low)
        self.register_buffer("r_span", torch.where(high > low, high - low, torch.ones_like(high)))
        self.register_buffer("r_powers", torch.tensor(
            [self.base ** k for k in range(self.n_digits - 1, -1, -1)], dtype=torch.long))

        # normalisation groups: one segment per non-empty layer, or the whole shower
        norm = t.normalisation
        if norm.mode == "global":
            self.segments = [(0, int(model.geometry.n_voxels))]
        else:
            offsets, self.segments = 0, []
            for s in norm.layer_sizes:
                if s > 0:
                    self.segments.append((offsets, offsets + int(s)))
                offsets += int(s)

        # occupancy cut: log10 cut interpolated linearly in ln E between knots
        occ = t.occupancy
        self.occupancy = occ is not None and occ.is_fitted
        if self.occupancy:
            self.register_buffer("occ_knots", _f64(occ.log_energy_knots))
            self.register_buffer("occ_log_cut", _f64(occ.log_cut))

    # ------------------------------------------------------------------ pieces
    def condition(self, energy: Tensor) -> Tensor:
        """(N,) float64 MeV -> (N, 1) float32, as ``CaloVQTransforms.condition``."""
        x = torch.log(energy) if self.energy_log else energy
        return ((x - self.energy_shift) / self.energy_scale).reshape(-1, 1).to(torch.float32)

    def _segment_sum(self, x: Tensor) -> Tensor:
        """(N, V) -> (N, n_groups)."""
        return torch.cat([x[:, a:b].sum(-1, keepdim=True) for a, b in self.segments], dim=-1)

    def _expand(self, g: Tensor) -> Tensor:
        """(N, n_groups) -> (N, V): each group's value on its voxels."""
        return torch.cat([g[:, i:i + 1].expand(-1, b - a)
                          for i, (a, b) in enumerate(self.segments)], dim=-1)

    def _group_max(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, a:b].amax(-1, keepdim=True).expand(-1, b - a)
                          for a, b in self.segments], dim=-1)

    def r_values(self, tokens: Tensor, energy: Tensor) -> Tensor:
        """R tokens (N, n_r_tokens) -> R (N, n_groups) float64 MeV."""
        n = tokens.shape[0]
        digits = tokens[:, : self.n_r_tokens].reshape(n, -1, self.n_digits)
        level = (digits * self.r_powers).sum(-1).to(torch.float64)
        z = self.r_low + level / (self.n_levels - 1) * self.r_span
        ratio = (torch.exp(z) - self.r_log_eps).clamp_min(0.0) if self.r_log else z
        if not self.total_and_shares:
            return (ratio * energy[:, None]).clamp_min(0.0)
        total = (ratio[:, :1] * energy[:, None]).clamp_min(0.0)
        shares = ratio[:, 1:].clamp_min(0.0)
        norm = shares.sum(-1, keepdim=True)
        return total * torch.where(norm > 0, shares / norm.clamp_min(1e-30), 0.0)

    def occupancy_cut(self, energy: Tensor) -> Tensor:
        """The fraction cut (N, 1) float64: 10 ** interp(ln E, knots, log10 cuts)."""
        x, xs, ys = torch.log(energy), self.occ_knots, self.occ_log_cut
        if xs.numel() == 1:
            y = ys.expand_as(x)
        else:
            j = (x[:, None] >= xs[None, 1:-1]).sum(-1)
            x0, x1, y0, y1 = xs[j], xs[j + 1], ys[j], ys[j + 1]
            y = (y1 - y0) / (x1 - x0) * (x - x0) + y0
            y = torch.where(x <= xs[0], ys[0], torch.where(x >= xs[-1], ys[-1], y))
        return torch.pow(torch.full_like(y, 10.0), y)[:, None]

    def decode(self, tokens: Tensor, energy: Tensor, cond: Tensor) -> Tensor:
        """Tokens (N, L) -> showers (N, V) float32 MeV, as ``CaloVQ.decode_tokens``."""
        r = self.r_values(tokens, energy)
        codes = tokens[:, self.n_r_tokens:].clamp_max(self.n_codes - 1)
        f = self.vqvae.decode_indices(codes, cond)
        if not self.is_dense:
            f = f.permute(0, 2, 3, 1).reshape(f.shape[0], -1)  # calo-image -> flat
        f = f.to(torch.float64)
        r_vox = self._expand(r)
        if self.occupancy:
            showers = f * r_vox
            share = showers / showers.sum(-1, keepdim=True).clamp_min(1e-30)
            keep = (share >= self.occupancy_cut(energy)) | (share == share.amax(-1, keepdim=True))
            keep = keep | (f >= self._group_max(f))
            f = torch.where(keep, f, 0.0)
            s = self._expand(self._segment_sum(f))
            f = torch.where(s > 0, f / torch.where(s > 0, s, torch.ones_like(s)), 0.0)
        showers = f * r_vox
        if self.threshold > 0:
            showers = torch.where(showers < self.threshold, torch.zeros_like(showers), showers)
        return showers.to(torch.float32)

class _Prologue(nn.Module):
    """(E (N,), U (N, L)) -> context (cond (N, 1), U^T (L, N)), state (tokens (N, L)
    zeros, then keys and values (N, H, L, d/H) zeros for every layer)."""

    def __init__(self, core: CaloVQExportModule) -> None:
        super().__init__()
        self.core = core

    def forward(self, incident_energy: Tensor, token_uniforms: Tensor) -> tuple[Tensor, ...]:
        c = self.core
        cond = c.condition(incident_energy)
        tokens = torch.zeros_like(token_uniforms, dtype=torch.long)
        kv = torch.zeros_like(token_uniforms)[:, None, :, None].expand(
            -1, c.n_heads, -1, c.d_model // c.n_heads)
        return (cond, token_uniforms.t(), tokens) + (kv,) * (2 * c.n_layers)


class _TokenStep(nn.Module):
    """Position i of the token sequence: the GPT's one-position step with a fixed-size
    key/value cache (positions > i masked), then the inverse-CDF draw at U[i].

    (i, cond, U^T, tokens, k_0, v_0, ...) -> (tokens with column i set, caches with
    position i set). Position 0 takes the condition's start vector, later positions the
    embedding of the previous token, as :class:`~caloforge.models.GPT` does.
    """

    def __init__(self, core: CaloVQExportModule) -> None:
        super().__init__()
        self.core = core
        self.register_buffer("positions", torch.arange(core.seq_len), persistent=False)

    def forward(self, i: Tensor, cond: Tensor, uniforms_t: Tensor, tokens: Tensor,
                *kv: Tensor) -> tuple[Tensor, ...]:
        c, gpt = self.core, self.core.gpt
        d, heads = c.d_model, c.n_heads
        i1 = i.reshape(1)
        last = tokens.index_select(1, (i1 - 1).clamp_min(0))[:, 0]
        x = torch.where(i1 == 0, gpt.start(cond, None), F.embedding(last, gpt.tok_emb.weight))
        x = x + gpt.pos_emb.index_select(0, i1)
        here = (self.positions == i1)[None, None, :, None]  # (1, 1, L, 1)
        seen = (self.positions <= i1)[None, None, None, :]  # (1, 1, 1, L)
        new_kv = []
        for layer, blk in enumerate(gpt.blocks):
            a = blk.attn
            y = F.layer_norm(x, (d,), blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
            q, k, v = F.linear(y, a.qkv.weight, a.qkv.bias).view(-1, 3, heads, 1,
                                                                  d // heads).unbind(1)
            k_all = torch.where(here, k, kv[2 * layer])
            v_all = torch.where(here, v, kv[2 * layer + 1])
            new_kv += [k_all, v_all]
            # attention of the new position to positions 0 … i
            w = (q @ k_all.transpose(-1, -2)) * (d // heads) ** -0.5
            w = torch.softmax(w.masked_fill(~seen, float("-inf")), dim=-1)
            y = (w @ v_all).reshape(-1, d)
            x = x + F.linear(y, a.proj.weight, a.proj.bias)
            fc1, act, fc2 = blk.mlp[0], blk.mlp[1], blk.mlp[2]
            y = F.layer_norm(x, (d,), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
            x = x + F.linear(act(F.linear(y, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        x = F.layer_norm(x, (d,), gpt.ln_f.weight, gpt.ln_f.bias, gpt.ln_f.eps)
        logits = F.linear(x, gpt.head.weight, gpt.head.bias)
        probs = torch.softmax(filter_logits(logits.float(), c.temperature, c.top_k), dim=-1)
        u = uniforms_t.index_select(0, i1)[0]
        nxt = invert_cdf(probs, u)
        tokens = torch.where(self.positions[None, :] == i1, nxt[:, None], tokens)
        return (tokens, *new_kv)


class _Epilogue(nn.Module):
    """(E, cond, U^T, tokens, caches...) -> showers (N, V) float32 MeV."""

    def __init__(self, core: CaloVQExportModule) -> None:
        super().__init__()
        self.core = core

    def forward(self, incident_energy: Tensor, cond: Tensor, uniforms_t: Tensor,
                tokens: Tensor, *kv: Tensor) -> Tensor:
        return self.core.decode(tokens, incident_energy, cond)


def calovq_exportable(model) -> ExportableGenerator:
    """The :class:`~caloforge.export.spec.ExportableGenerator` of a loaded Calo-VQ."""
    noise = NoiseInput(
        "token_uniforms", (int(model.config.gpt.seq_len),), "uniform",
        "one U[0,1) number per position of the token sequence [R digits][shower codes]: "
        "the token drawn at position t is the first whose cumulative probability exceeds "
        "u_t (inverse-CDF draw)")

    def reference(incident_energy: Tensor, token_uniforms: Tensor) -> Tensor:
        return model.sample(incident_energy, batch_size=max(1, len(incident_energy)),
                            uniforms=token_uniforms)

    core = CaloVQExportModule(model)
    cache = tuple(f"{kind}{layer}" for layer in range(core.n_layers) for kind in ("key", "value"))
    loop = LoopSpec(n_steps=core.seq_len, prologue=_Prologue(core), step=_TokenStep(core),
                    epilogue=_Epilogue(core), context_names=("condition", "uniforms_t"),
                    state_names=("tokens", *cache), context_batch_axes=(0, 1))
    return ExportableGenerator(
        module=LoopModule(loop), noise=(noise,), geometry=model.geometry, loop=loop,
        pipeline="calovq", reference=reference,
        metadata={"seq_len": str(model.config.gpt.seq_len),
                  "n_r_tokens": str(model.config.n_r_tokens),
                  "temperature": repr(float(model.config.temperature)),
                  "top_k": "none" if model.config.top_k is None else str(model.config.top_k)})
