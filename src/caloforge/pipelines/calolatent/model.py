"""CaloLatent as a :class:`~caloforge.pipelines.ShowerGenerator` (docs/calolatent.md).

Generation (§2, Fig. 1): E_inc -> condition c -> the layer model's sampler gives the
preprocessed layer ratios u -> the latent model's sampler, conditioned on (c, *sampled* u),
gives z (the baseline VAE: z ~ N(0, I)) -> the decoder, conditioned on (c, u), gives the
preprocessed voxel fractions -> inverse preprocessing: fractions of each layer,
renormalised so that every layer holds exactly the layer energy decoded from u -> the
15.15 keV threshold. Showers come out in MeV on the geometry's flat voxel order.

Each half also runs alone (docs/calolatent.md, "Composing stages of two systems"):
:meth:`CaloLatent.sample_layer_energies` gives the layer model's energies in MeV,
:meth:`CaloLatent.sample_given_layer_energies` the VAE + latent model's showers for layer
energies from anywhere (another system's energy model included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...errors import CheckpointError, ConfigError
from ...geometry import CylindricalGeometry
from ...models import build_model
from ...sampling import SDESampler, parse_sde_sampler
from ...transforms import (
    IncidentEnergyScaling,
    LayerEnergyRatios,
    Logit,
    MinMaxScale,
    Standardize,
    VoxelQuantileCalibration,
    transform_from_state,
)
from ..base import check_finite, validate_energies
from ..compose import check_layer_energies
from ..persist import open_model_checkpoint, save_model_checkpoint
from ..voxel_calibration import describe_calibration, load_voxel_calibration
from .config import CaloLatentConfig
from .decoder_noise import DecoderNoise

__all__ = ["CaloLatent", "CaloLatentTransforms", "build_calolatent_models"]

_STATE_KEYS = ("energy", "ratios", "logit", "u_minmax", "u_standardize", "f_minmax",
               "f_standardize")


@dataclass
class CaloLatentTransforms:
    """The fitted preprocessing of a CaloLatent model, stored in its checkpoint.

    Layer energies E (N, L) <-> u: sequential ratios (u_0 = E_tot / (2 E_inc)), then per
    feature min-max -> logit(alpha) -> standardisation. Voxels (N, V) <-> f: fractions of
    their layer, then the same three steps with one set of statistics per voxel. Every
    statistic is fitted on the training split and frozen.
    """

    energy: IncidentEnergyScaling
    ratios: LayerEnergyRatios
    logit: Logit
    u_minmax: MinMaxScale
    u_standardize: Standardize
    f_minmax: MinMaxScale
    f_standardize: Standardize
    #: voxels per layer (a regular geometry); not part of the fitted state
    layer_size: int = 144

    @classmethod
    def new(cls, config: CaloLatentConfig, geometry: CylindricalGeometry) -> CaloLatentTransforms:
        return cls(
            IncidentEnergyScaling("log_minmax", config.e_min_mev, config.e_max_mev),
            LayerEnergyRatios(u0_scale=config.u0_scale),
            Logit(config.logit_alpha),
            MinMaxScale(), Standardize(), MinMaxScale(), Standardize(),
            layer_size=int(geometry.layer_sizes[0]),
        )

    # ----------------------------------------------------------------- fitting
    def _fit_features(self, minmax: MinMaxScale, standardize: Standardize, chunks) -> None:
        """Per-feature min-max, then mean and std of the logit, over chunks of (n, F) float64.

        Chunked, because the voxel features of a training file (N x 6480) would need
        several GB in float64 at once; the results equal the transforms' own ``fit``.
        """
        lo = hi = None
        for x in chunks():
            lo = x.amin(0) if lo is None else torch.minimum(lo, x.amin(0))
            hi = x.amax(0) if hi is None else torch.maximum(hi, x.amax(0))
        span = hi - lo
        minmax.low, minmax.span = lo, torch.where(span > 0, span, torch.ones_like(span))
        # mean, then the spread around it: sum(y^2)/n - mean^2 cancels catastrophically
        # for the many voxels that are constant in the training data, and a spurious
        # std of 1e-4 would scale new data by 1e4
        n, total = 0, 0.0
        for x in chunks():
            y = self.logit(minmax(x))
            n, total = n + len(y), total + y.sum(0)
        mean = total / n
        sq = 0.0
        for x in chunks():
            sq = sq + (self.logit(minmax(x)) - mean).square().sum(0)
        std = (sq / n).sqrt()
        standardize.mean = mean
        # a constant feature keeps std 1 (it maps to 0), as the shared Standardize does
        standardize.std = torch.where(std > 1e-9, std, torch.ones_like(std))

    def fit(self, showers: Tensor, energies: Tensor, chunk: int = 4096) -> CaloLatentTransforms:
        """Fit on training showers (N, V) MeV and incident energies (N,) MeV."""
        n = len(showers)

        def u_chunks():
            for lo in range(0, n, chunk):
                s = showers[lo:lo + chunk].to(torch.float64)
                yield self.ratios(self.layer_energies(s), incident_energy=energies[lo:lo + chunk])

        def f_chunks():
            for lo in range(0, n, chunk):
                yield self.fractions(showers[lo:lo + chunk].to(torch.float64))

        self._fit_features(self.u_minmax, self.u_standardize, u_chunks)
        self._fit_features(self.f_minmax, self.f_standardize, f_chunks)
        return self

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in _STATE_KEYS}

    @classmethod
    def from_state(cls, states: dict[str, Any], layer_size: int) -> CaloLatentTransforms:
        missing = set(_STATE_KEYS) - set(states)
        if missing:
            raise CheckpointError(f"checkpoint lacks the transforms {sorted(missing)}")
        return cls(**{k: transform_from_state(states[k]) for k in _STATE_KEYS},
                   layer_size=layer_size)

    # ----------------------------------------------------------------- pieces
    def condition(self, energies: Tensor) -> Tensor:
        """Incident energies (N,) MeV -> c (N, 1) float32."""
        return self.energy(energies.to(torch.float64)).reshape(-1, 1).to(torch.float32)

    def _by_layer(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1, self.layer_size)

    def layer_energies(self, showers: Tensor) -> Tensor:
        """(N, V) -> (N, L) sums per layer."""
        return self._by_layer(showers).sum(-1)

    def fractions(self, showers: Tensor) -> Tensor:
        """(N, V) -> each voxel's fraction of its layer (N, V); 0 in an empty layer."""
        per_layer = self._by_layer(showers)
        total = per_layer.sum(-1, keepdim=True)
        ok = total > 0
        f = torch.where(ok, per_layer / torch.where(ok, total, torch.ones_like(total)), 0.0)
        return f.reshape(showers.shape)

    def _to_model(self, x: Tensor, minmax: MinMaxScale, standardize: Standardize) -> Tensor:
        # min-max is clipped to [0, 1]: a value outside the training range (validation or
        # new data) would make the logit NaN
        return standardize(self.logit(minmax(x).clamp(0.0, 1.0)))

    def encode_layers(self, layer_energies: Tensor, energies: Tensor) -> Tensor:
        """Layer energies (N, L) and E_inc (N,) MeV -> preprocessed u (N, L) float32."""
        u = self.ratios(layer_energies.to(torch.float64),
                        incident_energy=energies.to(torch.float64))
        return self._to_model(u, self.u_minmax, self.u_standardize).to(torch.float32)

    def decode_layers(self, u_model: Tensor, energies: Tensor) -> Tensor:
        """Preprocessed u (N, L) -> layer energies (N, L) MeV, float64, >= 0, summing to
        E_tot = u0_scale u_0 E_inc."""
        y = u_model.to(torch.float64)
        u = self.u_minmax.inverse(self.logit.inverse(self.u_standardize.inverse(y)))
        return self.ratios.inverse(u, incident_energy=energies.to(torch.float64))

    def encode_voxels(self, showers: Tensor) -> Tensor:
        """Showers (N, V) MeV -> preprocessed fractions (N, V) float32."""
        f = self.fractions(showers.to(torch.float64))
        return self._to_model(f, self.f_minmax, self.f_standardize).to(torch.float32)

    def decode_voxels(self, f_model: Tensor, fallback: bool = True
                      ) -> tuple[Tensor, Tensor | None]:
        """Preprocessed fractions (N, V) -> (fractions in [0, 1], fallback weights > 0).

        The fallback is the same inverse without the logit's clipping (sigmoid scaled to
        the feature's range), positive wherever the range is: it spreads the energy of a
        layer whose every voxel decoded to exactly 0 (see :meth:`showers`). With
        ``fallback=False`` it is not computed (None).
        """
        y = self.f_standardize.inverse(f_model.to(torch.float64))
        f = self.f_minmax.inverse(self.logit.inverse(y))
        if not fallback:
            return f, None
        soft = torch.sigmoid(y) * self.f_minmax.span.to(y) + self.f_minmax.low.to(y)
        return f, soft.clamp_min(0.0)

    def has_empty_layer(self, fractions: Tensor) -> bool:
        """Whether any layer of any shower decoded to all-zero fractions (N, V)."""
        return bool((self._by_layer(fractions).sum(-1) == 0).any())

    def showers(self, fractions: Tensor, layer_energies: Tensor,
                fallback: Tensor | None = None) -> Tensor:
        """Per-layer renormalisation: fractions (N, V) >= 0 and layer energies (N, L) ->
        showers (N, V), every layer summing to its energy.

        A layer whose fractions are all 0 takes ``fallback`` (N, V) instead (a uniform
        layer when None or when that is 0 too), so no layer energy is ever lost.
        """
        f = self._by_layer(fractions.to(torch.float64))
        e = layer_energies.to(torch.float64)[..., None]
        total = f.sum(-1, keepdim=True)
        if fallback is not None:
            f = torch.where(total > 0, f, self._by_layer(fallback.to(torch.float64)))
            total = f.sum(-1, keepdim=True)
        uniform = torch.full_like(f, 1.0 / f.shape[-1])
        f = torch.where(total > 0, f / torch.where(total > 0, total, torch.ones_like(total)),
                        uniform)
        return (f * e).reshape(fractions.shape)


def build_calolatent_models(config: CaloLatentConfig):
    """(layer_model, vae, latent_model or None) freshly initialised from ``config``."""
    layer = build_model("layer_diffusion", config.layer_model)
    vae = build_model("vae_resnet3d", config.vae)
    latent = (build_model("latent_score_mlp", config.latent_model)
              if config.latent_prior == "diffusion" else None)
    return layer, vae, latent


def _randn(shape: tuple[int, ...], generator: torch.Generator | None,
           device: torch.device) -> Tensor:
    # drawn on the generator's device: a seed gives the same showers on every device
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


class CaloLatent:
    """A trained CaloLatent generator: layer model + VAE (+ latent model) + transforms."""

    def __init__(self, config: CaloLatentConfig, geometry: CylindricalGeometry, layer_model,
                 vae, latent_model, transforms: CaloLatentTransforms,
                 decoder_noise: DecoderNoise | None = None,
                 calibration: VoxelQuantileCalibration | None = None) -> None:
        self.config = config
        self.geometry = geometry
        self.layer_model = layer_model.eval()
        self.vae = vae.eval()
        self.latent_model = None if latent_model is None else latent_model.eval()
        self.transforms = transforms
        #: the decoder's fitted Gaussian width (stage ``decoder_noise``), or None
        self.decoder_noise = decoder_noise
        #: sample the decoder's Gaussian (True, where fitted) or decode its mean (the paper)
        self.use_decoder_noise = decoder_noise is not None
        #: the fitted voxel-energy map (stage ``calibration``; kept on the CPU, where the
        #: decoded showers are), or None: set it to None for the model's own voxels
        self.calibration = calibration
        self.path = config.path
        self.device = torch.device("cpu")
        #: the samplers ``sample`` uses unless told otherwise (see :meth:`set_solver`)
        self.layer_sampler: str | SDESampler = config.layer_sampler
        self.latent_sampler: str | SDESampler = config.latent_sampler

    def to(self, device: str | torch.device) -> CaloLatent:
        self.device = torch.device(device)
        for m in (self.layer_model, self.vae, self.latent_model, self.decoder_noise):
            if m is not None:
                m.to(self.device)
        return self

    def _sampler(self, spec: str | SDESampler | None, default: str | SDESampler
                 ) -> SDESampler:
        return parse_sde_sampler(default if spec is None else spec, rho=self.config.ode_rho)

    def set_solver(self, name: str | SDESampler, *, network: str = "both") -> None:
        """Choose the sampler of the ``layer`` or ``latent`` model, or of both (default):
        "em-200" (the paper's), or a probability-flow ODE solver such as "rk4-10"."""
        if network not in ("both", "layer", "latent"):
            raise ConfigError(f"network must be 'both', 'layer' or 'latent', got {network!r}")
        sampler = self._sampler(name, name)  # unknown names raise here
        if network in ("both", "layer"):
            self.layer_sampler = sampler
        if network in ("both", "latent"):
            self.latent_sampler = sampler

    # --------------------------------------------------------------- the three steps
    @torch.inference_mode()
    def sample_layer_features(self, incident_energy: Tensor, *,
                              generator: torch.Generator | None = None,
                              sampler: str | SDESampler | None = None) -> Tensor:
        """The layer model alone: preprocessed u (N, L) on this device."""
        cond = self.transforms.condition(incident_energy).to(self.device)
        s = self._sampler(sampler, self.layer_sampler)
        x = _randn((len(cond), self.config.layer_model.dim), generator, self.device)
        u = s.sample(self.path, self.layer_model, x, generator=generator, cond=cond)
        return check_finite(u, "the CaloLatent layer model's sample")

    @torch.inference_mode()
    def sample_latent(self, incident_energy: Tensor, u_model: Tensor, *,
                      generator: torch.Generator | None = None,
                      sampler: str | SDESampler | None = None) -> Tensor:
        """z (N, latent_dim) given preprocessed u (N, L): the latent model's sampler, or
        N(0, I) for the baseline VAE."""
        c = self.transforms.condition(incident_energy).to(self.device)
        shape = (len(c), self.config.vae.latent_dim)
        x = _randn(shape, generator, self.device)
        if self.latent_model is None:
            return x
        cond = torch.cat([c, u_model.to(self.device, torch.float32)], dim=1)
        s = self._sampler(sampler, self.latent_sampler)
        z = s.sample(self.path, self.latent_model, x, generator=generator, cond=cond)
        return check_finite(z, "the CaloLatent latent model's sample")

    @torch.inference_mode()
    def decode(self, z: Tensor, u_model: Tensor, incident_energy: Tensor, *,
               layer_energies: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Decoder and inverse preprocessing: showers (N, V) MeV, float32, on the CPU.

        Every layer is renormalised to ``layer_energies`` (N, L) MeV when given, else to
        the energies decoded from ``u_model`` (the layer model's own output). With
        ``use_decoder_noise`` the decoder's Gaussian is sampled (one normal draw per voxel
        from ``generator``), else its mean is decoded.
        """
        e = incident_energy.to(torch.float64).cpu()
        u_model = u_model.to(self.device, torch.float32)
        c = self.transforms.condition(e).to(self.device)
        cond = torch.cat([c, u_model], dim=1)
        f_model = self.vae.decode(z.to(self.device, torch.float32), cond)
        if self.use_decoder_noise and self.decoder_noise is not None:
            flat = f_model.reshape(len(e), -1)
            noise = _randn(tuple(flat.shape), generator, self.device)
            f_model = self.decoder_noise(flat, e.to(self.device), noise)
        # before any post-processing: a cut would turn NaN voxels into empty showers
        check_finite(f_model, "the CaloLatent decoder's output")
        if layer_energies is None:
            layer_e = self.transforms.decode_layers(u_model.cpu(), e)
        else:
            layer_e = layer_energies.to(torch.float64).cpu()
        flat = f_model.reshape(len(e), -1).cpu()
        fractions, _ = self.transforms.decode_voxels(flat, fallback=False)
        # the fallback weights matter only for a layer decoded all zero: rarely computed
        soft = (self.transforms.decode_voxels(flat)[1]
                if self.transforms.has_empty_layer(fractions) else None)
        showers = self.transforms.showers(fractions, layer_e, fallback=soft)
        thr = self.config.output_threshold_mev
        if thr > 0:
            showers = torch.where(showers < thr, torch.zeros_like(showers), showers)
        showers = showers.to(torch.float32)
        if self.calibration is not None:
            showers = self.calibration(showers, e)
        return showers

    def sample_layer_energies(self, incident_energy: Tensor, *,
                              generator: torch.Generator | None = None,
                              sampler: str | SDESampler | None = None) -> Tensor:
        """Layer energies (N, L) MeV from the layer model alone, float64 on the CPU."""
        e = validate_energies(incident_energy)
        u = self.sample_layer_features(e, generator=generator, sampler=sampler)
        return self.transforms.decode_layers(u.cpu(), e)

    def sample_given_layer_energies(self, incident_energy: Tensor, layer_energies: Tensor,
                                    *, generator: torch.Generator | None = None,
                                    sampler: str | SDESampler | None = None) -> Tensor:
        """The VAE (+ latent model) alone: showers (N, V) MeV, float32 on the CPU, whose
        layers sum to ``layer_energies`` (N, L) MeV before the output threshold.

        The energies are encoded as this model's u (min-max clipped to its training
        range) for the conditioning only; the renormalisation uses them as given.
        """
        e = validate_energies(incident_energy)
        layers = check_layer_energies(layer_energies, len(e), self.geometry.n_layers)
        u = self.transforms.encode_layers(layers, e)
        z = self.sample_latent(e, u, generator=generator, sampler=sampler)
        return self.decode(z, u, e, layer_energies=layers, generator=generator)

    def sample(self, incident_energy: Tensor, *, batch_size: int = 1000,
               generator: torch.Generator | None = None,
               layer_sampler: str | SDESampler | None = None,
               latent_sampler: str | SDESampler | None = None) -> Tensor:
        """Showers (N, V) in MeV, on the CPU, for incident energies (N,) in MeV.

        ``layer_sampler`` / ``latent_sampler`` override the current samplers (the
        configuration's, or those of :meth:`set_solver`): "em-200", "rk4-10", ...
        """
        e = validate_energies(incident_energy)
        out = []
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size]
            u = self.sample_layer_features(eb, generator=generator, sampler=layer_sampler)
            z = self.sample_latent(eb, u, generator=generator, sampler=latent_sampler)
            out.append(self.decode(z, u, eb, generator=generator))
        if not out:
            return torch.zeros(0, self.geometry.n_voxels)
        return torch.cat(out)

    def nfe(self, layer_sampler: str | SDESampler | None = None,
            latent_sampler: str | SDESampler | None = None) -> dict[str, int]:
        """Network evaluations per batch: layer model, latent model, decoder."""
        latent = (0 if self.latent_model is None
                  else self._sampler(latent_sampler, self.latent_sampler).nfe)
        return {"layer": self._sampler(layer_sampler, self.layer_sampler).nfe,
                "latent": latent, "decoder": 1}

    def describe(self) -> dict[str, Any]:
        """Facts for ``caloforge info``."""
        latent = ("N(0, I)" if self.latent_model is None
                  else self._sampler(None, self.latent_sampler).name)
        return {"prior": "latent diffusion" if self.latent_model is not None else "N(0, I)",
                "latent_dim": self.config.vae.latent_dim, "kl_weight": self.config.kl_weight,
                "layer_sampler": self._sampler(None, self.layer_sampler).name,
                "latent_sampler": latent,
                "decoder": ("Gaussian draw (fitted width)" if self.use_decoder_noise
                            and self.decoder_noise is not None else "mean"),
                "calibration": describe_calibration(self.calibration),
                "parameters": self.n_parameters()}

    # ------------------------------------------------------------ persistence
    def _stage_modules(self) -> dict[str, dict[str, torch.nn.Module]]:
        mods = {"layer": {"layer_model": self.layer_model}, "vae": {"vae": self.vae}}
        if self.latent_model is not None:
            mods["latent"] = {"latent_model": self.latent_model}
        if self.decoder_noise is not None:
            mods["decoder_noise"] = {"decoder_noise": self.decoder_noise}
        if self.calibration is not None:
            mods["calibration"] = {"calibration": self.calibration}
        return mods

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory holding every stage (no optimiser state)."""
        save_model_checkpoint(path, self.config, self._stage_modules(),
                              self.transforms.state(), self.geometry)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             verify: bool = True) -> CaloLatent:
        ckpt, config, geometry = open_model_checkpoint(
            path, "calolatent", verify=verify,
            required=lambda c: ("layer", "vae") + (("latent",) if c.latent_prior == "diffusion"
                                                   else ()))
        layer, vae, latent = build_calolatent_models(config)
        ckpt.load_modules("layer", {"layer_model": layer})
        ckpt.load_modules("vae", {"vae": vae})
        if latent is not None:
            ckpt.load_modules("latent", {"latent_model": latent})
        transforms = CaloLatentTransforms.from_state(ckpt.manifest.get("transforms", {}),
                                                     int(geometry.layer_sizes[0]))
        noise = None
        if "decoder_noise" in ckpt.stages:   # optional: checkpoints before it decode the mean
            noise = DecoderNoise(max(config.decoder_noise_bins, 1), geometry.n_voxels)
            ckpt.load_modules("decoder_noise", {"decoder_noise": noise})
        calibration = load_voxel_calibration(ckpt, config, geometry)
        return cls(config, geometry, layer, vae, latent, transforms, noise,
                   calibration).to(map_location)

    def n_parameters(self) -> dict[str, int]:
        """Parameters per network (the VAE's encoder included: it is part of the stage)."""
        def count(m):
            return 0 if m is None else sum(p.numel() for p in m.parameters())

        return {"layer": count(self.layer_model), "vae": count(self.vae),
                "latent": count(self.latent_model)}

    def __repr__(self) -> str:
        p = self.n_parameters()
        prior = "latent diffusion" if self.latent_model is not None else "N(0, I)"
        return (f"CaloLatent(geometry={self.geometry.name!r}, prior={prior}, "
                f"latent={self.config.vae.latent_dim}, layer={p['layer']:,} params, "
                f"vae={p['vae']:,} params, latent={p['latent']:,} params)")
