"""One identity, one content: a state's stored bits are a function of its hash alone.

The same tree (every recipe kind, tests/same_bits_helpers.py) is computed three ways:

* A: serially in this process, in one go (every parent and reference made in memory);
* B: in two separate processes, the ticket branch first, so that the other branches start from
  and refer to states loaded from the store (masks, weights and optimizer state in text order);
* C: on a Dask LocalCluster of two workers.

Every state must hold the same tensors (by content digest), iteration and metrics (wall-clock
times aside) in all three, every probe the same result, and every state must recompute bit for bit
from its stored parent with nothing in memory.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunelab.experiment import recipes as recipes_module
from prunelab.experiment.audit import _strip, recompute
from prunelab.caches import CACHES
from prunelab.experiment.context import RunContext, StateTask
from prunelab.experiment.recipes import RandomPruneLike, Recipe, Ref
from prunelab.experiment.snapshot import ModelSpec, Snapshot
from prunelab.experiment.store import Store

from .same_bits_helpers import MODEL, build, build_gan

ROOT = Path(__file__).resolve().parents[1]


def _helper(store: Path, part: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.same_bits_helpers", str(store), part], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"{process.args}: {out}\n{err[-3000:]}"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("same-bits")
    a, b, c = base / "A", base / "B", base / "C"
    first = _helper(b, "ticket")  # B's first process runs beside A (two cores, one thread each)
    summary = build(a).run()
    assert summary.ok, summary
    _finish(first)
    _finish(_helper(b, "all"))
    summary = build(c).run("local", workers=2, fallback=False)
    assert summary.ok, summary
    return {"A": Store(a), "B": Store(b), "C": Store(c)}


def _hashes(store: Store) -> set[str]:
    return {p.stem for p in (store.root / "states").glob("*.json")}


def _content(store: Store, state_hash: str) -> dict:
    """What a state holds: its tensors by content digest, iteration, optimizer values, metrics."""
    m = store.manifest(state_hash)
    o = m.get("optimizer") or {}
    return {"status": m["status"], "iteration": m["iteration"],
            "weights": {k: e["blob"] for k, e in m["weights"].items()},
            "masks": {k: e["blob"] for k, e in m["masks"].items()},
            "optimizer": {k: e["blob"] for k, e in (o.get("tensors") or {}).items()},
            "optimizer values": o.get("values"), "param groups": o.get("param_groups"),
            "metrics": json.dumps(_strip(m.get("metrics") or {}), sort_keys=True, allow_nan=True)}


def _probes(store: Store) -> dict[str, str]:
    return {str(p.relative_to(store.root)): json.dumps(_strip(json.loads(p.read_text())["result"]), sort_keys=True)
            for p in (store.root / "probes").glob("*/*.json")}


def test_the_tree_holds_every_recipe_kind(stores):
    kinds = {cls.__name__ for cls in vars(recipes_module).values()
             if isinstance(cls, type) and issubclass(cls, Recipe) and dataclasses.is_dataclass(cls)}
    manifests = [stores["A"].manifest(h) for h in _hashes(stores["A"])]
    made = {m["recipe"]["type"] for m in manifests}
    assert kinds - {"Evaluate"} <= made, kinds - made
    assert _probes(stores["A"])  # Evaluate: a probe, not a state
    pruning = {(m["recipe"]["params"]["config"]["method"], m["recipe"]["params"]["config"]["scope"])
               for m in manifests if m["recipe"]["type"] == "Prune"}
    assert {("magnitude", "global"), ("magnitude", "layer"), ("random", "layer"), ("snip", "global")} <= pruning
    assert any(m["recipe"]["type"] == "Train" and m["recipe"]["params"].get("stop") for m in manifests)
    assert any(m["recipe"]["type"] == "Train" and m["recipe"]["params"]["config"].get("vectorize")
               for m in manifests)


def test_every_state_holds_the_same_bits_however_it_was_computed(stores):
    hashes = _hashes(stores["A"])
    assert len(hashes) > 40
    for name in ("B", "C"):
        assert _hashes(stores[name]) == hashes, name
    differing = []
    for h in sorted(hashes):
        reference = _content(stores["A"], h)
        for name in ("B", "C"):
            other = _content(stores[name], h)
            if other != reference:
                fields = [k for k in reference if other[k] != reference[k]]
                differing.append(f"{h[:12]} {stores['A'].manifest(h)['recipe']['type']}: {name} differs in {fields}")
    assert not differing, f"{len(differing)} differences:\n" + "\n".join(differing)
    probes = _probes(stores["A"])
    for name in ("B", "C"):
        assert _probes(stores[name]) == probes, name


def test_every_state_recomputes_bit_for_bit_from_the_store_alone(stores):
    store = stores["A"]  # computed in this process, from parents held in memory
    differing = []
    for h in sorted(_hashes(store)):
        if store.manifest(h)["recipe"]["type"] == "Init":
            continue
        CACHES.snapshots.clear()  # from parents and references read back from disk, untouched by other states
        result = recompute(store, h)
        if not result.identical:
            differing.append(f"{h[:12]} {result.recipe}: {result.differences}")
    assert not differing, "\n".join(differing)


def test_gan_states_hold_the_same_bits_from_memory_and_from_disk(tmp_path):
    """TrainGAN continues its parent's optimizer state, which must be indexed the same way whether
    the generator is pruned or not and however its masks were ordered, and must not be changed in
    place (the parent is held in memory, and being stored, while its children train)."""
    serial = build_gan(tmp_path / "A").run()
    assert serial.ok, serial
    assert build_gan(tmp_path / "B", "pruned").run().ok
    CACHES.snapshots.clear()  # the rest starts from the checkpoint and pruned states as loaded from disk
    split = build_gan(tmp_path / "B").run()
    assert split.ok, split
    a, b = Store(tmp_path / "A"), Store(tmp_path / "B")
    assert _hashes(a) == _hashes(b) and len(_hashes(a)) == 10
    for h in sorted(_hashes(a)):
        assert _content(a, h) == _content(b, h), f"{h[:12]} {a.manifest(h)['recipe']['type']}"
    for h in sorted(_hashes(a)):
        if a.manifest(h)["recipe"]["type"] != "Init":
            CACHES.snapshots.clear()
            result = recompute(a, h)
            assert result.identical, (h[:12], result.recipe, result.differences)


# ---------------------------------------------------------------- the pieces, directly


def _snapshot(masks: dict[str, torch.Tensor]) -> Snapshot:
    spec = ModelSpec("lenet_300_100", (1, 8, 8), 10, options=(("hidden", tuple(MODEL["model_options"]["hidden"])),))
    return Snapshot(spec, "digits", {k: v.detach() for k, v in spec.build().state_dict().items()}, masks)


def _layer_masks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = _snapshot({}).model()
    return {f"{name}.weight": torch.rand(m.weight.shape, generator=g) > 0.5
            for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


class _Context(RunContext):
    def __init__(self, reference: Snapshot):
        super().__init__(None, StateTask("ab" * 32, {}, None, (), 0, 0))
        self.reference = reference

    def load(self, ref):
        return self.reference


@pytest.mark.parametrize("reverse", [False, True])
def test_random_pruning_control_does_not_depend_on_the_order_of_its_references_masks(reverse):
    masks = _layer_masks()
    names = sorted(masks)  # text order: '1.weight', '11.weight', '3.weight', ...
    assert names != list(masks)
    shuffled = {n: masks[n] for n in (reversed(names) if reverse else names)}
    recipe = RandomPruneLike(like=Ref("cd" * 32))
    parent = _snapshot({})
    made = recipe.run(_Context(_snapshot(masks)), parent).masks
    again = recipe.run(_Context(_snapshot(shuffled)), parent).masks
    assert made.keys() == masks.keys()
    for name, keep in masks.items():
        assert torch.equal(made[name], again[name]), name
        assert int(made[name].sum()) == int(keep.sum()), name  # each layer keeps what the reference keeps


def test_a_model_is_the_same_whatever_the_order_of_its_masks():
    """A module's parameters and pruned tensors come out in one order, whether its masks came in
    module order (made in memory) or in text order (loaded from the store)."""
    model = _snapshot({}).model()
    masks = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            masks[f"{name}.weight"] = torch.ones(m.weight.shape, dtype=torch.bool)
            masks[f"{name}.bias"] = torch.ones(m.bias.shape, dtype=torch.bool)
    made = _snapshot(masks).model()
    loaded = _snapshot(dict(sorted(masks.items()))).model()
    assert [n for n, _ in made.named_parameters()] == [n for n, _ in loaded.named_parameters()]
    from prunelab.pruning.masks import get_masks

    assert list(get_masks(made)) == list(get_masks(loaded))
