"""Masked training step time at 80 % sparsity vs the dense model.

Target (issue #4): masked training step <= 1.05x the dense step, on
LeNet-300-100 (MNIST-shaped input) and Conv-4 (CIFAR-shaped input). Both
masked modes are measured: ``reapply`` (masks made permanent, re-applied after
each optimizer step — prunelab's default) and ``hook`` (torch's forward
pre-hook reparametrisation). Timing data are random tensors of the real
shapes: step time does not depend on the values.

Dense, reapply and hook runs alternate; medians of --repeats.

    python benchmarks/masked_training.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab import TrainConfig, build_model
from prunelab.pruning import prune
from prunelab.pruning.masked import train_masked
from prunelab.tasks import Dataset, Split, train

CASES = {"lenet_300_100": ((1, 28, 28), 600), "conv4": ((3, 32, 32), 40)}
SPARSITY = 0.8


def synthetic(shape, n=6000) -> Dataset:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))
    small = Split(split.x[:10], split.y[:10])
    return Dataset("synthetic", split, small, small, tuple(map(str, range(10))))


def time_run(model_name, shape, iterations, mode, data) -> float:
    model = build_model(model_name, shape, 10, seed=0)
    if mode != "dense":
        prune(model, scope="global", amount=SPARSITY)
    config = TrainConfig(iterations=iterations, batch_size=60, eval_every=iterations * 10)
    start = time.perf_counter()
    if mode == "dense":
        train(model, data, config, seed=0)
    else:
        train_masked(model, data, config, seed=0, mode=mode)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results, met = {}, True
    for name, (shape, iterations) in CASES.items():
        data = synthetic(shape)
        for mode in ("dense", "reapply", "hook"):  # warm-up
            time_run(name, shape, max(5, iterations // 10), mode, data)
        times = {"dense": [], "reapply": [], "hook": []}
        for _ in range(args.repeats):
            for mode in times:
                times[mode].append(time_run(name, shape, iterations, mode, data))
        med = {mode: statistics.median(v) for mode, v in times.items()}
        ratios = {mode: med[mode] / med["dense"] for mode in ("reapply", "hook")}
        case_met = ratios["reapply"] <= 1.05
        met &= case_met
        results[name] = {"input_shape": shape, "iterations": iterations, "step_seconds": times,
                         "median_step_ms": {k: 1000 * v for k, v in med.items()}, "ratio_vs_dense": ratios,
                         "met": case_met}
        print(f"{name:14s} dense {1000 * med['dense']:.2f} ms/step, reapply {1000 * med['reapply']:.2f} "
              f"({ratios['reapply']:.3f}x), torch hooks {1000 * med['hook']:.2f} ({ratios['hook']:.3f}x)")
    write_result("masked_training", {
        "sparsity": SPARSITY, "batch_size": 60, "repeats": args.repeats, "cases": results,
        "target": "masked (reapply) step <= 1.05x dense", "met": met,
    })


if __name__ == "__main__":
    main()
