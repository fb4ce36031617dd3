"""Store scale: listing, querying, tree, no-op planning on stores of 1,000 – 100,000 states.

Targets (issue #13), at 100,000 states: `prunelab ls` <= 2 s, planning a no-op rerun
<= 10 s, near-linear growth (the exponent of a log-log fit over the sizes is printed).
`prunelab report` at this scale is not measured here (see docs/benchmarks/store_scale.md).

Each store is built through the store API from a real experiment tree: per seed a root, a
dense training and R rounds of prune / rewind / retrain (LeNet-300-100 on digits; 2 + 3R
states a seed), every state written with `Store.write_state` — real manifests (environment,
timings, a real test and validation evaluation with per-class tables and confusion matrix,
a curve, sparsity, masks) and tiny tensors (one 4-entry weight per state; no training is
run). Building skips fsync (`prunelab.files.fsync_path`), which only matters for power cuts.

Timed, median of --repeats, each in a fresh process where it is a command (start-up included):
- `prunelab ls STORE` (the first 1,000 rows, the default --limit),
- `prunelab ls STORE --tag seed=3` (a filtered listing),
- a filtered query to a DataFrame in Python: `open_store(STORE).to_frame(tag="seed=3")`,
- `prunelab tree STORE` (collapsed; every state is a line of output),
- planning a no-op rerun in Python: rebuilding the experiment tree (identities) and `plan()`,
  each timed on its own.
Peak memory (max RSS) of each command is recorded.

    python benchmarks/store_scale.py [--sizes 1000,10000,100000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loglog_exponent, timed_command, write_result  # noqa: E402

ROUNDS = 10
PER_SEED = 2 + 3 * ROUNDS
TARGETS = {"ls_seconds": 2.0, "plan_seconds": 10.0}

TREE_CODE = """
import sys, time
from prunelab import TrainConfig
from prunelab.experiment import Experiment, Prune, Rewind, Train
from prunelab.pruning import technique
def tree(store, seeds):
    exp = Experiment(store)
    config = TrainConfig(iterations=100, batch_size=32)
    for seed in range(seeds):
        with exp.tag(f"seed={seed}"):
            root = exp.root(dataset="digits", model="lenet_300_100", seed=seed)
            s = root.then(Train(config))
            for _ in range({rounds}):
                s = s.then(Prune(technique("global_unstructured", amount=0.2))).then(Rewind(to=root)).then(Train(config))
    return exp
"""


def build(store: Path, states: int) -> int:
    """Write a store of about ``states`` states; returns the number written."""
    import torch

    import prunelab.files
    from prunelab.experiment.planning import plan
    from prunelab.experiment.running import manifest_base
    from prunelab.experiment.snapshot import ModelSpec, Snapshot
    from prunelab.tasks import build_model, load_dataset
    from prunelab.tasks.evaluation import evaluate

    namespace: dict = {}
    exec(TREE_CODE.replace("{rounds}", str(ROUNDS)), namespace)
    seeds = max(1, round(states / PER_SEED))
    exp = namespace["tree"](store, seeds)
    data = load_dataset("digits")
    evaluation = evaluate(build_model("lenet_300_100", data.input_shape, 10), data.test, data.class_names).to_dict()
    spec = ModelSpec("lenet_300_100", tuple(data.input_shape), 10)
    prunelab.files.fsync_path = lambda path: None  # building only: see the module docstring
    tasks, _, _ = plan(exp, fuse=False)
    written = 0
    for task in tasks:
        for st in task.states:
            i = written
            g = torch.Generator().manual_seed(i)
            recipe = st.identity["recipe"]
            metrics: dict = {"sparsity": 1 - 0.8 ** (st.depth // 3)}
            if recipe == "Train":
                metrics.update(train_seconds=0.5, curve=[{"iteration": k * 20, "train_loss": 0.5, "val_loss": 0.4,
                                                          "val_accuracy": 0.9} for k in range(1, 6)],
                               early_stopping_iteration=100,
                               validation=dict(evaluation, accuracy=0.9 + (i % 97) / 1000),
                               test=dict(evaluation, accuracy=0.9 + (i % 89) / 1000))
            masks = {"1.weight": torch.rand(2, 2, generator=g) > 0.3} if recipe in ("Prune", "Rewind", "Train") \
                and st.depth > 2 else {}
            snap = Snapshot(spec, "digits", {"1.weight": torch.randn(2, 2, generator=g)}, masks, None,
                            100 if recipe == "Train" else 0, metrics)
            base = manifest_base(st)
            base["timings"] = {"started": time.time(), "seconds": 0.5, "finished": time.time()}
            exp.store.write_state(base, snap)
            written += 1
    return written


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def measure(store: Path, seeds: int, repeats: int) -> dict:
    cli = [sys.executable, "-m", "prunelab.cli"]
    query = ("import time; t = time.perf_counter(); from prunelab.experiment import open_store; "
             f"df = open_store({str(store)!r}).to_frame(tag='seed=3'); "
             "assert len(df) > 0; print(time.perf_counter() - t)")
    plan_code = (TREE_CODE.replace("{rounds}", str(ROUNDS)) +
                 f"t = time.perf_counter(); exp = tree({str(store)!r}, {seeds}); t1 = time.perf_counter()\n"
                 "from prunelab.experiment.planning import plan\n"
                 "tasks, total, done = plan(exp); t2 = time.perf_counter()\n"
                 "assert not tasks, len(tasks)\n"
                 "print(t1 - t, t2 - t1)")
    runs: dict[str, list] = {k: [] for k in ("ls", "ls_filtered", "query", "tree", "plan_tree", "plan")}
    rss: dict[str, float] = {}
    for _ in range(repeats):  # the operations alternate within each repeat
        for key, args in (("ls", cli + ["ls", str(store)]), ("ls_filtered", cli + ["ls", str(store), "--tag", "seed=3"]),
                          ("tree", cli + ["tree", str(store)])):
            seconds, mb = timed_command(args)
            runs[key].append(seconds)
            rss[key] = max(rss.get(key, 0.0), mb)
        out = subprocess.run(python(query), capture_output=True, text=True, check=True)
        runs["query"].append(float(out.stdout.split()[-1]))
        out = subprocess.run(python(plan_code), capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        tree_s, plan_s = map(float, out.stdout.split()[-2:])
        runs["plan_tree"].append(tree_s)
        runs["plan"].append(plan_s)
    return {"seconds": runs, "median": {k: statistics.median(v) for k, v in runs.items()},
            "max_rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the stores here and keep them")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="prunelab-scale-"))
    rows = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            store = base / f"store-{size}"
            seeds = max(1, round(size / PER_SEED))
            if not (store / "states").is_dir():
                t0 = time.perf_counter()
                written = build(store, size)
                print(f"built {written:,} states in {time.perf_counter() - t0:.0f} s")
            states = len(list((store / "states").glob("*.json")))
            result = measure(store, seeds, args.repeats)
            row = {"states": states, "seeds": seeds, **result}
            rows.append(row)
            med = result["median"]
            print(f"{states:>7,} states: ls {med['ls']:.2f} s, ls --tag {med['ls_filtered']:.2f} s, "
                  f"query→DataFrame {med['query']:.2f} s, tree {med['tree']:.2f} s, no-op plan {med['plan']:.2f} s "
                  f"(+ {med['plan_tree']:.2f} s building the experiment); max RSS "
                  + ", ".join(f"{k} {v:.0f} MB" for k, v in result["max_rss_mb"].items()))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    sizes = [r["states"] for r in rows]
    growth = ({k: loglog_exponent(sizes, [r["median"][k] for r in rows]) for k in rows[0]["median"]}
              if len(rows) > 1 else {})
    if growth:
        print("log-log exponent (1 = linear): " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    largest = rows[-1]
    met = {"ls": largest["median"]["ls"] <= TARGETS["ls_seconds"],
           "plan": largest["median"]["plan"] + largest["median"]["plan_tree"] <= TARGETS["plan_seconds"]}
    write_result("store_scale", {
        "command": "python benchmarks/store_scale.py " + " ".join(sys.argv[1:]),
        "rounds_per_seed": ROUNDS, "rows": rows, "growth_exponent": growth,
        "targets": {"ls_seconds_at_largest": TARGETS["ls_seconds"],
                    "noop_plan_seconds_at_largest (tree + plan)": TARGETS["plan_seconds"]},
        "met": met, "report": "not measured (see docs/benchmarks/store_scale.md)",
    })


if __name__ == "__main__":
    main()
