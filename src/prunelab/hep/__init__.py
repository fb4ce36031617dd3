"""Physics tasks: showers in the simplified 3-layer calorimeter of the CaloGAN papers.

* :mod:`.material` — the Pb/LAr effective medium, derived from PDG constants;
* :mod:`.geometry` — layers, cells and the published HDF5 layout;
* :mod:`.simulator` — a vectorised, seeded parameterised shower generator
  (Grindhammer–Peters for electromagnetic showers, a simple hadronic model);
* :mod:`.io` — reading and writing CaloGAN HDF5 files;
* :mod:`.shapes` — the classical shower-shape observables;
* :mod:`.metrics` — ROC AUC, background rejection, energy resolution;
* :mod:`.tasks` — the registered datasets and models;
* :mod:`.baselines` — gradient-boosted trees on shower shapes;
* :mod:`.gan`, :mod:`.gan_recipes`, :mod:`.gan_study` — a conditional shower GAN (CaloGAN-style)
  trained as states of the experiment tree, and the study that prunes its generator;
* :mod:`.fidelity` — how faithful generated showers are (Wasserstein/KS per observable and energy
  bin, a classifier two-sample test, the energy response);
* :mod:`.calochallenge`, :mod:`.calochallenge_classifier`, :mod:`.calochallenge_report` — the
  CaloChallenge's evaluation (separation powers, FPD/KPD, classifier AUCs) and its HTML/JSON report.

The names below load their module on first use, so ``import prunelab`` stays light.
"""

from importlib import import_module

_LAZY = {
    "CALORIMETER": ".geometry", "Calorimeter": ".geometry", "Layer": ".geometry",
    "EFFECTIVE_MEDIUM": ".material", "Medium": ".material", "effective_medium": ".material",
    "PARTICLES": ".simulator", "Showers": ".simulator", "simulate": ".simulator",
    "read_showers": ".io", "write_showers": ".io", "shower_shapes": ".shapes",
    "GANConfig": ".gan", "sample": ".gan",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
