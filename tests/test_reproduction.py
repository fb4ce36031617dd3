"""What reproducing the seed papers needs: real MNIST from recompressed files, resized tasks that share
one architecture, per-layer-type pruning rates, the paper's cross-task consensus, transfer with
target-side controls, and paired effects over seeds."""

import bz2
import gzip
import hashlib
import lzma
import math

import numpy as np
import pytest
import torch

from prunelab import ChecksumError, DataSource, PrunelabError, load_dataset
from prunelab.experiment import Consensus, RandomPruneLike, Transfer
from prunelab.spec import parse_spec
from prunelab.study import (
    PairedEffect,
    SummaryRow,
    build_study,
    paired_effects,
    remaining_percent,
    summarize,
)
from prunelab.tasks import datasets as ds
from prunelab.tasks.datasets import dataset_variant, parse_variant, reshape_inputs
from prunelab.tasks.download import RemoteFile

from .conftest import SHARED_DATA
from .test_datasets import make_fake_mnist

# ---------------------------------------------------------------- MNIST from uncompressed / recompressed files


@pytest.fixture
def recompressed_mnist(monkeypatch, tmp_path):
    """Fake MNIST whose files are known only by the MD5s of their uncompressed content
    (the published .gz MD5s are those of other bytes), as in ../shared/data."""
    source = tmp_path / "gz"
    _, arrays = make_fake_mnist(source)
    raw = {name: gzip.decompress((source / name).read_bytes()) for name in arrays}
    spec = ds.IDX_DATASETS["mnist"]
    files = {k: RemoteFile(f.filename, "0" * 32, f.urls, hashlib.md5(raw[f.filename]).hexdigest())
             for k, f in spec.files.items()}
    monkeypatch.setitem(ds.IDX_DATASETS, "mnist", ds.IdxSpec(files, spec.class_names, spec.aliases))
    return raw, arrays


@pytest.mark.parametrize("form", ["xz", "bz2", "plain", "regz"])
def test_mnist_reads_uncompressed_and_recompressed_copies(recompressed_mnist, tmp_path, form):
    raw, arrays = recompressed_mnist
    mirror = tmp_path / "mirror" / "mnist"
    mirror.mkdir(parents=True)
    for gz_name, content in raw.items():
        stem = gz_name[:-3]
        if form == "xz":
            (mirror / (stem + ".xz")).write_bytes(lzma.compress(content))
        elif form == "bz2":
            (mirror / (stem + ".bz2")).write_bytes(bz2.compress(content))
        elif form == "plain":
            (mirror / stem).write_bytes(content)
        else:  # a .gz with other bytes than the published one (another compression level)
            (mirror / gz_name).write_bytes(gzip.compress(content, compresslevel=1, mtime=123))
    data = load_dataset("mnist", source=DataSource(data_dir=tmp_path / "c", mirror=tmp_path / "mirror",
                                                   download=False), validation=20)
    np.testing.assert_array_equal(data.test.y.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert len(data.train) + len(data.validation) == 120


def test_a_recompressed_copy_with_other_content_is_refused_naming_the_file(recompressed_mnist, tmp_path):
    raw, _ = recompressed_mnist
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for gz_name, content in raw.items():
        if gz_name.startswith("t10k-labels"):
            content = content[:-1] + bytes([(content[-1] + 1) % 10])  # one label changed
        (mirror / (gz_name[:-3] + ".xz")).write_bytes(lzma.compress(content))
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.xz: checksum mismatch \(decompressed md5"):
        load_dataset("mnist", source=DataSource(data_dir=tmp_path / "c", mirror=mirror, download=False))
    (mirror / "t10k-labels-idx1-ubyte.xz").write_bytes(b"not xz at all")
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.xz: cannot decompress"):
        load_dataset("mnist", source=DataSource(data_dir=tmp_path / "c", mirror=mirror, download=False))


@pytest.fixture(scope="module")
def real_mnist(shared_mirror):
    """The real MNIST, read once from the shared mirror (xz) for the tests that need it."""
    assert shared_mirror is not None  # the test session uses the shared data as its mirror
    return load_dataset("mnist")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data mirror not present")
def test_real_mnist_from_the_shared_mirror_matches_its_published_statistics(real_mnist):
    """The four real files (xz), verified by the MD5s of the uncompressed originals; the label counts
    and pixel statistics are those the mirror's README states."""
    data = real_mnist
    train_counts = np.bincount(np.concatenate([data.train.y.numpy(), data.validation.y.numpy()]), minlength=10)
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(data.test.y.numpy(), minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                                       974, 1009]
    assert (len(data.train), len(data.validation), len(data.test)) == (55_000, 5_000, 10_000)
    from prunelab.tasks.formats import read_idx

    pixels = read_idx(SHARED_DATA / "mnist" / "train-images-idx3-ubyte.xz") / 255.0
    assert pixels.shape == (60000, 28, 28)
    assert pixels.mean() == pytest.approx(0.1307, abs=1e-4) and pixels.std() == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data mirror not present")
def test_lenet_learns_real_mnist(real_mnist):
    from prunelab import TrainConfig, build_model, evaluate, train

    data = real_mnist
    model = build_model("lenet_300_100", data.input_shape, 10, seed=0)
    train(model, data, TrainConfig(iterations=300, batch_size=60), seed=0)
    assert evaluate(model, data.test, data.class_names).accuracy > 0.9


# ---------------------------------------------------------------- resized variants


def test_variant_names_round_trip_and_bad_options_are_named():
    assert dataset_variant("digits", [28, 28]) == "digits[resize=28x28]"
    assert dataset_variant("digits", [28, 28], 3) == "digits[resize=28x28,channels=3]"
    assert dataset_variant("digits") == "digits"
    assert parse_variant("mnist1d[resize=64]") == ("mnist1d", (64,), None)
    with pytest.raises(PrunelabError, match="unknown option 'size'"):
        parse_variant("digits[size=3]")
    with pytest.raises(PrunelabError, match="bad resize '0x4'"):
        parse_variant("digits[resize=0x4]")
    with pytest.raises(PrunelabError, match="resize \\[28\\] has 1 sizes for 2-d inputs"):
        load_dataset("digits[resize=28]")


def test_resize_interpolates_and_replicates_channels():
    # a linear ramp along the width stays a (finer) linear ramp: bilinear with half-pixel centres
    ramp = np.tile(np.arange(8, dtype=np.float32), (1, 1, 8, 1))
    up = reshape_inputs("t", ramp, (8, 16), None)[0, 0]
    centres = (np.arange(16) + 0.5) / 2 - 0.5  # where each output pixel samples the input
    np.testing.assert_allclose(up[3], np.clip(centres, 0, 7), atol=1e-5)
    # shrinking averages (antialiasing): a checkerboard becomes flat grey
    board = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)[None, None]
    small = reshape_inputs("t", board, (4, 4), None)[0, 0]
    np.testing.assert_allclose(small[1:3, 1:3], 0.5, atol=1e-6)  # corners: the filter is cut at the border
    np.testing.assert_allclose(small, 0.5, atol=0.011)
    three = reshape_inputs("t", ramp, None, 3)
    assert three.shape == (1, 3, 8, 8) and all(np.array_equal(three[0, c], ramp[0, 0]) for c in range(3))
    assert reshape_inputs("t", three, None, 1).shape == (1, 1, 8, 8)
    with pytest.raises(PrunelabError, match="cannot turn 3 channels into 2"):
        reshape_inputs("t", three, None, 2)


def test_resized_digits_is_a_task_of_its_own():
    data = load_dataset("digits[resize=28x28,channels=3]")
    assert data.name == "digits[resize=28x28,channels=3]" and data.input_shape == (3, 28, 28)
    plain = load_dataset("digits")
    assert len(data.test) == len(plain.test) and torch.equal(data.test.y, plain.test.y)


# ---------------------------------------------------------------- per-layer rates

def _study(dataset: str, model: str, seeds: list[int]) -> str:
    """The [study] and [task] sections of a test spec (STORE is replaced by a temporary folder)."""
    return f'[study]\nstore = "STORE"\nseeds = {seeds}\n[task]\ndataset = "{dataset}"\nmodel = "{model}"\n'


RATES = _study("digits", "lenet5", [0]) + """[training]
iterations = 20
[branches.fc]
technique = "l1_unstructured"
rate = 0.2
rates = { conv = 0.1, linear = 0.2, output = 0.1, "7" = 0.3 }
exclude = ["0"]
rounds = 2
"""


def test_rates_by_layer_type_name_and_output_match_brute_force(tmp_path):
    spec = parse_spec(__import__("tomllib").loads(RATES.replace("STORE", str(tmp_path / "s"))))
    tree = build_study(spec)
    assert tree.experiment.run().ok
    pruned = [s for s in tree.experiment.states.values() if type(s.recipe).__name__ == "Prune"]
    second = max(pruned, key=lambda s: s.depth).load()
    # lenet5 on 1x8x8: 0 conv(6), 3 conv(16), 7 fc(120), 9 fc(84), 11 fc(10 = output);
    # the most specific key wins: output (11) and a name (7) over the type (linear)
    shapes = {k: v.shape for k, v in second.weights.items() if k.endswith("weight")}
    expected_rate = {"3.weight": 0.1, "7.weight": 0.3, "9.weight": 0.2, "11.weight": 0.1}
    names = sorted(second.masks)
    assert "0.weight" not in names  # excluded
    for name, rate in expected_rate.items():
        n = math.prod(shapes[name])
        after_one = n - round(rate * n)
        assert int(second.masks[name].sum()) == after_one - round(rate * after_one), name


def test_rate_keys_are_checked_against_the_model(tmp_path):
    bad = RATES.replace('"7" = 0.3', '"features.*" = 0.3').replace("STORE", str(tmp_path / "s"))
    with pytest.raises(PrunelabError, match=r"branches\.fc: override 'features\.\*' matches no selected module"):
        build_study(parse_spec(__import__("tomllib").loads(bad)))
    with pytest.raises(PrunelabError, match="output_rate' or rates.output"):
        parse_spec(__import__("tomllib").loads(RATES.replace("rounds = 2", "rounds = 2\noutput_rate = 0.1")))
    with pytest.raises(PrunelabError, match="must be a fraction in \\(0, 1\\)"):
        parse_spec(__import__("tomllib").loads(RATES.replace("conv = 0.1", "conv = 1.0")))


# ---------------------------------------------------------------- consensus as the paper defines it

CONSENSUS = _study("digits", "lenet_300_100", [0, 1]) + """[training]
iterations = 40
batch_size = 32
[consensus]
datasets = ["mnist1d[resize=64]"]
train_on = ["digits"]
rate = 0.5
rounds = 2
taus = [1.0, 0.5]
"""


def _spec(text, tmp_path):
    return parse_spec(__import__("tomllib").loads(text.replace("STORE", str(tmp_path / "s"))))


def test_consensus_intersects_the_tasks_of_one_seed_from_one_initialisation(tmp_path):
    # an IMP branch with the consensus's own technique: its states are also the consensus sources on digits
    branch = '[branches.imp]\ntechnique = "global_unstructured"\nrate = 0.5\nrounds = 2\n'
    tree = build_study(_spec(CONSENSUS + branch + '[[hypotheses]]\nclaim = "consensus tau=1 on digits > '
                             'random masks like tau=1 on digits"\n', tmp_path))
    exp = tree.experiment
    assert exp.run().ok
    tickets = [s for s in exp.states.values() if isinstance(s.recipe, Consensus)]
    assert len(tickets) == 4  # 2 seeds x 2 taus
    for ticket in tickets:
        seed = ticket.parent.recipe.seed
        sources = [exp.states[r.hash] for r in ticket.recipe.sources]
        # one source per task, all of this seed, all from the identical initialisation
        roots = [src.lineage()[0] for src in sources]
        assert sorted(r.recipe.dataset for r in roots) == ["digits", "mnist1d[resize=64]"]
        assert {r.recipe.seed for r in roots} == {seed}
        w = [r.load().weights for r in roots]
        assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
        masks = [src.load().masks for src in sources]
        got = ticket.load().masks
        for name in got:
            if ticket.recipe.tau == 1.0:  # strict intersection
                assert torch.equal(got[name], masks[0][name] & masks[1][name])
            else:  # kept by at least one of two
                assert torch.equal(got[name], masks[0][name] | masks[1][name])
    rows = {(r.branch, r.round): r for r in summarize(tree)}
    assert {"consensus tau=1 on digits", "random masks like tau=1 on digits", "own ticket on digits"} <= {
        b for b, _ in rows}
    # the control has the consensus's sparsity, and the two are separate rows of 2 seeds each
    assert rows[("consensus tau=1 on digits", 2)].n == rows[("random masks like tau=1 on digits", 2)].n == 2
    assert rows[("consensus tau=1 on digits", 2)].remaining == pytest.approx(
        rows[("random masks like tau=1 on digits", 2)].remaining, abs=0.01)
    controls = [s for s in exp.states.values() if isinstance(s.recipe, RandomPruneLike)]
    for c in controls:
        theirs, mine = c.recipe.like.load().masks, c.load().masks
        assert all(int(mine[n].sum()) == int(theirs[n].sum()) for n in theirs)
    # read back from the store's study record, not from tags: the dense reference and both IMP rounds are
    # there although their states are consensus sources, and the shared state has a row per role
    from prunelab.analysis.effects import compare_points
    from prunelab.analysis.tables import study_points
    from prunelab.experiment import open_store

    points = study_points(open_store(tmp_path / "s"))
    assert set(points[points.branch == "imp"]["round"]) == {1, 2} and len(points[points.branch == "dense"]) == 2
    own = points[points.branch == "own ticket on digits"].set_index("seed")["hash"]
    imp = points[(points.branch == "imp") & (points["round"] == 2)].set_index("seed")["hash"]
    assert own.to_dict() == imp.to_dict()
    assert set(points[points.branch == "random masks like tau=1 on digits"]["of"]) == {"consensus tau=1 on digits"}
    table = compare_points(points)
    pairs = set(zip(table.a, table.b))
    assert {("consensus tau=1 on digits", "random masks like tau=1 on digits"), ("consensus tau=1 on digits", "dense"),
            ("consensus tau=1 on digits", "own ticket on digits"), ("imp", "dense")} <= pairs
    row = table[(table.a == "consensus tau=1 on digits") & (table.b == "random masks like tau=1 on digits")].iloc[0]
    summary = rows[("consensus tau=1 on digits", 2)], rows[("random masks like tau=1 on digits", 2)]
    assert row.difference == pytest.approx(summary[0].mean - summary[1].mean)
    assert points.attrs["hypotheses"][0]["claim"].startswith("consensus tau=1")


def test_consensus_taus_giving_the_same_mask_run_once():
    from prunelab.spec import effective_taus

    text = CONSENSUS.replace('datasets = ["mnist1d[resize=64]"]', 'datasets = ["mnist1d[resize=64]", "mnist1d[resize=32]"]')
    spec = parse_spec(__import__("tomllib").loads(text.replace("taus = [1.0, 0.5]", "taus = [1.0, 0.34, 0.66, 0.5]")))
    assert effective_taus(spec) == [1.0, 0.34]  # 3 sources: 0.34, 0.66 and 0.5 all need 2 votes
    bad = text.replace("taus = [1.0, 0.5]", "taus = [0.34, 0.66]") + (
        '[[hypotheses]]\nclaim = "consensus tau=0.66 on digits > random masks like tau=0.66 on digits"\n')
    with pytest.raises(PrunelabError, match="same mask as 'consensus tau=0.34 on digits'"):
        parse_spec(__import__("tomllib").loads(bad))


def test_consensus_needs_two_tasks_of_one_architecture(tmp_path):
    with pytest.raises(PrunelabError, match='consensus.datasets: sources = "tasks"'):
        _spec(CONSENSUS.replace('datasets = ["mnist1d[resize=64]"]', "datasets = []"), tmp_path)
    with pytest.raises(PrunelabError, match=r"1\.weight is \(300, 40\) on mnist1d and \(300, 64\) on digits"):
        build_study(_spec(CONSENSUS.replace("mnist1d[resize=64]", "mnist1d"), tmp_path))
    # across seeds stays available, explicitly
    tree = build_study(_spec(CONSENSUS.replace("[consensus]", '[consensus]\nsources = "seeds"'), tmp_path))
    ticket = next(s for s in tree.experiment.states.values() if isinstance(s.recipe, Consensus))
    assert len(ticket.recipe.sources) == 4  # 2 tasks x 2 seeds


# ---------------------------------------------------------------- transfer with controls

TRANSFER = _study("mnist1d", "lenet_300_100", [0, 1]) + """[training]
iterations = 30
batch_size = 32
eval_every = 10
[branches.ticket]
rate = 0.5
rounds = 2
[transfer.digits]
branch = "ticket"
round = 2
dataset = "digits"
"""


def test_transfer_has_dense_and_random_controls_at_the_tickets_sparsity(tmp_path):
    tree = build_study(_spec(TRANSFER, tmp_path))
    assert tree.experiment.run().ok
    rows = {r.branch: r for r in summarize(tree) if r.branch.startswith("transfer")}
    assert set(rows) == {"transfer:digits", "transfer:digits dense", "transfer:digits random"}
    ticket = next(r for r in summarize(tree) if r.branch == "ticket" and r.round == 2)
    # every layer (the re-initialised first one too) at the ticket's sparsity: 25 % remaining
    assert rows["transfer:digits"].remaining == pytest.approx(ticket.remaining, abs=0.01) == pytest.approx(25.0, abs=0.01)
    assert rows["transfer:digits random"].remaining == pytest.approx(25.0, abs=0.01)
    assert rows["transfer:digits dense"].remaining == 100.0
    # the early-stopping iteration (minimum validation loss) is summarised over seeds too
    store = tree.experiment.store
    stops = [store.manifest(h)["metrics"]["early_stopping_iteration"] for h in rows["transfer:digits"].states]
    assert rows["transfer:digits"].early_stopping[0] == pytest.approx(np.mean(stops))
    assert all(s in (10, 20, 30) for s in stops)
    moved = [s for s in tree.experiment.states.values() if isinstance(s.recipe, Transfer)]
    assert all(s.load().dataset == "digits" for s in moved) and len(moved) == 2
    # the report reads a store with unpruned controls (no masks to compare) without failing
    from prunelab.report import build_report

    page = build_report(tmp_path / "s", tmp_path / "r.html")
    assert page.is_file() and "transfer:digits random" in page.read_text()
    assert "Accuracy vs weights remaining on digits" in page.read_text()  # the target task has its own section
    no_controls = build_study(_spec(TRANSFER + "controls = false\n", tmp_path))
    assert {p.branch for p in no_controls.points} == {"dense", "ticket", "transfer:digits"}


# ---------------------------------------------------------------- paired effects


def _row(branch, values, seeds, rnd=1):
    n = len(values)
    return SummaryRow(branch, rnd, 10.0, n, float(np.mean(values)), 0, 0, tuple(values), seeds=tuple(seeds))


def test_paired_effect_finds_a_planted_difference_and_pairs_by_seed():
    from scipy import stats

    rng = np.random.default_rng(0)
    seeds = list(range(8))
    base = rng.normal(0.8, 0.05, 8)  # seed-to-seed spread much larger than the planted effect
    planted = 0.02
    ticket = base + planted + rng.normal(0, 0.003, 8)
    # the control's rows come in another seed order: pairing must follow the seeds
    order = rng.permutation(8)
    rows = [_row("ticket", ticket, seeds), _row("reinit", base[order], [seeds[i] for i in order])]
    (effect,) = paired_effects(rows, [("ticket", "reinit")])
    diffs = ticket - base
    lo, hi = stats.t.interval(0.95, 7, loc=diffs.mean(), scale=stats.sem(diffs))
    assert effect.mean == pytest.approx(diffs.mean()) and (effect.ci_low, effect.ci_high) == pytest.approx((lo, hi))
    assert effect.excludes_zero
    assert effect.effect_size == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    # unpaired, the same numbers could not separate the two: the seed spread swamps the effect
    welch = stats.ttest_ind(ticket, base, equal_var=False)
    assert welch.pvalue > 0.05
    # over many planted studies the 95 % interval covers the planted effect 95 % of the time
    covered = 0
    for _ in range(400):
        base = rng.normal(0.8, 0.05, 5)
        rows = [_row("ticket", base + planted + rng.normal(0, 0.01, 5), range(5)), _row("reinit", base, range(5))]
        (e,) = paired_effects(rows, [("ticket", "reinit")])
        covered += e.ci_low < planted < e.ci_high
    assert 0.92 <= covered / 400 <= 0.98


def test_paired_effect_with_no_effect_covers_zero():
    rng = np.random.default_rng(1)
    base = rng.normal(0.8, 0.05, 6)
    rows = [_row("a", base + rng.normal(0, 0.01, 6), range(6)), _row("b", base, range(6))]
    (effect,) = paired_effects(rows, [("a", "b")])
    assert isinstance(effect, PairedEffect) and not effect.excludes_zero


def test_remaining_percent_counts_transferred_masks():
    manifest = {"weights": {"a.weight": {"shape": [10, 10]}, "b.weight": {"shape": [5, 10]}},
                "masks": {"a.weight": {"kept": 50, "shape": [10, 10]}, "b.weight": {"kept": 25, "shape": [5, 10]}}}
    assert remaining_percent(manifest) == pytest.approx(50.0)


# ---------------------------------------------------------------- instability (linear mode connectivity)


def _trained_snapshot(data, seed=0, iterations=300):
    from prunelab import TrainConfig, train
    from prunelab.experiment.snapshot import ModelSpec, Snapshot

    spec = ModelSpec("lenet_300_100", data.input_shape, 10, None, (("hidden", (32,)),))
    model = spec.build(seed=seed)
    train(model, data, TrainConfig(iterations=iterations, batch_size=60, lr=3e-3), seed=seed)
    return Snapshot.capture(model, spec, data.name)


def test_barrier_is_zero_between_a_model_and_itself_and_positive_between_permuted_twins(digits):
    from prunelab.analysis import error_barrier, interpolate

    a = _trained_snapshot(digits)
    same = error_barrier(a, a, digits.test, digits.class_names, points=5)
    assert same.barrier == 0.0 and len(set(same.errors)) == 1
    # planted: the same function with its hidden units permuted — identical endpoints, and the
    # straight line between them averages unrelated units, so the error rises in the middle
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    w = dict(a.weights)
    w["1.weight"], w["1.bias"], w["3.weight"] = w["1.weight"][perm], w["1.bias"][perm], w["3.weight"][:, perm]
    twin = a.evolve(weights=w)
    result = error_barrier(a, twin, digits.test, digits.class_names, points=5)
    assert result.errors[0] == pytest.approx(result.errors[-1])
    assert result.barrier > 0.05 and max(result.errors) == result.errors[2]
    # interpolation is the weighted mean of the weights (independent computation)
    mid = interpolate(a, twin, 0.25)
    assert torch.allclose(mid.weights["1.weight"], 0.75 * a.weights["1.weight"] + 0.25 * w["1.weight"])


def test_interpolation_refuses_states_with_different_masks(digits):
    from prunelab.analysis import interpolate

    a = _trained_snapshot(digits, iterations=20)
    masked = a.evolve(masks={"1.weight": torch.rand(32, 64) > 0.5})
    with pytest.raises(PrunelabError, match="different masks"):
        interpolate(a, masked, 0.5)


INSTABILITY = _study("digits", "lenet_300_100", [0, 1]) + """[training]
iterations = 60
batch_size = 32
[instability]
at = [0, 30]
"""


def test_instability_section_trains_two_copies_per_start_and_summarises_the_barrier(tmp_path):
    from prunelab.study import instability

    tree = build_study(_spec(INSTABILITY, tmp_path))
    assert tree.experiment.run().ok
    assert len(tree.pairs) == 4  # 2 seeds x 2 start iterations
    for pair in tree.pairs:
        a, b = pair.copies
        assert a.parent is b.parent and a.parent.load().iteration == pair.iteration
        assert {a.recipe.data_seed, b.recipe.data_seed} == {1001, 1002}
        assert not torch.equal(a.load().weights["1.weight"], b.load().weights["1.weight"])
    rows = instability(tree)
    assert [r.iteration for r in rows] == [0, 30] and all(r.n == 2 for r in rows)
    assert all(-1e-9 <= v <= 1 for r in rows for v in r.values)
    with pytest.raises(PrunelabError, match="instability.at: 60 is not before the end of training"):
        _spec(INSTABILITY.replace("at = [0, 30]", "at = [0, 60]"), tmp_path)


def test_paired_effect_against_a_fixed_reference_round():
    dense = _row("dense", [0.90, 0.91, 0.92], range(3), rnd=0)
    rows = [dense] + [_row("ticket", [0.90 + 0.01 * r, 0.91 + 0.01 * r, 0.92 + 0.01 * r + 0.001], range(3), rnd=r)
                      for r in (1, 2)]
    effects = paired_effects(rows, [("ticket", "dense", 0)])
    assert [e.round for e in effects] == [1, 2]
    assert effects[0].mean == pytest.approx(0.01 + 0.001 / 3) and effects[1].mean == pytest.approx(0.02 + 0.001 / 3)
    assert all(e.excludes_zero for e in effects)


def test_paired_effects_are_plain_json_numbers():
    import json

    rows = [_row("a", [0.9, 0.92, 0.95], range(3)), _row("b", [0.8, 0.83, 0.84], range(3))]
    (e,) = paired_effects(rows, [("a", "b")])
    json.dumps({"mean": e.mean, "ci": [e.ci_low, e.ci_high], "d": e.effect_size, "excludes": e.excludes_zero})
