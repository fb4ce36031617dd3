"""Orchestration overhead of the state tree vs a hand-written loop.

Tree: LeNet-300-100 on digits; dense training, then 3 branches (l1, global,
random unstructured) x 5 rounds of prune 20 % → rewind to init → retrain.
Baseline: the same computation written as a plain loop over the same
building blocks (build_model, prune, train_masked), nothing stored.

Targets (issue #3):
* first run of the tree <= 1.05x the hand-written loop;
* rerun of the finished tree <= 2 % of the first run;
* adding one new branch to the finished tree <= 1.1x that branch alone.

Each repeat uses a fresh store; tree and loop alternate; medians of --repeats.
Both run at 1 torch thread (the tree's default).

    python benchmarks/orchestration.py [--repeats 3] [--iterations 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab import TrainConfig, build_model, load_dataset
from prunelab.experiment import Experiment, Prune, Rewind, Train
from prunelab.experiment.snapshot import canonical_weights
from prunelab.pruning import apply_masks, get_masks, prune, technique
from prunelab.pruning.masked import train_masked
from prunelab.tasks import train

BRANCHES = ("l1_unstructured", "global_unstructured", "random_unstructured")
NEW_BRANCH = "l2_structured"
ROUNDS = 5


def build_tree(store, config, branches):
    exp = Experiment(store)
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    dense = root.then(Train(config, evaluate=False))
    for name in branches:
        with exp.tag(name):
            s = dense
            for _ in range(ROUNDS):
                s = s.then(Prune(technique(name, amount=0.2), seed=1)).then(Rewind(to=root)).then(Train(config, evaluate=False))
    return exp


def hand_branch(data, config, init_state, dense_model, name):
    model = dense_model
    for _ in range(ROUNDS):
        pruned = build_model("lenet_300_100", data.input_shape, 10, seed=0)
        pruned.load_state_dict(canonical_weights(model))
        apply_masks(pruned, get_masks(model))
        prune(pruned, technique(name, amount=0.2, seed=1))
        rewound = build_model("lenet_300_100", data.input_shape, 10, seed=0)
        rewound.load_state_dict(init_state)
        apply_masks(rewound, get_masks(pruned))
        train_masked(rewound, data, config, seed=0)
        model = rewound
    return model


def hand_loop(data, config, branches):
    init = build_model("lenet_300_100", data.input_shape, 10, seed=0)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    dense = build_model("lenet_300_100", data.input_shape, 10, seed=0)
    train(dense, data, config, seed=0)
    for name in branches:
        hand_branch(data, config, init_state, dense, name)
    return init_state, dense


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TrainConfig(iterations=args.iterations, batch_size=60)
    data = load_dataset("digits")
    build_tree(tempfile.mkdtemp(), TrainConfig(iterations=5, batch_size=60), BRANCHES[:1]).run()  # warm-up
    rows = {"tree_first": [], "loop": [], "tree_rerun": [], "tree_add_branch": [], "loop_branch_alone": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as store:
            t, summary = timed(lambda: build_tree(store, config, BRANCHES).run())
            assert summary.ok and summary.computed
            rows["tree_first"].append(t)
            t, (init_state, dense) = timed(lambda: hand_loop(data, config, BRANCHES))
            rows["loop"].append(t)
            t, again = timed(lambda: build_tree(store, config, BRANCHES).run())
            assert again.computed == []
            rows["tree_rerun"].append(t)
            t, added = timed(lambda: build_tree(store, config, BRANCHES + (NEW_BRANCH,)).run())
            assert len(added.computed) == 3 * ROUNDS
            rows["tree_add_branch"].append(t)
            t, _ = timed(lambda: hand_branch(data, config, init_state, dense, NEW_BRANCH))
            rows["loop_branch_alone"].append(t)
        print({k: round(v[-1], 3) for k, v in rows.items()})
    med = {k: statistics.median(v) for k, v in rows.items()}
    overhead = med["tree_first"] / med["loop"]
    rerun = med["tree_rerun"] / med["tree_first"]
    add = med["tree_add_branch"] / med["loop_branch_alone"]
    met = {"overhead<=1.05": overhead <= 1.05, "rerun<=0.02": rerun <= 0.02, "add_branch<=1.1": add <= 1.1}
    print(f"tree {med['tree_first']:.2f} s vs loop {med['loop']:.2f} s -> {overhead:.3f}x; rerun {med['tree_rerun']:.3f} s "
          f"({rerun:.2%} of first); new branch {med['tree_add_branch']:.2f} s vs alone {med['loop_branch_alone']:.2f} s "
          f"-> {add:.3f}x; met {met}")
    write_result("orchestration", {
        "tree": f"lenet_300_100/digits, dense + {len(BRANCHES)} branches x {ROUNDS} rounds (prune 20 %, rewind, train)",
        "iterations_per_train": args.iterations, "repeats": args.repeats, "seconds": rows, "median": med,
        "overhead_ratio": overhead, "rerun_fraction": rerun, "add_branch_ratio": add,
        "target": {"overhead_ratio": "<= 1.05", "rerun_fraction": "<= 0.02", "add_branch_ratio": "<= 1.1"},
        "met": all(met.values()), "met_each": met,
    })


if __name__ == "__main__":
    main()
