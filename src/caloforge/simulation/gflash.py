"""The GFlash parametrisation of electromagnetic showers in a sampling calorimeter.

Grindhammer & Peters (hep-ex/0001020) with the recommended ([REC]) readings of
docs/simulation.md, 'The parametrisation': critical energy from X0 in g/cm^2, R_M,eff =
(E_s/S)/rho_eff, t6 = 0.0421, sampling smear sigma/E = c_S/sqrt(E/GeV), the sampling spot
count N_spot = (n1/c_S) (E/GeV)^n2, log/sigma guards, no EnergyStop, tau <= 10 and
0 <= p <= 1. All functions work on many showers at once: arrays have a leading shower
axis N and, for per-step quantities, a step axis K.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import gammainc

from ..errors import CaloforgeError
from .materials import SamplingMedium

__all__ = [
    "MAX_ENERGY_MEV",
    "GFlashParameters",
    "ShapeDraws",
    "StepDeposits",
    "draw_shapes",
    "longitudinal_means",
    "radial_parameters",
    "simulate_steps",
]

#: Mean photon conversion depth in radiation lengths (9/7 X0).
PHOTON_CONVERSION_X0 = 9.0 / 7.0
#: Lowest y = E/E_c accepted: below it the fluctuation widths change sign
#: (docs/simulation.md, 'The parametrisation', Longitudinal).
MIN_Y = 10.0
#: Highest incident energy accepted (10 TeV, in MeV). The parametrisation was fitted to
#: showers up to a few hundred GeV and is used here up to the CaloChallenge's 4 TeV;
#: beyond 10 TeV its shower maximum runs out of the calorimeters and the spot count
#: (~E^0.9) makes memory grow without bound, so such requests are refused up front.
MAX_ENERGY_MEV = 1.0e7


@dataclass(frozen=True)
class GFlashParameters:
    """The free parameters of the simulator (see docs/simulation.md for the tuning).

    Attributes:
        sampling_term: c_S, the stochastic term; sigma/E = c_S / sqrt(E/GeV).
        spot_n1: n1 of the sampling spot count N_spot = (n1/c_S) (E/GeV)^n2.
        spot_n2: n2 of the same.
        t6: the ln E slope of k4 in R_T; 0.0421 per the paper ports, 0.0412 in Geant4.
    """

    sampling_term: float = 0.11
    spot_n1: float = 10.3
    spot_n2: float = 0.959
    t6: float = 0.0421

    def __post_init__(self) -> None:
        if not self.sampling_term > 0:
            raise CaloforgeError("GFlash sampling_term must be positive")
        if not self.spot_n1 > 0:
            raise CaloforgeError("GFlash spot_n1 must be positive")

    @classmethod
    def geant4_literal(cls) -> GFlashParameters:
        """Defaults with Geant4's header value t6 = 0.0412 (a probable transposed digit)."""
        return replace(cls(), t6=0.0412)

    def n_spots(self, energy_mev: np.ndarray) -> np.ndarray:
        """Spot budget per shower, shape like ``energy_mev``."""
        return self.spot_n1 / self.sampling_term * (np.asarray(energy_mev) / 1e3) ** self.spot_n2


def longitudinal_means(ln_y: np.ndarray, medium: SamplingMedium) -> dict[str, np.ndarray]:
    """Means, widths and correlation of (ln T, ln alpha) in the sampling medium.

    Geant4's sampling tuning (docs/simulation.md, 'The parametrisation', Longitudinal).

    Args:
        ln_y: ln(E / E_c,eff), shape (N,).

    Returns:
        dict with ``ln_t``, ``ln_a`` (means), ``s_t``, ``s_a`` (widths, <= 0.5) and ``rho``,
        each of shape (N,).
    """
    z, fs, eh = medium.z_eff, medium.sampling_frequency, medium.e_over_mip
    # Guards (docs/simulation.md, 'The parametrisation', Longitudinal): log arguments
    # >= 0.1, widths <= 0.5.
    t_hom = np.maximum(-0.812 + ln_y, 0.1)
    a_hom = np.maximum(0.81 + (0.458 + 2.26 / z) * ln_y, 0.1)
    t_sam = np.maximum(t_hom - 0.55 / fs - 0.69 * (1.0 - eh), 0.1)
    a_sam = np.maximum(a_hom - 0.476 / fs, 0.1)
    s_t = np.minimum(1.0 / (-2.5 + 1.25 * ln_y), 0.5)
    s_a = np.minimum(1.0 / (-0.82 + 0.79 * ln_y), 0.5)
    rho = 0.784 - 0.023 * ln_y
    return {"ln_t": np.log(t_sam), "ln_a": np.log(a_sam), "s_t": s_t, "s_a": s_a, "rho": rho}


@dataclass
class ShapeDraws:
    """Per-shower longitudinal shape (all arrays of shape (N,)).

    ``t_max`` is the depth of maximum T (X0), ``alpha``/``beta`` the gamma-profile
    parameters, ``alpha_mean`` = exp<ln alpha> (used by the shower age), ``alpha_s``/
    ``beta_s`` the spot profile and ``n_spot`` the spot budget.
    """

    t_max: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    alpha_mean: np.ndarray
    alpha_s: np.ndarray
    beta_s: np.ndarray
    n_spot: np.ndarray


def draw_shapes(rng: np.random.Generator, energy_mev: np.ndarray, medium: SamplingMedium,
                params: GFlashParameters) -> ShapeDraws:
    """Draw correlated (T, alpha) per shower and the spot profile.

    docs/simulation.md, 'The parametrisation', Longitudinal and Spots.
    """
    energy_mev = np.asarray(energy_mev, dtype=np.float64)
    y = energy_mev / medium.critical_energy_mev
    if np.any(y < MIN_Y):
        raise CaloforgeError(
            f"GFlash needs E >= {MIN_Y:g} E_c = {MIN_Y * medium.critical_energy_mev:.3g} MeV "
            f"in this medium; got {energy_mev.min():.4g} MeV"
        )
    m = longitudinal_means(np.log(y), medium)
    n = len(energy_mev)
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    cp = np.sqrt((1.0 + m["rho"]) / 2.0)
    cm = np.sqrt((1.0 - m["rho"]) / 2.0)
    t_max = np.exp(m["ln_t"] + m["s_t"] * (cp * z1 + cm * z2))
    alpha = np.exp(m["ln_a"] + m["s_a"] * (cp * z1 - cm * z2))
    # Guards of Geant4's sampling class: T >= 1, alpha >= 1.1.
    t_max = np.maximum(t_max, 1.0)
    alpha = np.maximum(alpha, 1.1)
    z = medium.z_eff
    t_s = t_max * (0.813 + 0.0019 * z)
    alpha_s = alpha * (0.844 + 0.0026 * z)
    return ShapeDraws(
        t_max=t_max, alpha=alpha, beta=(alpha - 1.0) / t_max, alpha_mean=np.exp(m["ln_a"]),
        alpha_s=alpha_s, beta_s=(alpha_s - 1.0) / t_s, n_spot=params.n_spots(energy_mev),
    )


def radial_parameters(tau: np.ndarray, ln_e_gev: np.ndarray, medium: SamplingMedium,
                      params: GFlashParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R_C, R_T (Moliere units) and p of the two-component radial profile.

    docs/simulation.md, 'The parametrisation', Radial profile.

    Args:
        tau: shower age, any shape (clamped to <= 10 here).
        ln_e_gev: ln(E/GeV), broadcastable to ``tau``.
    """
    z, fs, eh = medium.z_eff, medium.sampling_frequency, medium.e_over_mip
    tau = np.minimum(tau, 10.0)
    r_c = (0.0251 + 0.00319 * ln_e_gev) + (0.1162 - 0.000381 * z) * tau
    k1 = 0.659 - 0.00309 * z
    k2, k3 = 0.645, -2.59
    k4 = 0.3585 + params.t6 * ln_e_gev
    r_t = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    x = (0.401 + 0.00187 * z - tau) / (1.313 - 0.0686 * ln_e_gev)
    p = (2.632 - 0.00094 * z) * np.exp(x - np.exp(x))
    e_tau = np.exp(-tau)
    r_c = r_c - 0.0203 * (1.0 - eh) + 0.0397 / fs * e_tau
    r_t = r_t - 0.14 * (1.0 - eh) - 0.495 / fs * e_tau
    p = p + (1.0 - eh) * (0.348 - 0.642 / fs * np.exp(-((tau - 1.0) ** 2)))
    # Radii stay positive (they do for the tabulated media; the floor only protects
    # extrapolations) and the core probability is a probability.
    return np.maximum(r_c, 1e-3), np.maximum(r_t, 1e-3), np.clip(p, 0.0, 1.0)


@dataclass
class StepDeposits:
    """Energy deposited per longitudinal step, before the visible-fraction scaling.

    Attributes:
        energy: smeared step energies (MeV), shape (N, K).
        energy_mean: step energies before the sampling smear (MeV), shape (N, K).
        n_spots: spots per step (0 where no energy is deposited), shape (N, K), int64.
        r_core_mm, r_tail_mm: R_C and R_T of each step (mm), shape (N, K).
        p_core: core probability of each step, shape (N, K).
        leakage: energy beyond the last step before smearing (MeV), shape (N,).
        start_x0: conversion depth (X0) of photons, 0 for electrons, shape (N,).
        shapes: the per-shower draws.
    """

    energy: np.ndarray
    energy_mean: np.ndarray
    n_spots: np.ndarray
    r_core_mm: np.ndarray
    r_tail_mm: np.ndarray
    p_core: np.ndarray
    leakage: np.ndarray
    start_x0: np.ndarray
    shapes: ShapeDraws


def simulate_steps(rng: np.random.Generator, energy_mev: np.ndarray, medium: SamplingMedium,
                   step_edges_x0: np.ndarray, params: GFlashParameters, *,
                   photon: bool = False) -> StepDeposits:
    """Longitudinal integration, sampling smear and per-step radial profile.

    Args:
        rng: random generator (consumed in a fixed order: shapes, conversion depth, smear).
        energy_mev: incident energies (MeV), shape (N,).
        medium: the homogenised medium the shower develops in.
        step_edges_x0: increasing step edges along the axis (X0), shape (K + 1,),
            starting at the front face (0).
        photon: start each shower at an exponential conversion depth of mean 9/7 X0.
    """
    energy_mev = np.asarray(energy_mev, dtype=np.float64)
    n = len(energy_mev)
    shapes = draw_shapes(rng, energy_mev, medium, params)
    start = rng.exponential(PHOTON_CONVERSION_X0, n) if photon else np.zeros(n)

    edges = np.asarray(step_edges_x0, dtype=np.float64)
    t_rel = np.maximum(edges[None, :] - start[:, None], 0.0)  # (N, K+1)
    cdf = gammainc(shapes.alpha[:, None], shapes.beta[:, None] * t_rel)
    e_mean = energy_mev[:, None] * np.diff(cdf, axis=1)
    leakage = energy_mev * (1.0 - cdf[:, -1])

    # Sampling smear [REC]: Gamma(shape = dE / (c_S^2 GeV), scale = c_S^2 GeV) keeps the
    # mean and gives variance c_S^2 GeV dE, i.e. sigma/E = c_S/sqrt(E/GeV) in total.
    scale = params.sampling_term ** 2 * 1e3
    e_smear = rng.gamma(e_mean / scale, scale)

    cdf_s = gammainc(shapes.alpha_s[:, None], shapes.beta_s[:, None] * t_rel)
    n_spots = np.floor(shapes.n_spot[:, None] * np.diff(cdf_s, axis=1)).astype(np.int64)
    n_spots = np.where(e_mean > 0.0, np.maximum(n_spots, 1), 0)

    # Shower age at mid-step relative to the individual centre of gravity
    # (docs/simulation.md, 'The parametrisation', Radial profile).
    t_mid = np.maximum(0.5 * (edges[1:] + edges[:-1])[None, :] - start[:, None], 0.0)
    t_cog = shapes.t_max * shapes.alpha / (shapes.alpha - 1.0)
    a_bar = np.maximum(shapes.alpha_mean, 1.1)
    tau = t_mid / t_cog[:, None] * (a_bar / (a_bar - 1.0))[:, None]
    ln_e = np.log(energy_mev / 1e3)[:, None]
    r_c, r_t, p = radial_parameters(tau, ln_e, medium, params)
    rm = medium.moliere_radius_mm
    return StepDeposits(
        energy=e_smear, energy_mean=e_mean, n_spots=n_spots, r_core_mm=r_c * rm,
        r_tail_mm=r_t * rm, p_core=p, leakage=leakage, start_x0=start, shapes=shapes,
    )
