"""Your own pruning method, by import path or installed under the entry-point group prunelab.methods,
run as a whole study beside the baselines (issue #31)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from prunelab import build_model
from prunelab.experiment import Experiment, Prune, RandomPruneLike, Train, open_store
from prunelab.pruning import Method, prune, technique
from prunelab.tasks.training import TrainConfig

from .conftest import run_cli_here
from .test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _study(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples" / "my_method.py", tmp_path / "my_method.py")
    text = (ROOT / "examples" / "my_method.toml").read_text()
    text = text.replace('store = "runs/my_method"', f'store = "{tmp_path / "store"}"')
    text = text.replace("seeds = [0, 1, 2]", "seeds = [0, 1]").replace("iterations = 400", "iterations = 40")
    text = text.replace("rounds = 3", "rounds = 2")
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    return spec


def test_a_method_in_a_file_outside_the_package_runs_a_whole_study(tmp_path, monkeypatch):
    spec = _study(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would, for this test only
    monkeypatch.delitem(sys.modules, "my_method", raising=False)  # this file's, not examples/ (test_study's)
    out = run_cli_here("run", str(spec))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "taylor" in out.stdout and "declared hypotheses" in out.stdout
    compare = run_cli_here("compare", str(spec.parent / "store"))
    assert compare.returncode == 0 and "taylor" in compare.stdout and "random" in compare.stdout
    again = run_cli_here("run", str(spec))
    assert again.returncode == 0 and " 0 computed" in again.stdout
    # its identity is its qualified name and parameters
    results = open_store(spec.parent / "store")
    prunes = [m for m in results.states(recipe="Prune") if m["recipe"]["params"]["config"]["method"] != "magnitude"]
    assert prunes and all(m["recipe"]["params"]["config"]["method"] == "my_method:Taylor" and
                          m["recipe"]["params"]["config"]["method_params"] == {"power": 2.0} for m in prunes)
    # a store never makes prunelab import it: the audit refuses until the user trusts the module
    state = prunes[0]["hash"]
    sys.modules.pop("my_method", None)  # as a new process has it: not imported
    refused = run_cli_here("verify", str(spec.parent / "store"), "--state", state)
    assert "my_method" not in sys.modules  # refused before it was imported
    assert refused.returncode == 1 and "refusing to import module 'my_method'" in refused.stdout
    trusted = run_cli_here("--trust", "my_method", "verify", str(spec.parent / "store"), "--state", state)
    assert trusted.returncode == 0 and "bit-identical" in trusted.stdout, trusted.stdout[-2000:]
    sys.modules.pop("my_method", None)  # a module of this tmp_path: no later test finds it


def test_an_installed_method_is_found_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    (site / "labmethods-0.1.dist-info").mkdir(parents=True)
    (site / "labmethods-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: labmethods\n"
                                                                "Version: 0.1\n")
    (site / "labmethods-0.1.dist-info" / "entry_points.txt").write_text(
        "[prunelab.methods]\ntaylor = labmethods:Taylor\n")
    shutil.copy(ROOT / "examples" / "my_method.py", site / "labmethods.py")
    env = {"PYTHONPATH": str(site)}
    # a subprocess: entry points are discovered once a process, and this one may have done so already
    listed = run_cli("methods", env=env)
    assert listed.returncode == 0 and "taylor" in listed.stdout
    code = ("import torch; from prunelab import build_model; from prunelab.pruning import prune, technique; "
            "m = build_model('lenet_300_100', (1, 8, 8), 10, seed=0); x = torch.randn(16, 1, 8, 8); "
            "y = torch.arange(16) % 10; r = prune(m, technique('taylor', amount=0.5), batch=(x, y)); "
            "print(round(r.report.sparsity, 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0 and out.stdout.strip() == "0.5", out.stderr[-2000:]


class HalfRows(Method):
    """Keeps the first half of each row's columns: a method whose answer is known by construction."""

    structures = frozenset({"unstructured", "nm"})

    def score(self, model, targets, context):
        out = {}
        for t in targets:
            columns = torch.arange(t.original[0].numel(), 0, -1, dtype=torch.float32)
            out[t.name] = columns.expand(t.shape[0], -1).reshape(t.shape).clone()
        return out


def test_a_user_method_object_decides_what_is_kept(monkeypatch):
    import prunelab.pruning.method as method_module

    monkeypatch.setitem(sys.modules, "planted_methods", type(sys)("planted_methods"))
    sys.modules["planted_methods"].HalfRows = HalfRows
    model = build_model("lenet_300_100", (1, 8, 8), 10, seed=0)
    result = prune(model, technique("planted_methods:HalfRows", pattern="2:4"))
    for mask in result.masks.values():
        groups = mask.reshape(mask.shape[0], -1, 4)
        assert groups[..., :2].all() and not groups[..., 2:].any()  # the two highest of every four
    assert method_module.METHODS  # registered names stay listed


def test_calibrated_branches_and_their_n_m_controls_in_a_study(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
[study]
name = "calibrated"
store = "{tmp_path / 'store'}"
seeds = [0]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 40
batch_size = 32
[branches.wanda24]
technique = "wanda"
pattern = "2:4"
calibration = {{ samples = 64 }}
[branches.sparsegpt]
technique = "sparsegpt"
target = 0.5
calibration = {{ samples = 64, seed = 7 }}
[branches.random24]
control = "random_pruning"
of = "wanda24"
""")
    out = run_cli_here("run", str(spec))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = open_store(tmp_path / "store")
    controls = [m for m in results.states(recipe="RandomPruneLike")]
    assert controls and all(m["recipe"]["params"]["pattern"] == "2:4" for m in controls)
    snapshot = results.snapshot(controls[0]["hash"])
    for mask in snapshot.masks.values():
        assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all()  # random, but of the pattern
    prunes = {m["recipe"]["params"]["config"]["method"]: m for m in results.states(recipe="Prune")}
    assert prunes["wanda"]["recipe"]["params"]["config"]["calibration"]["samples"] == 64
    assert prunes["sparsegpt"]["recipe"]["params"]["config"]["calibration"]["seed"] == 7
    assert abs(prunes["sparsegpt"]["metrics"]["sparsity"] - 0.5) < 0.01
    compare = run_cli_here("compare", str(tmp_path / "store"))
    assert compare.returncode == 0 and "wanda24" in compare.stdout and "random24" in compare.stdout
    report = run_cli_here("report", str(tmp_path / "store"), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0 and "wanda24" in (tmp_path / "r.html").read_text()


def test_calibration_draws_are_seeded_and_part_of_identity(tmp_path):
    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    dense = root.then(Train(TrainConfig(iterations=30, batch_size=32)))
    a = dense.then(Prune(technique("wanda", amount=0.5, calibration={"samples": 32, "seed": 1})))
    b = dense.then(Prune(technique("wanda", amount=0.5, calibration={"samples": 32, "seed": 2})))
    again = dense.then(Prune(technique("wanda", amount=0.5, calibration={"samples": 32, "seed": 1})))
    assert a.hash != b.hash and a.hash == again.hash
    assert exp.run().ok
    ma, mb = exp.store.load(a.hash).masks, exp.store.load(b.hash).masks
    assert any(not torch.equal(ma[k], mb[k]) for k in ma)  # other examples, other masks
    control = root.then(RandomPruneLike(like=a, pattern="2:4"))
    plain = root.then(RandomPruneLike(like=a))
    assert control.hash != plain.hash
    from prunelab.experiment.recipes import RandomPruneLike as R

    assert "pattern" not in R(like=a).params()  # the control of an ordinary branch keeps its identity


def test_one_shot_comparisons_without_retraining_and_their_controls(tmp_path):
    """reset = "none": the pruned model is measured as it is (Wanda's and SparseGPT's comparisons);
    its random-pruning control puts random masks of the same pattern on the same trained weights."""
    from prunelab.spec import load_spec
    from prunelab.study import build_study, summarize

    text = f"""
[study]
name = "oneshot"
store = "{tmp_path / 'store'}"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 150
batch_size = 32
[branches.sparsegpt24]
technique = "sparsegpt"
pattern = "2:4"
reset = "none"
[branches.magnitude24]
technique = "l1_unstructured"
pattern = "2:4"
reset = "none"
[branches.random24]
control = "random_pruning"
of = "magnitude24"
[branches.taylor]
technique = "my_method:Taylor"
scope = "global"
target = 0.5
reset = "none"
"""
    shutil.copy(ROOT / "examples" / "my_method.py", tmp_path / "my_method.py")
    sys.path.insert(0, str(tmp_path))
    try:
        spec = load_spec(_write(tmp_path / "spec.toml", text))
        tree = build_study(spec)
        assert tree.experiment.run().ok
        rows = {r.branch: r for r in summarize(tree)}
    finally:
        sys.path.remove(str(tmp_path))
    # untrained: every pruned point was measured right after its prune
    assert {"sparsegpt24", "magnitude24", "random24", "taylor"} <= set(rows)
    assert rows["sparsegpt24"].mean > rows["random24"].mean and rows["magnitude24"].mean > rows["random24"].mean
    assert abs(rows["taylor"].remaining - 50.0) < 1.0  # global selection over the layers, as asked
    results = open_store(tmp_path / "store")
    control = results.states(recipe="RandomPruneLike")[0]
    assert control["recipe"]["params"]["evaluate"] is True and "test" in control["metrics"]
    dense = next(m for m in results.states(recipe="Train") if m["depth"] == 1)
    assert control["parent"] == dense["hash"]  # the trained weights, not the initialisation


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_method_parameter_it_does_not_declare_is_refused_and_calibration_where_unread(tmp_path):
    from prunelab.errors import PrunelabError
    from prunelab.spec import load_spec

    shutil.copy(ROOT / "examples" / "my_method.py", tmp_path / "my_method.py")
    sys.path.insert(0, str(tmp_path))
    try:
        import pytest

        with pytest.raises(PrunelabError, match="no parameter 'pwoer'"):
            technique("my_method:Taylor", amount=0.5, method_params={"pwoer": 2.0}).make_method()
        base = "[study]\nname='x'\nseeds=[0]\n[task]\ndataset='digits'\nmodel='lenet_300_100'\n[training]\niterations=10\n"
        with pytest.raises(PrunelabError, match="reads no calibration data"):
            load_spec(_write(tmp_path / "a.toml", base + "[branches.b]\ntechnique='l1_unstructured'\n"
                                                        "calibration={samples=8}\n"))
        with pytest.raises(PrunelabError, match="a reinit control trains fresh weights"):
            load_spec(_write(tmp_path / "b.toml", base + "[branches.b]\nreset='none'\nrounds=1\n"
                                                        "[branches.c]\ncontrol='reinit'\nof='b'\n"))
        with pytest.raises(PrunelabError, match=r'exclude = \["0", "3"\]'):
            prune(build_model("lenet5", (1, 28, 28), 10, seed=0), technique("l1_unstructured", pattern="2:4"))
        with pytest.raises(PrunelabError, match="scores of '1.weight' have shape"):
            from prunelab.pruning import Method

            class Bad(Method):
                def score(self, model, targets, context):
                    return {t.name: torch.ones(3) for t in targets}

            sys.modules["my_method"].Bad = Bad
            prune(build_model("lenet_300_100", (1, 8, 8), 10, seed=0), technique("my_method:Bad", amount=0.5))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_method", None)
