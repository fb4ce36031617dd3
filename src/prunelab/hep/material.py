"""The calorimeter's absorber/active stack as one effective medium.

Every derived number comes from the PDG's tables of atomic and nuclear
properties (pdg.lbl.gov/AtomicNuclearProperties) for lead and liquid argon and
the standard mixture rules used by Grindhammer & Peters (hep-ex/0001020, §2)
and Geant4's GFlash:

* mass fractions ``w_j`` from thickness x density of each material per period;
* ``1/X0 = sum_j w_j / X0_j`` (in g/cm^2), and the same rule for the nuclear
  interaction length;
* critical energy ``Ec = X0 * sum_j w_j Ec_j / X0_j`` (Grindhammer & Peters
  eq. 16), Molière radius ``R_M = X0 * Es / Ec`` with ``Es = 21.2052 MeV``;
* effective atomic number ``Z_eff = sum_j w_j Z_j`` (GFlash's ``GetEffZ``);
* the mean free path of the soft photons that carry a shower's energy sideways:
  photons near the minimum of the attenuation coefficient (a few MeV) travel
  farthest, ``1/lambda = rho sum_j w_j (mu/rho)_j`` at 4 MeV;
* the sampling fraction for minimum-ionising particles ``f_samp`` (active
  layer's share of a MIP's loss per period) and the sampling stochastic term
  ``a = 2.7 % sqrt(d / f_samp)`` (d: active-layer thickness in mm), the
  empirical rule for sampling fluctuations of electromagnetic showers
  (R. Wigmans, *Calorimetry*, Oxford 2000; quoted in the PDG review
  "Calorimetry"). It gives 10.8 %/sqrt(E/GeV) here, beside the 11 % that
  GFlash's sampling tuning (``GFlashSamplingShowerTuning::SamplingResolution``)
  uses by default.

For 2 mm Pb + 4 mm LAr this gives X0 = 15.6 mm, lambda_int = 374 mm,
R_M = 35.5 mm and Ec = 9.3 MeV (tests pin them), a soft-photon mean free path
of 53.4 mm (3.4 X0), f_samp = 0.25 and a = 10.8 %.
"""

from __future__ import annotations

from dataclasses import dataclass

ES_MEV = 21.2052  # scale energy sqrt(4 pi / alpha) m_e c^2 (PDG, "Passage of particles through matter")


@dataclass(frozen=True)
class Material:
    """One pure material; numbers from the PDG table of its properties."""

    name: str
    Z: float
    A: float  # g/mol
    density: float  # g/cm^3
    X0: float  # radiation length, g/cm^2
    lambda_int: float  # nuclear interaction length, g/cm^2
    Ec: float  # critical energy for electrons, MeV
    dedx_min: float  # minimum ionisation, MeV cm^2/g
    mu_photon: float = 0.0  # photon mass attenuation coefficient near its minimum (4 MeV), cm^2/g


# mu_photon at 4 MeV: lead from NIST XCOM (total with coherent scattering, 0.0420 cm^2/g, its minimum
# lies at 3.5-4 MeV); argon from Klein-Nishina Compton scattering (0.0260 cm^2/g) plus pair
# production scaled from lead's by Z^2/A (0.0046 cm^2/g).
LEAD = Material("Pb", Z=82, A=207.2, density=11.35, X0=6.37, lambda_int=199.6, Ec=7.43, dedx_min=1.122,
                mu_photon=0.0420)
LIQUID_ARGON = Material("LAr", Z=18, A=39.948, density=1.396, X0=19.55, lambda_int=119.7, Ec=32.84, dedx_min=1.519,
                        mu_photon=0.0306)

# A charged pion of a few GeV to 100 GeV is not at minimum ionisation: the
# relativistic rise adds roughly 10 % in dense absorbers (PDG, Fig. 34.2 of the
# "Passage of particles through matter" review, lead and argon curves).
RELATIVISTIC_RISE = 1.10


@dataclass(frozen=True)
class Medium:
    """An effective medium: what shower parameterisations take as input (lengths in mm)."""

    name: str
    Z: float
    A: float
    density: float  # g/cm^3, averaged over one period
    X0_mm: float
    lambda_int_mm: float
    Ec_MeV: float
    moliere_mm: float
    mass_fractions: tuple[float, ...]
    period_mm: float
    mip_MeV_per_period: float  # energy a minimum-ionising-like track leaves per period
    photon_mfp_mm: float = 0.0  # mean free path of few-MeV photons (the attenuation minimum)
    sampling_fraction: float = 1.0  # the active material's share of a MIP's energy loss
    sampling_term: float = 0.0  # stochastic term a of sigma/E = a / sqrt(E/GeV) from sampling


SAMPLING_RULE = 0.027  # a = 2.7 % sqrt(d[mm] / f_samp) (Wigmans, Calorimetry)


def effective_medium(layers: tuple[tuple[Material, float], ...], name: str = "Pb/LAr",
                     active: int | None = None) -> Medium:
    """Mix materials given as ``(material, thickness in mm)`` per sampling period; ``active``: the
    index of the read-out material (for the sampling fraction and stochastic term)."""
    grams = [m.density * t / 10.0 for m, t in layers]  # g/cm^2 per period
    total = sum(grams)
    w = [g / total for g in grams]
    period_mm = sum(t for _, t in layers)
    density = total / (period_mm / 10.0)
    x0 = 1.0 / sum(wj / m.X0 for wj, (m, _) in zip(w, layers))  # g/cm^2
    lam = 1.0 / sum(wj / m.lambda_int for wj, (m, _) in zip(w, layers))
    ec = x0 * sum(wj * m.Ec / m.X0 for wj, (m, _) in zip(w, layers))
    mip = RELATIVISTIC_RISE * sum(m.dedx_min * g for g, (m, _) in zip(grams, layers))
    mu = sum(wj * m.mu_photon for wj, (m, _) in zip(w, layers))  # cm^2/g
    f_samp, term = 1.0, 0.0
    if active is not None:
        f_samp = layers[active][0].dedx_min * grams[active] / sum(m.dedx_min * g for g, (m, _) in zip(grams, layers))
        term = SAMPLING_RULE * (layers[active][1] / f_samp) ** 0.5
    return Medium(
        name=name,
        Z=sum(wj * m.Z for wj, (m, _) in zip(w, layers)),
        A=sum(wj * m.A for wj, (m, _) in zip(w, layers)),
        density=density,
        X0_mm=10.0 * x0 / density,
        lambda_int_mm=10.0 * lam / density,
        Ec_MeV=ec,
        moliere_mm=10.0 * x0 / density * ES_MEV / ec,
        mass_fractions=tuple(w),
        period_mm=period_mm,
        mip_MeV_per_period=mip,
        photon_mfp_mm=10.0 / (mu * density) if mu > 0 else 0.0,
        sampling_fraction=f_samp,
        sampling_term=term,
    )


# The CaloGAN calorimeter: 80 periods of 2 mm lead + 4 mm liquid argon.
EFFECTIVE_MEDIUM = effective_medium(((LEAD, 2.0), (LIQUID_ARGON, 4.0)), active=1)
