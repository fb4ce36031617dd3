"""Auditing a store by recomputation: determinism makes every stored state checkable.

``recompute(store, hash)`` rebuilds a state's recipe from its manifest (registered
recipes — prunelab's, its plug-ins', installed packages' — or a user's in a module the user trusts: a
store never names code to run), re-executes it on the stored
parent at the recorded torch thread count, and compares every tensor and
metric with what is stored. Nothing is written.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass

import torch
from pydantic import BaseModel

from ..errors import PrunelabError
from . import recipes as recipes_module
from .recipes import Recipe, Ref, recipe_class, recipe_unavailable
from .store import Store

# Not results: wall-clock measurements, and provenance of how a state ran (which GPU; which models
# shared its vectorised pass: a recomputation trains it alone, with the same bits by design).
_VOLATILE = ("train_seconds", "seconds", "device", "vectorized", "cuda_graph")


def _convert(value, hint):
    if isinstance(value, dict) and set(value) == {"$state"}:
        return Ref(value["$state"])
    if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"$state"} for v in value):
        return tuple(Ref(v["$state"]) for v in value)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint.model_validate(value)
    if isinstance(value, list):
        return tuple(_convert(v, None) for v in value)
    return value


def recipe_from_manifest(manifest: dict) -> Recipe:
    """The recipe a manifest describes (registered, or in a module the user trusts), rebuilt exactly (its
    parameters must round-trip)."""
    recipe = manifest["recipe"]
    cls = recipe_class(recipe["type"])
    hints = typing.get_type_hints(cls, globalns={**vars(recipes_module), **vars(sys.modules[cls.__module__])})
    params = recipe["params"]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - fields
    if unknown:
        raise PrunelabError(f"recipe {recipe['type']}: unknown parameters {sorted(unknown)}")
    rebuilt = cls(**{name: _convert(value, hints.get(name)) for name, value in params.items()})
    from .hashing import canonical_json

    if rebuilt.version != recipe["version"]:
        raise PrunelabError(f"made by version {recipe['version']} of recipe {recipe['type']}, and this prunelab has "
                            f"version {rebuilt.version} (the recipe changed; docs/experiments.md says why): rerun "
                            "the study to compute it under its new identity")
    if canonical_json(rebuilt.params()) != canonical_json(params):
        raise PrunelabError(f"recipe {recipe['type']}: its parameters do not rebuild exactly (version "
                            f"{recipe['version']} vs {rebuilt.version})")
    return rebuilt


def recomputable(store: Store, state_hash: str) -> str | None:
    """Why a stored state cannot be re-executed here (None: it can be tried): a failed state, or a
    recipe that is neither registered nor in a module the user trusts (a store never names code to run)."""
    m = store.manifest(state_hash)
    if m is None or m.get("status") != "done":
        return f"no finished state {state_hash[:12]}"
    return recipe_unavailable(m["recipe"]["type"])


def _root_seed(store: Store, manifest: dict) -> int:
    m = manifest
    while m.get("parent"):
        m = store.manifest(m["parent"])
        if m is None:
            raise PrunelabError(f"state {manifest['hash'][:12]}: an ancestor is missing from the store")
    return m["recipe"]["params"].get("seed", 0) if m["recipe"]["type"] == "Init" else 0


def _strip(metrics):
    if isinstance(metrics, dict):
        return {k: _strip(v) for k, v in metrics.items() if k not in _VOLATILE}
    if isinstance(metrics, list):
        return [_strip(v) for v in metrics]
    return metrics


@dataclass(frozen=True)
class Recomputation:
    state: str
    recipe: str
    seconds: float
    differences: tuple[str, ...]  # empty: bit-identical

    @property
    def identical(self) -> bool:
        return not self.differences


def recompute(store: Store, state_hash: str) -> Recomputation:
    """Re-execute one stored state and compare it with the store, tensor by tensor (bitwise) and metric by
    metric (exactly, leaving out wall-clock times)."""
    import time

    from .context import RunContext, StateTask, _load

    m = store.manifest(state_hash)
    if m is None or m.get("status") != "done":
        raise PrunelabError(f"{store.root}: no finished state {state_hash[:12]}")
    recipe = recipe_from_manifest(m)
    identity = {"parent": m.get("parent"), "recipe": m["recipe"]["type"], "version": m["recipe"]["version"],
                "params": m["recipe"]["params"]}
    task = StateTask(m["hash"], identity, recipe, tuple(m.get("tags", [])), m.get("depth", 0), _root_seed(store, m))
    previous = torch.get_num_threads()
    torch.set_num_threads(int(m.get("torch_threads") or 1))  # kernels sum in a thread-count-dependent order
    began = time.perf_counter()
    try:
        parent = _load(store, m["parent"]) if m.get("parent") else None
        fresh = recipe.run(RunContext(store, task), parent)
    finally:
        torch.set_num_threads(previous)
    seconds = time.perf_counter() - began
    stored = store.load(state_hash)
    differences = []
    for group in ("weights", "masks"):
        mine, theirs = getattr(fresh, group), getattr(stored, group)
        for name in sorted(set(mine) | set(theirs)):
            if name not in mine or name not in theirs:
                differences.append(f"{group}.{name}: present in only one of them")
            elif mine[name].dtype != theirs[name].dtype or not torch.equal(mine[name].bool() if group == "masks"
                                                                           else mine[name], theirs[name]):
                differences.append(f"{group}.{name}: differs")
    if (fresh.optimizer is None) != (stored.optimizer is None):
        differences.append("optimizer state: present in only one of them")
    elif fresh.optimizer is not None:
        mine, theirs = _flat_tensors(fresh.optimizer), _flat_tensors(stored.optimizer)
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
            differences.append("optimizer state: differs")
    if fresh.iteration != stored.iteration:
        differences.append(f"iteration: {fresh.iteration} recomputed, {stored.iteration} stored")
    import json

    def canon(x):
        return json.dumps(_strip(x), sort_keys=True, allow_nan=True, default=str)

    if canon(fresh.metrics) != canon(m.get("metrics") or {}):
        differences.append("metrics: differ")
    return Recomputation(state_hash, m["recipe"].get("label", m["recipe"]["type"]), seconds, tuple(differences))


def _flat_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat_tensors(v, f"{prefix}{k}."))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flat_tensors(v, f"{prefix}{i}."))
    elif isinstance(state, torch.Tensor):
        out[prefix] = state
    return out
