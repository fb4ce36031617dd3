"""What `worker.tune_allocator` (glibc malloc thresholds per task process) buys on Dask workers.

A/B on a warm 2-worker LocalCluster: the same two-branch tree (2 roots, each a
dense training and 3 rounds of prune 20 % / rewind / retrain) run with the
thresholds set (prunelab's default) and without (the workers are told the
tuning already happened, so glibc keeps its defaults). A fresh cluster per run,
since mallopt cannot be undone; tuned and untuned alternate; medians of
--repeats. Two shapes: LeNet-300-100 on digits (small activations) and
calo_densenet on the calorimeter's e+/gamma showers (conv activations of
~1 MB per batch, where the mmap churn was found). No target was set; the
figures back the claim in docs/architecture.md.

    python benchmarks/allocator.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab import TrainConfig
from prunelab.experiment import Experiment, Prune, Rewind, Train
from prunelab.pruning import technique

CASES = {"lenet_300_100 / digits": ("digits", "lenet_300_100", 3000),
         "calo_densenet / calo_eplus_gamma": ("calo_eplus_gamma", "calo_densenet", 150)}


def two_branches(store: str, dataset: str, model: str, iterations: int) -> Experiment:
    exp = Experiment(store)
    config = TrainConfig(iterations=iterations, batch_size=60)
    for seed in (0, 1):
        root = exp.root(dataset=dataset, model=model, seed=seed)
        s = root.then(Train(config, evaluate=False))
        for _ in range(3):
            s = s.then(Prune(technique("global_unstructured", amount=0.2))).then(Rewind(to=root)).then(
                Train(config, evaluate=False))
    return exp


def _mark_tuned() -> None:
    from prunelab.experiment import worker

    worker._ALLOCATOR_TUNED = True  # tune_allocator() becomes a no-op: glibc's defaults stay


def run(dataset: str, model: str, iterations: int, tuned: bool) -> tuple[float, float]:
    """Wall seconds of the tree on a fresh warm cluster, and the workers' summed system CPU seconds."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        if not tuned:
            client.run(_mark_tuned)
        system = lambda: sum(client.run(lambda: os.times().system).values())  # noqa: E731
        before = system()
        with tempfile.TemporaryDirectory() as store:
            exp = two_branches(store, dataset, model, iterations)
            start = time.perf_counter()
            summary = exp.run(cluster.scheduler_address)
            seconds = time.perf_counter() - start
            assert summary.ok, summary
        return seconds, system() - before
    finally:
        client.close()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cases = {}
    for name, (dataset, model, iterations) in CASES.items():
        runs = {"tuned": [], "untuned": []}
        for _ in range(args.repeats):
            for mode in ("untuned", "tuned"):
                runs[mode].append(run(dataset, model, iterations, mode == "tuned"))
        medians = {m: statistics.median(s for s, _ in r) for m, r in runs.items()}
        cases[name] = {"iterations": iterations,
                       "seconds": {m: [s for s, _ in r] for m, r in runs.items()},
                       "worker_system_seconds": {m: [c for _, c in r] for m, r in runs.items()},
                       "median_seconds": medians, "speedup": medians["untuned"] / medians["tuned"]}
        print(f"{name:34s} untuned {medians['untuned']:6.1f} s  tuned {medians['tuned']:6.1f} s  "
              f"({cases[name]['speedup']:.2f}x); worker system CPU untuned "
              f"{statistics.median(cases[name]['worker_system_seconds']['untuned']):.1f} s, tuned "
              f"{statistics.median(cases[name]['worker_system_seconds']['tuned']):.1f} s")
    write_result("allocator", {"repeats": args.repeats, "cases": cases,
                               "target": "none set (the figures back docs/architecture.md)", "target_met": None})


if __name__ == "__main__":
    main()
