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
* :mod:`.flow`, :mod:`.flow_recipes` — a conditional normalizing flow of showers (CaloFlow-style),
  trained and pruned the same way; :mod:`.generation` samples showers from either;
* :mod:`.fidelity` — how faithful generated showers are (Wasserstein/KS per observable and energy
  bin, a classifier two-sample test, the energy response);
* :mod:`.calochallenge`, :mod:`.calochallenge_classifier`, :mod:`.calochallenge_report` — the
  CaloChallenge's evaluation (separation powers, FPD/KPD, classifier AUCs) and its HTML/JSON report.
* :mod:`.generator_scores`, :mod:`.generator_score_study`, :mod:`.generator_score_report` — a generator
  study's pruned generators scored the CaloChallenge way (cached per state), with generation time and
  parameter counts, averaged over seeds (``prunelab calo score``).

The names below load their module on first use, so ``import prunelab`` stays light.

This package is a plug-in: nothing outside it imports it. It adds its datasets, models, recipes,
command group and report kind through :data:`ENTRY_POINTS`, read by prunelab's registries on their
first lookup (``prunelab.registry.BUILTIN_PLUGINS``) exactly as an installed package's entry points are.
"""

from importlib import import_module

# What this plug-in adds, by registry entry-point group (the same table as pyproject.toml's entry points,
# which tests/test_plugins.py keeps in step). ``module``: importing it registers its entries (one dataset
# per particle pair); ``module:attr``: one entry, loaded when first asked for.
ENTRY_POINTS = {
    "prunelab.datasets": {"calorimeter": "prunelab.hep.tasks"},
    "prunelab.models": {"calorimeter": "prunelab.hep.tasks", "calogan": "prunelab.hep.gan",
                         "caloflow": "prunelab.hep.flow"},
    "prunelab.recipes": {"TrainGAN": "prunelab.hep.gan_recipes:TrainGAN",
                         "FinetuneGAN": "prunelab.hep.gan_recipes:FinetuneGAN",
                         "TrainFlow": "prunelab.hep.flow_recipes:TrainFlow",
                         "FinetuneFlow": "prunelab.hep.flow_recipes:FinetuneFlow"},
    "prunelab.commands": {"calo": "prunelab.hep.cli:calo_app"},
    "prunelab.report_kinds": {"gan": "prunelab.hep.gan_report:GAN_REPORT"},
}

_LAZY = {
    "CALORIMETER": ".geometry", "Calorimeter": ".geometry", "Layer": ".geometry",
    "EFFECTIVE_MEDIUM": ".material", "Medium": ".material", "effective_medium": ".material",
    "PARTICLES": ".simulator", "Showers": ".simulator", "simulate": ".simulator",
    "read_showers": ".io", "write_showers": ".io", "shower_shapes": ".shapes",
    "GANConfig": ".gan", "FlowConfig": ".flow", "sample": ".generation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
