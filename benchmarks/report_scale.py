"""Report scale: `prunelab report` and `prunelab compare` on study stores of 1,000 – 100,000 states.

Targets (issue #13), at 100,000 states: `prunelab report` <= 60 s and <= 1 GB peak memory (max
RSS), near-linear growth (the exponent of a log-log fit over the sizes is printed).

Each store is a real study — the spec below, built with `build_study` and planned like
`prunelab run` plans it, its study record written — with every state produced synthetically
instead of trained: roots, pruning, rewinding, re-initialisation and random masks run their real
recipes on a 64-16-8-10 MLP; a training adds noise to the weights (masks kept) and stores a real
evaluation's tables with a varied accuracy. 72 states a seed (dense, 10 IMP rounds, their
re-initialised and random-mask controls); 1,389 seeds for 100,000. Building skips fsync
(`prunelab.files.fsync_path`), which only matters for power cuts.

Timed, median of --repeats, each a fresh process (start-up included), alternating:
- `prunelab report STORE -o OUT` (default options: the sections that read tensors read the first
  30 seeds, every other section every seed, from the index),
- `prunelab compare STORE` (paired effects of the planned comparisons over every seed).
Before them, once, the report of a store whose index has no summaries yet (`--cold`): what the
first report after an upgrade pays to read every manifest once and write the summaries back.

    python benchmarks/report_scale.py [--sizes 1000,10000,100000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tomllib
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loglog_exponent, timed_command, write_result  # noqa: E402

ROUNDS = 10
PER_SEED = 2 + 3 * ROUNDS + 2 * 2 * ROUNDS  # root, dense; IMP prune/rewind/train; 2 controls x (make, train)
TARGETS = {"report_seconds": 60.0, "report_rss_mb": 1024.0}

SPEC = """
[study]
name = "scale"
seeds = [{seeds}]
[task]
dataset = "digits"
model = "lenet_300_100"
model_options = {{hidden = [16, 8]}}
[training]
iterations = 100
batch_size = 32
[branches.ticket]
technique = "global_unstructured"
rate = 0.2
rounds = {rounds}
reset = "rewind"
[branches.reinit]
control = "reinit"
of = "ticket"
[branches.random]
control = "random_pruning"
of = "ticket"
"""


def build(store: Path, seeds: int) -> int:
    """Write the study of ``seeds`` seeds into ``store``; returns the number of states written."""
    import torch

    import prunelab.files
    from prunelab.experiment.context import RunContext, dataset_cache
    from prunelab.experiment.planning import plan
    from prunelab.experiment.running import manifest_base
    from prunelab.spec import parse_spec
    from prunelab.study import build_study
    from prunelab.tasks.evaluation import evaluate

    spec = parse_spec(tomllib.loads(SPEC.format(seeds=", ".join(map(str, range(seeds))), rounds=ROUNDS)))
    exp = build_study(spec, store).experiment
    prunelab.files.fsync_path = lambda path: None  # building only: see the module docstring
    tasks, _, _ = plan(exp, fuse=False)
    for name, document in exp.documents.items():  # the study record, as `prunelab run` writes it
        exp.store.write_document(name, document)
    recent: OrderedDict = OrderedDict()  # snapshots by hash; older ones are loaded from the store

    def snapshot(state_hash):
        return recent[state_hash] if state_hash in recent else exp.store.load(state_hash)

    class Context(RunContext):
        def load(self, ref):
            return snapshot(ref.hash)

    data = dataset_cache("digits")
    tables = None
    written = 0
    for task in tasks:
        for st in task.states:
            parent = None if st.identity["parent"] is None else snapshot(st.identity["parent"])
            ctx = Context(exp.store, st)
            if st.identity["recipe"] == "Train":
                g = torch.Generator().manual_seed(ctx.seed % 2**63)
                weights = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in parent.weights.items()}
                snap = parent.evolve(weights=weights, iteration=100)
                if tables is None:  # a real evaluation's per-class table and confusion matrix
                    tables = evaluate(snap.model(), data.test, data.class_names).to_dict()
                accuracy = 0.9 + (ctx.seed % 89) / 1000
                kept = sum(int(m.sum()) for m in parent.masks.values())
                total = sum(m.numel() for m in parent.masks.values())
                curve = [{"iteration": k * 20, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9}
                         for k in range(1, 6)]
                snap = snap.evolve(metrics={"train_seconds": 0.5, "curve": curve, "early_stopping_iteration": 100,
                                            "validation": dict(tables, accuracy=accuracy),
                                            "test": dict(tables, accuracy=accuracy),
                                            "sparsity": 1 - kept / total if total else 0.0})
            else:
                snap = st.recipe.run(ctx, parent)
            base = manifest_base(st)
            base["timings"] = {"started": time.time(), "seconds": 0.5, "finished": time.time()}
            exp.store.write_state(base, snap)
            recent[st.hash] = snap
            while len(recent) > 4000:
                recent.popitem(last=False)
            written += 1
    return written


def measure(store: Path, out: Path, repeats: int, cold: bool) -> dict:
    cli = [sys.executable, "-m", "prunelab.cli"]
    report = cli + ["report", str(store), "-o", str(out / "report.html")]
    result: dict = {}
    if cold:
        with sqlite3.connect(store / "index.sqlite") as con:
            con.execute("DROP TABLE IF EXISTS summaries")
        con.close()
        result["cold_report"] = dict(zip(("seconds", "max_rss_mb"), timed_command(report)))
    runs: dict[str, list] = {"report": [], "compare": []}
    rss: dict[str, float] = {}
    for _ in range(repeats):
        for key, args in (("report", report), ("compare", cli + ["compare", str(store)])):
            seconds, mb = timed_command(args)
            runs[key].append(seconds)
            rss[key] = max(rss.get(key, 0.0), mb)
    result |= {"seconds": runs, "median": {k: statistics.median(v) for k, v in runs.items()},
               "range": {k: [min(v), max(v)] for k, v in runs.items()}, "max_rss_mb": rss,
               "report_mb": (out / "report.html").stat().st_size / 1e6}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the stores here and keep them")
    parser.add_argument("--cold", action="store_true", help="also time one report with the summaries dropped")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="prunelab-report-scale-"))
    rows = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            seeds = max(2, round(size / PER_SEED))
            store = base / f"study-{seeds}-seeds"
            if not (store / "states").is_dir():
                t0 = time.perf_counter()
                written = build(store, seeds)
                print(f"built {written:,} states in {time.perf_counter() - t0:.0f} s")
            states = sum(1 for _ in os.scandir(store / "states"))
            out = Path(tempfile.mkdtemp(prefix="report-"))
            result = measure(store, out, args.repeats, args.cold)
            shutil.rmtree(out, ignore_errors=True)
            rows.append({"states": states, "seeds": seeds, **result})
            med, mb = result["median"], result["max_rss_mb"]
            cold = result.get("cold_report")
            print(f"{states:>7,} states, {seeds} seeds: report {med['report']:.1f} s ({mb['report']:.0f} MB), "
                  f"compare {med['compare']:.1f} s ({mb['compare']:.0f} MB)"
                  + (f"; cold report {cold['seconds']:.1f} s ({cold['max_rss_mb']:.0f} MB)" if cold else ""))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    sizes = [r["states"] for r in rows]
    growth = {k: loglog_exponent(sizes, [r["median"][k] for r in rows]) for k in rows[0]["median"]} if len(rows) > 1 else {}
    if growth:
        print("log-log exponent (1 = linear): " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    largest = rows[-1]
    met = {"report_seconds": largest["median"]["report"] <= TARGETS["report_seconds"],
           "report_rss": largest["max_rss_mb"]["report"] <= TARGETS["report_rss_mb"]}
    print(f"at {largest['states']:,} states: report {largest['median']['report']:.1f} s "
          f"(target {TARGETS['report_seconds']:.0f} s), {largest['max_rss_mb']['report']:.0f} MB "
          f"(target {TARGETS['report_rss_mb']:.0f} MB): {'met' if all(met.values()) else 'NOT met'}")
    write_result("report_scale", {
        "command": "python benchmarks/report_scale.py " + " ".join(sys.argv[1:]),
        "states_per_seed": PER_SEED, "rows": rows, "growth_exponent": growth,
        "targets": {"report_seconds_at_largest": TARGETS["report_seconds"],
                    "report_max_rss_mb_at_largest": TARGETS["report_rss_mb"]},
        "met": met,
    })


if __name__ == "__main__":
    main()
