"""Dask `local` executor (2 workers) vs `serial` on independent branches (2 by default, --seeds N).

Two roots (seeds 0 and 1) of LeNet-300-100 on digits, each a chain of dense
training and 3 rounds of prune 20 % / rewind / retrain. Every task runs at
1 torch thread in both executors (the tree's default), so both compute the
same bits; the local executor runs the two branches on two worker processes.

Each run is a fresh Python process (what `prunelab run` does), so both sides
pay their start-up: imports, dataset loading and, for `local`, starting the
LocalCluster and its workers. A third figure, `warm`, runs on a cluster that
is already up (``run("tcp://...")``), measured in this process.

Target (issue #3): speedup >= 1.6x (fresh processes) on this 2-core machine.
Serial and local alternate, each on a fresh store; medians of --repeats.

    python benchmarks/dask_scaling.py [--repeats 3] [--iterations 6000]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab import TrainConfig
from prunelab.experiment import Experiment, Prune, Rewind, Train
from prunelab.pruning import technique


def two_branches(store, iterations, seeds=2):
    exp = Experiment(store)
    config = TrainConfig(iterations=iterations, batch_size=60)
    for seed in range(seeds):
        root = exp.root(dataset="digits", model="lenet_300_100", seed=seed)
        s = root.then(Train(config, evaluate=False))
        for _ in range(3):
            s = s.then(Prune(technique("global_unstructured", amount=0.2))).then(Rewind(to=root)).then(Train(config, evaluate=False))
    return exp


def child(store: str, iterations: int, executor: str, seeds: int) -> None:
    """One run in this (fresh) process; prints seconds and weight digests."""
    exp = two_branches(store, iterations, seeds)
    always = executor == "local-no-fallback"  # a cluster whatever the plan (what local did before issue #13)
    executor = "local" if always else executor
    summary = exp.run(executor, workers=2 if executor == "local" else None, fallback=not always)
    assert summary.ok and len(summary.computed) == len(exp.states), summary
    print(json.dumps({"weights": weight_digests(exp), "note": summary.note}))


def weight_digests(exp) -> dict:
    """Every state's weights by content hash. (Not the manifests' entries as they are: those also
    name the pack file holding each tensor, which depends on which state stored a shared tensor
    first: two seeds' all-zero biases are one blob, packed with whichever root ran first.)"""
    return {h: {k: e["blob"] for k, e in exp.store.manifest(h)["weights"].items()} for h in exp.states}


def fresh_process_run(iterations: int, executor: str, seeds: int, note: list | None = None) -> tuple[float, dict]:
    """Seconds of one run in a fresh process, and its weights; ``note`` gets the run's note (why
    ``local`` ran in process, or "")."""
    with tempfile.TemporaryDirectory() as store:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", executor, "--store", store,
                              "--iterations", str(iterations), "--seeds", str(seeds)],
                             capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if note is not None:
        note.append(result["note"])
    return seconds, result["weights"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=2, help="independent roots (issue #13 asks for >= 4)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.store, args.iterations, args.child, args.seeds)
        return

    fresh_process_run(10, "serial", 1)  # fills the dataset cache
    times = {"serial": [], "local": [], "local_warm": []}
    reference, same_bits, notes = None, True, []
    for _ in range(args.repeats):
        t_serial, bits_serial = fresh_process_run(args.iterations, "serial", args.seeds)
        t_local, bits_local = fresh_process_run(args.iterations, "local", args.seeds, notes)
        assert not notes[-1], f"local did not start its cluster: {notes[-1]}"
        reference = reference or bits_serial
        same_bits &= bits_serial == bits_local == reference
        times["serial"].append(t_serial)
        times["local"].append(t_local)
        print(f"serial {t_serial:.2f} s, local {t_local:.2f} s")
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      worker_dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        two_branches(tempfile.mkdtemp(), 10).run(cluster.scheduler_address)  # workers import and load data
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as store:
                exp = two_branches(store, args.iterations, args.seeds)
                start = time.perf_counter()
                assert exp.run(cluster.scheduler_address).ok
                times["local_warm"].append(time.perf_counter() - start)
                same_bits &= weight_digests(exp) == reference
            print(f"local warm {times['local_warm'][-1]:.2f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup, warm = med["serial"] / med["local"], med["serial"] / med["local_warm"]
    print(f"serial {med['serial']:.1f} s, local {med['local']:.1f} s ({speedup:.2f}x), warm cluster "
          f"{med['local_warm']:.1f} s ({warm:.2f}x); identical weights: {same_bits}; target >= 1.6: {speedup >= 1.6}")
    write_result("dask_scaling" if args.seeds == 2 else f"dask_scaling_{args.seeds}seeds", {
        "tree": f"{args.seeds} roots x (train + 3 x prune/rewind/train), lenet_300_100/digits",
        "iterations_per_train": args.iterations, "command": " ".join(["python benchmarks/dask_scaling.py", *sys.argv[1:]]),
        "workers": 2, "threads_per_task": 1, "repeats": args.repeats, "seconds": times, "median": med,
        "speedup": speedup, "speedup_warm_cluster": warm, "bitwise_identical": same_bits,
        "target": "speedup (fresh processes, cluster start included) >= 1.6", "met": speedup >= 1.6 and same_bits,
    })


if __name__ == "__main__":
    main()
