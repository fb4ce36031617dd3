import math

import pytest
import torch

from prunelab import PrunelabError
from prunelab.experiment import Consensus, Experiment, RandomPruneLike, RandomReinit, Train, Transfer
from prunelab.spec import load_spec
from prunelab.study import build_study, mean_ci, summarize

from .experiment_helpers import CONFIG
from .conftest import run_cli_here

TINY = """
[study]
name = "tiny"
store = "STORE"
seeds = [0, 1]

[task]
dataset = "digits"
model = "lenet_300_100"

[training]
iterations = 30
batch_size = 32

[branches.ticket]
technique = "l1_unstructured"
rate = 0.5
output_rate = 0.25
rounds = 2

[branches.late]
rate = 0.5
rounds = 1
rewind_iteration = 10

[branches.tuned]
rate = 0.5
rounds = 1
reset = "finetune"
finetune_lr = 0.0005

[branches.reinit]
control = "reinit"
of = "ticket"

[branches.random]
control = "random_pruning"
of = "ticket"

[transfer.sgd]
branch = "ticket"
round = 2
training = { optimizer = "momentum", lr = 0.01 }
"""


def write_spec(tmp_path, text=TINY, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text.replace("STORE", str(tmp_path / "store")))
    return path


def test_spec_expands_to_a_tree_with_shared_prefixes(tmp_path):
    tree = build_study(load_spec(write_spec(tmp_path)))
    exp = tree.experiment
    dense = [p for p in tree.points if p.branch == "dense"]
    assert len(dense) == 2  # one per seed, shared by all branches
    for p in tree.points:
        if p.branch != "dense":
            lineage = {s.hash for s in p.state.lineage()}
            seed_dense = next(d for d in dense if d.seed == p.seed)
            if p.branch in ("ticket", "late", "tuned", "transfer:sgd", "reinit"):
                assert seed_dense.state.hash in lineage or p.branch == "transfer:sgd"
    # rewind_iteration = 10 splits the dense run: the state at iteration 10 exists and is referenced
    splits = [s for s in exp.states.values() if isinstance(s.recipe, Train) and s.recipe.stop == 10]
    assert len(splits) == 2
    kinds = {type(s.recipe).__name__ for s in exp.states.values()}
    assert {"RandomReinit", "RandomPruneLike", "Finetune", "Transfer", "Rewind", "Prune"} <= kinds
    assert not (tmp_path / "store").exists()  # building the tree writes nothing


def test_study_runs_resumes_and_summarises(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    tree = build_study(spec)
    first = tree.experiment.run()
    assert first.ok
    again = build_study(spec).experiment.run()
    assert again.computed == []
    rows = summarize(tree)
    by = {(r.branch, r.round): r for r in rows}
    # remaining weights follow the geometric schedule: hidden layers 0.25, output 0.5625
    expected = 100 * (0.25 * (64 * 300 + 300 * 100) + 0.5625 * 100 * 10) / (64 * 300 + 300 * 100 + 100 * 10)
    assert by[("ticket", 2)].remaining == pytest.approx(expected, abs=0.05)
    assert by[("reinit", 2)].remaining == pytest.approx(expected, abs=0.05)
    assert by[("random", 2)].remaining == pytest.approx(expected, abs=0.05)
    assert by[("ticket", 1)].n == 2 and not math.isnan(by[("ticket", 1)].ci_low)
    transfer = [p for p in tree.points if p.branch == "transfer:sgd"]
    assert tree.experiment.store.manifest(transfer[0].state.parent.hash)["metrics"]["reinitialised"] == []
    # the summary reads the index's per-state summaries: no manifest opened, the values the manifests hold
    from prunelab.experiment import Store

    reads = []
    original = Store._read_manifest
    Store._read_manifest = lambda self, path: reads.append(path) or original(self, path)
    try:
        assert summarize(tree) == rows and reads == []
    finally:
        Store._read_manifest = original
    ticket = by[("ticket", 2)]
    manifests = [tree.experiment.store.manifest(h) for h in ticket.states]
    assert list(ticket.values) == [m["metrics"]["test"]["accuracy"] for m in manifests]
    assert all(len(m["metrics"].get("curve") or ()) <= 1 for m in manifests) and ticket.early_stopping is None


def test_mean_ci_matches_scipy():
    from scipy import stats

    values = [0.9, 0.92, 0.95, 0.91]
    mean, lo, hi = mean_ci(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 4, scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(ref)
    assert math.isnan(mean_ci([0.5])[1])
    from prunelab.analysis import bootstrap_ci

    many = [0.9 + 0.01 * (i % 5) for i in range(30)]  # from 30 seeds on: the bootstrap interval
    assert mean_ci(many) == pytest.approx(bootstrap_ci(many))


@pytest.mark.parametrize(
    "old, new",
    [
        ('technique = "l1_unstructured"', 'technique = "l7_unstructured"'),
        ("rate = 0.5\noutput_rate", "rate = 1.5\noutput_rate"),
        ("rewind_iteration = 10", "rewind_iteration = 30"),
        ('of = "ticket"\n\n[branches.random]', 'of = "nope"\n\n[branches.random]'),
        ("[branches.tuned]", "[branches.ticket]"),
        ("seeds = [0, 1]", "seeds = [0, 0]"),
        ('[task]', '[task]\ncolour = "red"'),
    ],
)
def test_bad_specs_are_one_clear_error_and_write_nothing(tmp_path, old, new):
    text = TINY.replace(old, new, 1)
    path = write_spec(tmp_path, text)
    out = run_cli_here("run", str(path))
    assert out.returncode == 2, out.stdout
    assert str(path) in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists()


def test_bad_spec_messages_name_the_key(tmp_path):
    cases = {
        'technique = "l7_unstructured"': "unknown pruning technique 'l7_unstructured'; did you mean 'l1_unstructured'",
        "rate = 1.5\noutput_rate": "branches.ticket.rate: Input should be less than 1",
        "rewind_iteration = 30": "rewind_iteration: 30 is not before the end of training (30 iterations)",
        '[task]\ncolour = "red"': "task.colour: Extra inputs are not permitted",
    }
    originals = ['technique = "l1_unstructured"', "rate = 0.5\noutput_rate", "rewind_iteration = 10", "[task]"]
    for (new, message), old in zip(cases.items(), originals):
        with pytest.raises(PrunelabError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_spec(write_spec(tmp_path, TINY.replace(old, new, 1)))
    with pytest.raises(PrunelabError, match="not valid TOML"):
        load_spec(write_spec(tmp_path, TINY.replace("[branches.tuned]", "[branches.ticket]")))


def test_controls_and_consensus_recipes(tmp_path, digits):
    exp = Experiment(tmp_path / "s")
    from prunelab.experiment import Prune
    from prunelab.pruning import technique

    roots = [exp.root(dataset="digits", model="lenet_300_100", seed=s) for s in (0, 1, 2)]
    pruned = [r.then(Train(CONFIG)).then(Prune(technique("global_unstructured", amount=0.5))) for r in roots]
    target = roots[0]
    tickets = {tau: target.then(Consensus(sources=tuple(pruned), tau=tau)) for tau in (1.0, 0.66, 0.33)}
    like = target.then(RandomPruneLike(like=pruned[1]))
    reinit = pruned[0].then(RandomReinit())
    assert exp.run().ok
    masks = [p.load().masks for p in pruned]
    for tau, ticket in tickets.items():
        got = ticket.load().masks
        for name in got:  # brute-force vote
            votes = sum(m[name].float() for m in masks) / 3
            assert torch.equal(got[name], votes >= tau - 1e-9)
    inter = tickets[1.0].load().metrics["sparsity"]
    assert inter > tickets[0.66].load().metrics["sparsity"] > tickets[0.33].load().metrics["sparsity"]
    like_masks = like.load().masks
    for name, keep in masks[1].items():
        assert int(like_masks[name].sum()) == int(keep.sum()) and not torch.equal(like_masks[name], keep)
    r = reinit.load()
    assert all(torch.equal(r.masks[n], masks[0][n]) for n in masks[0])
    assert not torch.equal(r.weights["1.weight"], roots[0].load().weights["1.weight"])


def test_transfer_masks_mismatched_layers_at_the_tickets_sparsity(tmp_path):
    exp = Experiment(tmp_path / "s")
    from prunelab.experiment import Prune
    from prunelab.pruning import technique

    source = exp.root(dataset="mnist1d", model="lenet_300_100", seed=0)
    ticket = source.then(Train(CONFIG)).then(Prune(technique("l1_unstructured", amount=0.5)))
    target = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    moved = target.then(Transfer(source=ticket))
    assert exp.run().ok
    snap, theirs = moved.load(), ticket.load()
    assert snap.metrics["reinitialised"] == ["1.weight"]  # 40 inputs vs 64: the first layer
    assert snap.metrics["resampled_masks"] == ["1.weight"]
    # the re-initialised layer keeps the target's init, under a mask with the ticket's kept fraction
    assert torch.equal(snap.weights["1.weight"], target.load().weights["1.weight"])
    assert snap.masks["1.weight"].shape == (300, 64)
    assert int(snap.masks["1.weight"].sum()) == round(64 * 300 * float(theirs.masks["1.weight"].float().mean()))
    from prunelab.study import remaining_percent

    # so the transferred ticket has the ticket's sparsity (50 % in every layer)
    assert remaining_percent(exp.store.manifest(moved.hash)) == pytest.approx(50.0, abs=0.01)
    assert set(snap.masks) == {"1.weight", "3.weight", "5.weight"} and snap.dataset == "digits"
    assert torch.equal(snap.weights["3.weight"], theirs.weights["3.weight"])
    assert torch.equal(snap.masks["3.weight"], theirs.masks["3.weight"])


EXAMPLES = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_specs_validate_and_expand(path, tmp_path, monkeypatch):
    from prunelab import DataUnavailableError

    monkeypatch.syspath_prepend(str(path.parent))  # examples/my_method.toml names examples/my_method.py

    text = path.read_text()
    if "\n[gan]" in text or "\n[flow]" in text:  # a shower-generator study: its own spec and tree
        from prunelab.hep.gan_study import build_gan_study, load_gan_spec

        with pytest.raises(PrunelabError, match="calo train "):
            load_spec(path)
        exp = build_gan_study(load_gan_spec(path), tmp_path / "store")
        # GAN: 1 seed × (root, 7 checkpoints, dense control, 4 IMP and 4 one-shot prune + fine-tune pairs);
        # flow: 2 seeds × (root, 2 checkpoints, dense control, 3 IMP and 3 one-shot pairs)
        expected = {"calogan_eplus": 1 + 7 + 1 + 16, "caloflow_eplus": 2 * (1 + 2 + 1 + 12)}[path.stem]
        assert len(exp.states) == expected and not (tmp_path / "store").exists()
        return
    try:
        tree = build_study(load_spec(path), tmp_path / "store")
    except DataUnavailableError as exc:  # the MNIST examples, without a data mirror
        pytest.skip(str(exc).splitlines()[0])
    assert tree.points and not (tmp_path / "store").exists()


def test_cli_run_prints_the_summary_and_writes_csv(tmp_path):
    text = TINY.split("[branches.late]")[0]  # seeds 0, 1; one two-round branch
    path = write_spec(tmp_path, text)
    csv = tmp_path / "summary.csv"
    out = run_cli_here("run", str(path), "--csv", str(csv))
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and "ticket" in out.stdout and "already stored" in out.stdout
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("config,branch,round,remaining_percent") and len(lines) == 1 + 3  # dense + 2 rounds
    again = run_cli_here("run", str(path))
    assert "0 computed" in again.stdout


def test_init_writes_a_spec_that_validates(tmp_path):
    target = tmp_path / "study.toml"
    assert run_cli_here("init", str(target)).returncode == 0
    load_spec(target)
    out = run_cli_here("init", str(target))
    assert out.returncode == 2 and "already exists" in out.stderr
