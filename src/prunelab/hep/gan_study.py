"""A generator study: train the shower GAN or the shower flow (checkpoints as states), then prune its
generator — one-shot and iteratively, fine-tuning after each round — and measure fidelity against
sparsity. A ``[gan]`` section trains the GAN (model ``calogan``), a ``[flow]`` section the flow
(``caloflow``, :mod:`.flow`); ``[pruning.finetune]`` then takes the same keys as that section.

Spec (TOML)::

    name = "calogan_eplus"
    dataset = "calo_showers_eplus"
    seeds = [0]
    checkpoint_every = 5000          # a state every 5,000 iterations (resume point, fidelity curve)

    [model]                          # options of the 'calogan' model
    latent = 32

    [gan]                            # GANConfig
    iterations = 20000

    [pruning]                        # optional
    scope = "global"                 # magnitude pruning of the generator's weights
    rounds = 4                       # iterative: prune `amount` of what remains, fine-tune, repeat
    amount = 0.5
    one_shot = [0.5, 0.75, 0.875, 0.9375]   # target sparsities pruned at once from the trained GAN
    dense_control = true             # the dense GAN fine-tuned as long: what extra training alone gives

    [pruning.finetune]               # GANConfig of every fine-tune
    iterations = 2000

The study's structure is written into the store as ``documents/gan-study-NAME.json``: which state
is the trained GAN, which is a round, a one-shot target or the dense control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import PrunelabError, validated
from .flow import FlowConfig
from .gan import GANConfig

DOCUMENT_PREFIX = "gan-study-"
FORMAT = 1


class GANPruning(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # any pruning method that needs no data (a generator's inputs are noise): magnitude, random, synflow's
    # kind, or your own (prunelab methods)
    method: str = "magnitude"
    scope: Literal["global", "layer"] = "global"
    rounds: int = Field(0, ge=0, le=50)
    amount: float = Field(0.5, gt=0, lt=1)
    one_shot: tuple[float, ...] = ()
    dense_control: bool = True
    finetune: GANConfig | FlowConfig  # the study's training section's type (GANStudySpec reads it so)

    @field_validator("method")
    @classmethod
    def _method(cls, name):
        from ..pruning.method import method_class
        from ..registry import trust_names

        trust_names(name)  # named in the user's spec
        needs = method_class(name).needs - {"input_shape"}
        if needs:
            raise ValueError(f"pruning method {name!r} needs {', '.join(sorted(needs))}; a generator is pruned "
                             "without data (magnitude, random, or a method of your own that needs none)")
        return name

    @field_validator("one_shot")
    @classmethod
    def _sparsities(cls, value):
        bad = [v for v in value if not 0 < v < 1]
        if bad:
            raise ValueError(f"one_shot sparsities must be in (0, 1), got {bad[0]}")
        return tuple(sorted(set(value)))

    def config(self, generator: str, **amount):
        """The pruning of ``generator``'s weights: the GAN's generator (its critic stays dense), every
        layer of the flow."""
        from ..pruning.methods import PruningConfig

        include = ("generator.*",) if generator == "calogan" else None
        return PruningConfig(method=self.method, structure="unstructured", scope=self.scope, include=include,
                             **amount)


class GANStudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str = "calo_showers_eplus"
    seeds: tuple[int, ...] = (0,)
    checkpoint_every: int | None = Field(None, gt=0)
    model: dict[str, bool | int]  # a model option is a size or a switch = Field(default_factory=dict)
    gan: GANConfig | None = None
    flow: FlowConfig | None = None
    pruning: GANPruning | None = None

    @model_validator(mode="before")
    @classmethod
    def _finetune_like_training(cls, data):
        """``[pruning.finetune]`` is read as the training section's config, so a typo is caught by its keys."""
        if not isinstance(data, dict) or ("gan" in data) == ("flow" in data):
            if isinstance(data, dict):
                raise ValueError("give exactly one training section: [gan] (the shower GAN) or [flow] (the shower flow)")
            return data
        pruning = data.get("pruning")
        if isinstance(pruning, dict) and isinstance(pruning.get("finetune"), dict):
            kind = FlowConfig if "flow" in data else GANConfig
            data = {**data, "pruning": {**pruning, "finetune": kind.model_validate(pruning["finetune"])}}
        return data

    @property
    def generator(self) -> str:
        return "calogan" if self.gan is not None else "caloflow"

    @property
    def training(self) -> GANConfig | FlowConfig:
        return self.gan if self.gan is not None else self.flow

    @model_validator(mode="after")
    def _check(self) -> "GANStudySpec":
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if not self.dataset.startswith("calo_showers_"):
            raise ValueError(f"dataset {self.dataset!r}: a GAN study trains on calo_showers_eplus, "
                             "calo_showers_gamma or calo_showers_piplus")
        return self

    def checkpoints(self) -> list[int]:
        total, every = self.training.iterations, self.checkpoint_every or self.training.iterations
        return [*range(every, total, every), total]


def load_gan_spec(path: str | Path) -> GANStudySpec:
    from ..spec import read_toml

    return validated(GANStudySpec, read_toml(path), str(path))


def build_gan_study(spec: GANStudySpec, store, *, document: bool = True):
    """The experiment tree of ``spec`` (nothing runs); its structure (``exp.built_points``) is attached
    to the store as a document unless ``document`` is false (a partial build must not replace a study's)."""
    from ..experiment import Experiment
    from ..experiment.recipes import Prune
    from .flow_recipes import FinetuneFlow, TrainFlow
    from .gan_recipes import FinetuneGAN, TrainGAN

    train, finetune_with = (TrainGAN, FinetuneGAN) if spec.gan is not None else (TrainFlow, FinetuneFlow)
    exp = Experiment(store)
    points: list[dict] = []

    def point(state, kind: str, seed: int, **extra) -> None:
        points.append({"hash": state.hash, "kind": kind, "seed": seed, **extra})

    for seed in spec.seeds:
        with exp.tag(f"seed {seed}"):
            state = exp.root(dataset=spec.dataset, model=spec.generator, seed=seed, model_options=dict(spec.model))
            for stop in spec.checkpoints():
                state = state.then(train(spec.training, stop=stop))
                point(state, "checkpoint", seed, iteration=stop)
            trained = state
            point(trained, "trained", seed, round=0)
            p = spec.pruning
            if p is None:
                continue
            finetune = finetune_with(p.finetune)
            if p.dense_control:
                with exp.tag("dense control"):
                    point(trained.then(finetune), "dense_control", seed)
            current = trained
            for r in range(1, p.rounds + 1):
                with exp.tag(f"imp round {r}"):
                    current = current.then(Prune(p.config(spec.generator, amount=p.amount))).then(finetune)
                point(current, "imp", seed, round=r)
            for target in p.one_shot:
                with exp.tag(f"one-shot {target:g}"):
                    point(trained.then(Prune(p.config(spec.generator, target=target))).then(finetune), "one_shot", seed, target=target)
    exp.built_points = points
    if document:
        exp.documents[DOCUMENT_PREFIX + spec.name] = {"format": FORMAT, "name": spec.name, "dataset": spec.dataset,
                                                      "generator": spec.generator,
                                                      "spec": spec.model_dump(mode="json"), "points": points}
    return exp


KINDS = ("checkpoint", "trained", "dense_control", "imp", "one_shot")


def _study_documents(results) -> list[dict]:
    docs = [d for name, d in results.store.documents().items() if name.startswith(DOCUMENT_PREFIX)]
    for doc in docs:
        if doc.get("format") != FORMAT or not isinstance(doc.get("points"), list):
            raise PrunelabError(f"{results.store.root}: GAN study document {doc.get('name')!r} has format "
                                f"{doc.get('format')!r} (this prunelab reads format {FORMAT})")
        for p in doc["points"]:
            if not isinstance(p, dict) or p.get("kind") not in KINDS or not isinstance(p.get("hash"), str):
                raise PrunelabError(f"{results.store.root}: GAN study {doc.get('name')!r}: bad point {p!r}")
    return docs


def is_gan_store(results) -> bool:
    return any(name.startswith(DOCUMENT_PREFIX) for name in results.store.documents())


def gan_points(results):
    """One row per studied state that finished: its role, generator sparsity and fidelity summary."""
    import pandas as pd

    rows = []
    for doc in _study_documents(results):
        for p in doc["points"]:
            m = results.store.manifest(p["hash"])
            if m is None or m.get("status") != "done":
                continue
            metrics = m.get("metrics") or {}
            summary = (metrics.get("fidelity") or {}).get("summary") or {}
            label = {"checkpoint": f"checkpoint {p.get('iteration')}", "trained": "trained",
                     "dense_control": "dense + fine-tune", "imp": f"IMP round {p.get('round')}",
                     "one_shot": f"one-shot {p.get('target')}"}[p["kind"]]
            low, high = summary.get("auc_interval") or (None, None)
            rows.append({"study": doc["name"], "label": label, "kind": p["kind"], "seed": p["seed"],
                         "round": p.get("round"), "target": p.get("target"), "iteration": p.get("iteration"),
                         "sparsity": metrics.get("sparsity"), "auc": summary.get("auc"), "auc_low": low,
                         "auc_high": high, "worst_wasserstein": summary.get("worst_wasserstein"),
                         "worst_observable": summary.get("worst_observable"),
                         "median_wasserstein": summary.get("median_wasserstein"), "max_ks": summary.get("max_ks"),
                         "response_bias": summary.get("response_bias"), "hash": p["hash"]})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["pareto"] = pareto_mask(frame)
    return frame


def pareto_mask(points):
    """Which finished generators are Pareto-optimal in (sparsity: more is better, two-sample AUC: lower
    is better) among the trained, control and pruned ones (checkpoints are not candidates)."""
    import numpy as np

    from ..analysis.pareto import pareto_front

    mask = np.zeros(len(points), dtype=bool)
    candidates = np.flatnonzero((points["kind"] != "checkpoint").to_numpy() & points["auc"].notna().to_numpy())
    if len(candidates):
        values = points.iloc[candidates][["sparsity", "auc"]].to_numpy(dtype=float)
        mask[candidates[pareto_front(values, maximize=[True, False])]] = True
    return mask


def pick_state(results, state: str | None) -> str:
    """A state hash: the given prefix, or the study's trained GAN (first seed)."""
    if state:
        return results.resolve(state)
    points = gan_points(results)
    trained = points[points["kind"] == "trained"] if len(points) else points
    if not len(trained):
        raise PrunelabError(f"{results.store.root}: no finished GAN study here (run `prunelab calo train SPEC`), "
                            "or name a state with --state")
    return str(trained.iloc[0]["hash"])
