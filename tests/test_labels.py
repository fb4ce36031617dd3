"""Study rows as data: labels are written from a structured row (prunelab.labels) in one place, the
study record stores the structure, and tables read it; the labels people read stay the strings they were."""

import hashlib
import json
import tomllib

import pytest

from prunelab import PrunelabError, labels
from prunelab.spec import duplicate_taus, max_round, parse_spec, study_roles, study_rows
from prunelab.study import build_study, comparison_pairs

# Two studies that between them make every kind of row: branches and both controls, a consensus on three
# targets (one of them not a source; tau 0.6 needs the votes tau 1 needs), transfers with and without
# controls and to another task, a sweep; and a consensus across seeds without controls.
SPECS = {
"full": '''
[study]
name = "g"
store = "STORE"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 30
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 2
[branches.late]
rate = 0.5
rounds = 1
rewind_iteration = 10
[branches.reinit]
control = "reinit"
of = "ticket"
[branches.random]
control = "random_pruning"
of = "ticket"
[consensus]
sources = "tasks"
datasets = ["digits[keep=3:0.5]"]
train_on = ["digits", "digits[keep=3:0.5]", "digits[longtail=0.5]"]
rate = 0.5
rounds = 1
taus = [1.0, 0.5, 0.6]
[transfer.sgd]
branch = "ticket"
round = 2
training = { optimizer = "momentum", lr = 0.01 }
[transfer.other]
branch = "ticket"
round = 1
dataset = "digits[longtail=0.5]"
[sweep]
"training.lr" = [0.001, 0.002]
''',
"seeds": '''
[study]
name = "s"
store = "STORE"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 30
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 1
[consensus]
sources = "seeds"
rate = 0.5
rounds = 2
controls = false
taus = [1.0, 0.25]
[transfer.t]
branch = "ticket"
round = 1
controls = false
''',
}


# What main printed for these specs before rows were data (commit 4a49ae3): every row's label, kind,
# control-of, task and deepest round, the planned comparisons, the duplicate taus, and a digest of every
# point as [label, kind, of, dataset, round, seed, config, state hash[:16]] (same states, same roles).
GOLDEN = {'full': {'rows': {'dense': ('dense', None, 'digits', 0),
                   'ticket': ('imp', None, 'digits', 2),
                   'late': ('imp', None, 'digits', 1),
                   'reinit': ('reinit', 'ticket', 'digits', 2),
                   'random': ('random', 'ticket', 'digits', 2),
                   'transfer:sgd': ('transfer', None, 'digits', 2),
                   'transfer:sgd dense': ('dense', 'transfer:sgd', 'digits', 0),
                   'transfer:sgd random': ('random', 'transfer:sgd', 'digits', 2),
                   'transfer:other': ('transfer', None, 'digits[longtail=0.5]', 1),
                   'transfer:other dense': ('dense', 'transfer:other', 'digits[longtail=0.5]', 0),
                   'transfer:other random': ('random', 'transfer:other', 'digits[longtail=0.5]', 1),
                   'own ticket on digits': ('imp', None, 'digits', 1),
                   'consensus tau=1 on digits': ('consensus', None, 'digits', 1),
                   'random masks like tau=1 on digits': ('random', 'consensus tau=1 on digits', 'digits', 1),
                   'consensus tau=0.5 on digits': ('consensus', None, 'digits', 1),
                   'random masks like tau=0.5 on digits': ('random', 'consensus tau=0.5 on digits', 'digits', 1),
                   'dense on digits[keep=3:0.5]': ('dense', None, 'digits[keep=3:0.5]', 0),
                   'own ticket on digits[keep=3:0.5]': ('imp', None, 'digits[keep=3:0.5]', 1),
                   'consensus tau=1 on digits[keep=3:0.5]': ('consensus', None, 'digits[keep=3:0.5]', 1),
                   'random masks like tau=1 on digits[keep=3:0.5]': ('random',
                                                                     'consensus tau=1 on digits[keep=3:0.5]',
                                                                     'digits[keep=3:0.5]',
                                                                     1),
                   'consensus tau=0.5 on digits[keep=3:0.5]': ('consensus', None, 'digits[keep=3:0.5]', 1),
                   'random masks like tau=0.5 on digits[keep=3:0.5]': ('random',
                                                                       'consensus tau=0.5 on digits[keep=3:0.5]',
                                                                       'digits[keep=3:0.5]',
                                                                       1),
                   'dense on digits[longtail=0.5]': ('dense', None, 'digits[longtail=0.5]', 0),
                   'consensus tau=1 on digits[longtail=0.5]': ('consensus', None, 'digits[longtail=0.5]', 1),
                   'random masks like tau=1 on digits[longtail=0.5]': ('random',
                                                                       'consensus tau=1 on digits[longtail=0.5]',
                                                                       'digits[longtail=0.5]',
                                                                       1),
                   'consensus tau=0.5 on digits[longtail=0.5]': ('consensus', None, 'digits[longtail=0.5]', 1),
                   'random masks like tau=0.5 on digits[longtail=0.5]': ('random',
                                                                         'consensus tau=0.5 on '
                                                                         'digits[longtail=0.5]',
                                                                         'digits[longtail=0.5]',
                                                                         1)},
          'pairs': [('ticket', 'dense', 0),
                    ('ticket', 'reinit'),
                    ('ticket', 'random'),
                    ('late', 'dense', 0),
                    ('consensus tau=1 on digits', 'random masks like tau=1 on digits'),
                    ('consensus tau=1 on digits', 'dense', 0),
                    ('consensus tau=1 on digits', 'own ticket on digits'),
                    ('consensus tau=0.5 on digits', 'random masks like tau=0.5 on digits'),
                    ('consensus tau=0.5 on digits', 'dense', 0),
                    ('consensus tau=0.5 on digits', 'own ticket on digits'),
                    ('consensus tau=1 on digits[keep=3:0.5]', 'random masks like tau=1 on digits[keep=3:0.5]'),
                    ('consensus tau=1 on digits[keep=3:0.5]', 'dense on digits[keep=3:0.5]', 0),
                    ('consensus tau=1 on digits[keep=3:0.5]', 'own ticket on digits[keep=3:0.5]'),
                    ('consensus tau=0.5 on digits[keep=3:0.5]', 'random masks like tau=0.5 on digits[keep=3:0.5]'),
                    ('consensus tau=0.5 on digits[keep=3:0.5]', 'dense on digits[keep=3:0.5]', 0),
                    ('consensus tau=0.5 on digits[keep=3:0.5]', 'own ticket on digits[keep=3:0.5]'),
                    ('consensus tau=1 on digits[longtail=0.5]', 'random masks like tau=1 on digits[longtail=0.5]'),
                    ('consensus tau=1 on digits[longtail=0.5]', 'dense on digits[longtail=0.5]', 0),
                    ('consensus tau=0.5 on digits[longtail=0.5]',
                     'random masks like tau=0.5 on digits[longtail=0.5]'),
                    ('consensus tau=0.5 on digits[longtail=0.5]', 'dense on digits[longtail=0.5]', 0),
                    ('transfer:sgd', 'transfer:sgd dense', 0),
                    ('transfer:sgd', 'transfer:sgd random'),
                    ('transfer:other', 'transfer:other dense', 0),
                    ('transfer:other', 'transfer:other random')],
          'duplicates': {'consensus tau=0.6 on digits': 'consensus tau=1 on digits',
                         'random masks like tau=0.6 on digits': 'random masks like tau=1 on digits',
                         'consensus tau=0.6 on digits[keep=3:0.5]': 'consensus tau=1 on digits[keep=3:0.5]',
                         'random masks like tau=0.6 on digits[keep=3:0.5]': 'random masks like tau=1 on '
                                                                            'digits[keep=3:0.5]',
                         'consensus tau=0.6 on digits[longtail=0.5]': 'consensus tau=1 on digits[longtail=0.5]',
                         'random masks like tau=0.6 on digits[longtail=0.5]': 'random masks like tau=1 on '
                                                                              'digits[longtail=0.5]'},
          'digest': '990d11dd2839660fab2725affc040707a668293d328e2e78a3c5fcf9fc6543df'},
 'seeds': {'rows': {'dense': ('dense', None, 'digits', 0),
                    'ticket': ('imp', None, 'digits', 1),
                    'transfer:t': ('transfer', None, 'digits', 1),
                    'own ticket on digits': ('imp', None, 'digits', 2),
                    'consensus tau=1 on digits': ('consensus', None, 'digits', 2),
                    'consensus tau=0.25 on digits': ('consensus', None, 'digits', 2)},
           'pairs': [('ticket', 'dense', 0),
                     ('consensus tau=1 on digits', 'dense', 0),
                     ('consensus tau=1 on digits', 'own ticket on digits'),
                     ('consensus tau=0.25 on digits', 'dense', 0),
                     ('consensus tau=0.25 on digits', 'own ticket on digits')],
           'duplicates': {},
           'digest': '3d14729faa6d352949bde19f73622b830e5b79cb42379fcb7a24170d10747e9f'}}


def tree_of(key, tmp_path):
    spec = parse_spec(tomllib.loads(SPECS[key].replace("STORE", str(tmp_path / "store"))))
    return spec, build_study(spec)


@pytest.mark.parametrize("key", list(SPECS))
def test_labels_and_states_are_the_strings_main_printed(key, tmp_path):
    spec, tree = tree_of(key, tmp_path)
    golden = GOLDEN[key]
    points = [[p.branch, p.kind, p.of, p.dataset, p.round, p.seed, p.config, p.state.hash[:16]] for p in tree.points]
    assert hashlib.sha256(json.dumps(points).encode()).hexdigest() == golden["digest"]
    assert {label: kind for label, (kind, *_) in golden["rows"].items()} == study_roles(spec)
    assert list(golden["rows"]) == list(dict.fromkeys(p.branch for p in tree.points))
    for label, (kind, of, dataset, deepest) in golden["rows"].items():
        assert max_round(spec, label) == deepest
    assert [tuple(p) for p in comparison_pairs(spec)] == golden["pairs"]
    assert duplicate_taus(spec) == golden["duplicates"]


def test_the_record_holds_each_rows_structure_and_it_rebuilds_the_label(tmp_path):
    spec, tree = tree_of("full", tmp_path)
    record = next(iter(tree.experiment.documents.values()))
    assert [r["label"] for r in record["rows"]] == list(dict.fromkeys(p["branch"] for p in record["points"]))
    for entry in record["rows"]:
        row = labels.Row(**{k: v for k, v in entry.items() if k != "label"})
        assert row.label == entry["label"] and row == study_rows(spec)[entry["label"]]
        assert all(p["kind"] == row.kind and p["of"] == row.of for p in record["points"] if p["branch"] == row.label)
    by_label = {r["label"]: r for r in record["rows"]}
    assert by_label["consensus tau=0.5 on digits[keep=3:0.5]"] == {
        "label": "consensus tau=0.5 on digits[keep=3:0.5]", "section": "consensus", "kind": "consensus", "tau": 0.5,
        "task": "digits[keep=3:0.5]"}
    assert by_label["reinit"] == {"label": "reinit", "section": "branches", "kind": "reinit", "name": "reinit",
                                  "subject": "ticket"}
    assert by_label["transfer:other random"]["name"] == "other"
    # a duplicate tau is said once, not once per target
    assert tree.notes == ["consensus: consensus tau=0.6 gives the same mask as consensus tau=1 with 2 sources; it "
                          "is run once, as consensus tau=1"]


def test_labels_from_rows():
    assert labels.dense().label == "dense" and labels.dense().of is None
    assert labels.branch("ticket").label == "ticket"
    assert labels.branch("rnd", "random", "ticket").of == "ticket"
    assert labels.consensus(0.25, "mnist").label == "consensus tau=0.25 on mnist"
    assert labels.consensus_random(1.0, "mnist").label == "random masks like tau=1 on mnist"
    assert labels.consensus_random(1.0, "mnist").of == "consensus tau=1 on mnist"
    assert labels.consensus_dense("mnist").label == "dense on mnist" and labels.own_ticket("m").label == "own ticket on m"
    assert [labels.transfer("t", k).label for k in ("transfer", "dense", "random")] == [
        "transfer:t", "transfer:t dense", "transfer:t random"]
    assert labels.transfer("t", "random").of == "transfer:t" and labels.transfer("t").of is None


@pytest.mark.parametrize("extra, where", [
    ('[branches.dense]\nrate = 0.5\n', "branches.dense"),
    ('[branches.t]\nrate = 0.5\n[branches."transfer:a"]\nrate = 0.5\n[transfer.a]\nbranch = "t"\nround = 1\n',
     "transfer.a"),
])
def test_two_rows_with_one_label_are_refused(extra, where):
    base = SPECS["seeds"].split("[branches.ticket]")[0]
    with pytest.raises(PrunelabError, match=f"{where}: its row would be labelled"):
        parse_spec(tomllib.loads(base + extra))


SMALL = """
[study]
name = "small"
store = "STORE"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 8
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 1
[branches.reinit]
control = "reinit"
of = "ticket"
[transfer.sgd]
branch = "ticket"
round = 1
training = { optimizer = "sgd", lr = 0.01 }
"""


def test_tables_read_the_rows_and_a_record_written_before_them_reads_the_same(tmp_path):
    import pandas as pd

    from prunelab.analysis.tables import class_impact, study_points
    from prunelab.experiment import open_store

    from .conftest import run_cli_here

    spec = parse_spec(tomllib.loads(SMALL.replace("STORE", str(tmp_path / "store"))))
    tree = build_study(spec)
    assert tree.experiment.run().ok
    new = study_points(open_store(tmp_path / "store"))
    structure = {r: tuple(None if pd.isna(v) else v for v in fields)
                 for r, *fields in zip(new.branch, new.section, new.row_name, new.tau)}
    assert structure == {"dense": ("dense", None, None), "ticket": ("branches", "ticket", None),
                         "reinit": ("branches", "reinit", None), "transfer:sgd": ("transfer", "sgd", None),
                         "transfer:sgd dense": ("transfer", "sgd", None), "transfer:sgd random": ("transfer", "sgd", None)}
    compare = run_cli_here("compare", str(tmp_path / "store"))
    impact = class_impact(new)
    assert set(impact.branch) == set(new.branch) - {"dense"}  # every other row against the study's dense model
    # the same store as an earlier prunelab wrote it: a record without rows
    store = tree.experiment.store
    (name, record), = store.documents().items()
    store.write_document(name, {k: v for k, v in record.items() if k != "rows"})
    old = study_points(open_store(tmp_path / "store"))
    assert old.drop(columns=["section", "row_name", "tau"]).equals(new.drop(columns=["section", "row_name", "tau"]))
    assert list(old.section.fillna("")) == ["dense" if b == "dense" else "" for b in old.branch]
    assert class_impact(old).equals(impact)
    again = run_cli_here("compare", str(tmp_path / "store"))
    assert again.returncode == compare.returncode == 0 and again.stdout == compare.stdout
    for label in ("transfer:sgd random", "transfer:sgd dense", "reinit"):
        assert label in compare.stdout
    for hostile in ({"label": "x", "section": "elsewhere", "kind": "imp"},
                    {"label": "x\x1b]0;pwned\x07", "section": "branches", "kind": "imp"},
                    {"label": "x", "section": "consensus", "kind": "consensus", "tau": "1"}):
        store.write_document(name, {**record, "rows": [hostile]})
        with pytest.raises(PrunelabError, match=r"rows\[0\] must be a study row"):
            study_points(open_store(tmp_path / "store"))
