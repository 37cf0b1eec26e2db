"""Material constants and the homogenised sampling medium of GFlash.

Values follow docs/simulation.md, 'The parametrisation' (Materials and Medium):
radiation lengths from the Tsai formula as Geant4 computes them, Geant4 NIST densities,
and the Grindhammer-Peters critical energy with the radiation length in g/cm^2 (never the
millimetre-based variant of Geant4, which is a unit slip).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "E_SCALE_MEV",
    "LAR",
    "Material",
    "PB",
    "SI",
    "SamplingMedium",
    "W",
    "critical_energy_mev",
]

#: Multiple-scattering energy scale E_s (MeV) of the Moliere radius.
E_SCALE_MEV = 21.2


def critical_energy_mev(x0_g_cm2: float, z: float, a: float) -> float:
    """Dovzhenko-Pomanskii critical energy E_c = 2.66 (X0 Z / A)^1.1 MeV, X0 in g/cm^2."""
    return 2.66 * (x0_g_cm2 * z / a) ** 1.1


@dataclass(frozen=True)
class Material:
    """A single material.

    Attributes:
        name: label.
        z: atomic number (mass-fraction weighted for compounds).
        a: atomic weight (g/mol).
        density: g/cm^3.
        x0_g_cm2: radiation length in g/cm^2.
        dedx_min: minimum ionisation dE/dx in MeV cm^2/g (for the MIP sampling fraction).
    """

    name: str
    z: float
    a: float
    density: float
    x0_g_cm2: float
    dedx_min: float

    @property
    def x0_mm(self) -> float:
        """Radiation length as a length (mm)."""
        return 10.0 * self.x0_g_cm2 / self.density

    @property
    def critical_energy_mev(self) -> float:
        return critical_energy_mev(self.x0_g_cm2, self.z, self.a)

    @property
    def moliere_radius_mm(self) -> float:
        return self.x0_mm * E_SCALE_MEV / self.critical_energy_mev


#: Tungsten (X0 = 0.3504 cm = 6.763 g/cm^2; docs/simulation.md, 'The parametrisation').
W = Material("W", 74.0, 183.84, 19.30, 6.763, 1.145)
#: Silicon (X0 = 9.366 cm = 21.82 g/cm^2).
SI = Material("Si", 14.0, 28.0855, 2.33, 21.82, 1.664)
#: Lead (X0 = 0.5613 cm = 6.370 g/cm^2).
PB = Material("Pb", 82.0, 207.2, 11.35, 6.370, 1.122)
#: Liquid argon (PDG: X0 = 19.55 g/cm^2, dE/dx_min = 1.519 MeV cm^2/g); used by the
#: approximate dataset-1 description only.
LAR = Material("LAr", 18.0, 39.948, 1.396, 19.55, 1.519)


@dataclass(frozen=True)
class SamplingMedium:
    """Homogenised passive + active medium of a sampling calorimeter.

    docs/simulation.md, 'The parametrisation', Medium.

    Args:
        passive: absorber material (1), thickness ``d_passive_mm``.
        active: sensitive material (2), thickness ``d_active_mm``.
    """

    passive: Material
    d_passive_mm: float
    active: Material
    d_active_mm: float

    @property
    def _masses(self) -> tuple[float, float]:
        return (self.passive.density * self.d_passive_mm, self.active.density * self.d_active_mm)

    @property
    def weights(self) -> tuple[float, float]:
        """Mass fractions (passive, active)."""
        m1, m2 = self._masses
        return (m1 / (m1 + m2), m2 / (m1 + m2))

    @property
    def z_eff(self) -> float:
        w1, w2 = self.weights
        return w1 * self.passive.z + w2 * self.active.z

    @property
    def a_eff(self) -> float:
        w1, w2 = self.weights
        return w1 * self.passive.a + w2 * self.active.a

    @property
    def density(self) -> float:
        """Effective density (g/cm^3)."""
        m1, m2 = self._masses
        return (m1 + m2) / (self.d_passive_mm + self.d_active_mm)

    @property
    def x0_g_cm2(self) -> float:
        w1, w2 = self.weights
        return 1.0 / (w1 / self.passive.x0_g_cm2 + w2 / self.active.x0_g_cm2)

    @property
    def x0_mm(self) -> float:
        return 10.0 * self.x0_g_cm2 / self.density

    @property
    def _s(self) -> float:
        # S = sum_i w_i E_c,i / X0_i, both per unit mass thickness (MeV cm^2/g).
        w1, w2 = self.weights
        return (w1 * self.passive.critical_energy_mev / self.passive.x0_g_cm2
                + w2 * self.active.critical_energy_mev / self.active.x0_g_cm2)

    @property
    def critical_energy_mev(self) -> float:
        return self.x0_g_cm2 * self._s

    @property
    def moliere_radius_mm(self) -> float:
        """R_M,eff = (E_s / S) / rho_eff, in mm."""
        return 10.0 * (E_SCALE_MEV / self._s) / self.density

    @property
    def sampling_frequency(self) -> float:
        """F_S = X0_eff / (d1 + d2), both lengths."""
        return self.x0_mm / (self.d_passive_mm + self.d_active_mm)

    @property
    def e_over_mip(self) -> float:
        """e/mip ratio e-hat = 1 / (1 + 0.007 (Z_passive - Z_active))."""
        return 1.0 / (1.0 + 0.007 * (self.passive.z - self.active.z))

    @property
    def mip_fraction(self) -> float:
        """f_mip: share of a minimum-ionising particle's energy loss in the active layer."""
        la = self.d_active_mm * self.active.dedx_min * self.active.density
        lp = self.d_passive_mm * self.passive.dedx_min * self.passive.density
        return la / (la + lp)

    @property
    def visible_fraction(self) -> float:
        """f_vis = e-hat * f_mip: share of the shower energy deposited in the active layers."""
        return self.e_over_mip * self.mip_fraction

    def thickness_x0(self) -> float:
        """Depth of one passive + active pair in radiation lengths of its own materials."""
        return self.d_passive_mm / self.passive.x0_mm + self.d_active_mm / self.active.x0_mm

    def describe(self) -> dict[str, float]:
        """The derived quantities, for documentation and checks."""
        return {
            "Z_eff": self.z_eff, "A_eff": self.a_eff, "rho_eff": self.density,
            "X0_eff_mm": self.x0_mm, "Ec_eff_MeV": self.critical_energy_mev,
            "RM_eff_mm": self.moliere_radius_mm, "F_S": self.sampling_frequency,
            "e_hat": self.e_over_mip, "f_mip": self.mip_fraction,
            "f_vis": self.visible_fraction,
        }

