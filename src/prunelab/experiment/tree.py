"""The lazy experiment tree: states, their identity, and the Experiment that runs them."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..caches import CACHES
from ..errors import PrunelabError
from .hashing import canonical_json, sha256_hex
from .recipes import Init, Recipe, StateLike
from .snapshot import frozen_options
from .store import Store

if TYPE_CHECKING:
    from .executors import Executor


class State(StateLike):
    """A node of the tree: the result of ``recipe`` applied to ``parent``.

    Created lazily (``parent.then(recipe)``); nothing runs until
    :meth:`Experiment.run`. Its ``hash`` is its identity.
    """

    def __init__(self, experiment: "Experiment", parent: "State | None", recipe: Recipe):
        self.experiment = experiment
        self.parent = parent
        self.recipe = recipe
        self.depth = 0 if parent is None else parent.depth + 1
        self.identity = {
            "parent": None if parent is None else parent.hash,
            "recipe": recipe.type_name,
            "version": recipe.version,
            "params": recipe.params(),
        }
        self.hash = sha256_hex(canonical_json(self.identity))
        self.tags: set[str] = set()

    def then(self, recipe: Recipe) -> "State":
        """The child produced by ``recipe`` (a lazy node; the same recipe gives the same node)."""
        if not isinstance(recipe, Recipe) or recipe.probe:
            raise PrunelabError(f"then() needs a state-producing recipe, got {type(recipe).__name__}")
        return self.experiment._register(State(self.experiment, self, recipe))

    def probe(self, recipe: Recipe) -> "Probe":
        if not recipe.probe:
            raise PrunelabError(f"{recipe.type_name} is not a probe; use then()")
        return self.experiment._register_probe(Probe(self, recipe))

    def dependencies(self) -> list["State"]:
        deps = [] if self.parent is None else [self.parent]
        return deps + [s for s in self.recipe.refs().values() if s not in deps]

    def lineage(self) -> list["State"]:
        chain, node = [], self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]

    # convenience once run
    @property
    def done(self) -> bool:
        return self.experiment.store.is_done(self.hash)

    def load(self):
        """The stored :class:`Snapshot` (after the experiment ran)."""
        return self.experiment.store.load(self.hash)

    def metrics(self) -> dict:
        m = self.experiment.store.manifest(self.hash)
        return {} if m is None else (m.get("metrics") or {})

    def __repr__(self) -> str:
        return f"State({self.recipe.describe()}, {self.hash[:10]})"


class Probe:
    """A measurement attached to a state; identity = (state, probe recipe)."""

    def __init__(self, state: State, recipe: Recipe):
        self.state = state
        self.recipe = recipe
        self.hash = sha256_hex(canonical_json({"state": state.hash, "probe": recipe.type_name,
                                               "version": recipe.version, "params": recipe.params()}))

    def result(self) -> dict | None:
        record = self.state.experiment.store.probe(self.state.hash, self.hash)
        return None if record is None else record.get("result")


def _fingerprint(name: str, data) -> str:
    """A user dataset's content hash, once per process."""
    from ..tasks.datasets import dataset_fingerprint

    fingerprints = CACHES.dataset_fingerprints
    if name not in fingerprints:
        fingerprints[name] = dataset_fingerprint(data)
    return fingerprints[name]


class Experiment:
    """A tree of states bound to a store directory.

    >>> exp = Experiment("runs/demo")
    >>> root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    >>> trained = root.then(Train(TrainConfig(iterations=500)))
    >>> exp.run()
    """

    def __init__(self, store: str | Path | Store):
        # The store directory is created on first use (planning), so a tree
        # that fails to build — a bad spec, a model that cannot take the data —
        # writes nothing.
        self._store = store if isinstance(store, Store) else None
        self._store_path = None if isinstance(store, Store) else Path(store)
        self.states: dict[str, State] = {}
        self.probes: dict[str, Probe] = {}
        self._tags: list[str] = []
        # JSON documents written into the store when the experiment runs (the study record:
        # which state plays which role), so readers need neither the spec nor the tags.
        self.documents: dict[str, dict] = {}
        self._checked_specs: set = set()  # architectures already built once for their data

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self._store_path)
        return self._store

    def root(self, *, dataset: str, model: str, seed: int = 0, init: str | None = None,
             model_options: dict | None = None) -> State:
        """A root state: ``model`` freshly initialised (with ``seed``) for ``dataset``."""
        from ..registry import trust_names
        from .context import dataset_cache

        from ..tasks.datasets import is_builtin_dataset

        trust_names(dataset, model)  # the caller named them: its own code, not data read from a store
        data = dataset_cache(dataset)
        recipe = Init(dataset=dataset, model=model, seed=seed, init=init,
                      model_options=frozen_options(model_options),
                      input_shape=tuple(data.input_shape), num_classes=data.num_classes,
                      data_fingerprint=None if is_builtin_dataset(dataset) else _fingerprint(dataset, data))
        if recipe.spec() not in self._checked_specs:  # fail now, not in a worker, if the model cannot take
            recipe.spec().build(seed=seed)  # the data (once per architecture: the seed does not change that)
            self._checked_specs.add(recipe.spec())
        return self._register(State(self, None, recipe))

    @contextmanager
    def tag(self, *labels: str) -> Iterator[None]:
        """States created inside carry these labels (labels never change identity)."""
        self._tags.extend(labels)
        try:
            yield
        finally:
            del self._tags[len(self._tags) - len(labels):]

    def _register(self, state: State) -> State:
        existing = self.states.get(state.hash)
        if existing is not None:
            existing.tags.update(self._tags)
            return existing
        for dep in state.recipe.refs().values():
            if dep.experiment is not self:
                raise PrunelabError("a recipe references a state of another experiment")
        state.tags.update(self._tags)
        self.states[state.hash] = state
        return state

    def _register_probe(self, probe: Probe) -> Probe:
        return self.probes.setdefault(probe.hash, probe)

    def run(self, executor: "str | Executor" = "serial", *, workers: int | None = None, threads: int | None = None,
            progress: bool | None = None, fuse: bool = True, fallback: bool = True):
        """Run every state not yet in the store; returns a :class:`RunSummary`.

        ``executor``: ``"serial"`` (this process), ``"local"`` (a Dask
        LocalCluster of ``workers`` processes), a scheduler address
        (``"tcp://host:8786"``), an installed executor's name, ``"package.module:Class"`` (from a
        module you trust) or an executor object (:mod:`prunelab.experiment.executors`). Every task
        runs at ``threads`` torch threads (default 1) whatever the executor, so results are bitwise
        identical across executors; parallelism comes from running branches at once.
        Scripts using ``"local"`` need the ``if __name__ == "__main__":`` guard
        (worker processes are spawned). With ``fallback`` (the default), ``"local"`` runs in this
        process when a cluster cannot gain: no two tasks can run at once, or the work predicted
        from the plan is too small to pay for the cluster's start-up (the summary's ``note`` says
        which; :mod:`prunelab.experiment.scheduling`).
        """
        from .runner import run_experiment

        return run_experiment(self, executor=executor, workers=workers, threads=threads, progress=progress, fuse=fuse,
                              fallback=fallback)
