"""LeNet-300-100: test accuracy and seconds per 1,000 iterations (batch 60).

For each dataset (digits, mnist1d, and MNIST when a mirror is available) this
times prunelab's deterministic ``train`` side by side with a plain PyTorch
loop doing the same work (same model, batch size, optimizer, number of steps),
alternating the two, median of several repeats, and reports the ratio. Then it
trains to the accuracy run's length and reports test accuracy.

    python benchmarks/train_lenet.py [--repeats 3] [--iterations 5000]

Environment: PRUNELAB_DATA_MIRROR (or ../shared/data) for MNIST.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, write_result  # noqa: E402

from prunelab import DataSource, DataUnavailableError, TrainConfig, build_model, evaluate, load_dataset, train

TIMING_ITERATIONS = 1000
BATCH = 60


def plain_loop(model, data, iterations: int, seed: int) -> None:
    """The baseline: what a researcher writes by hand (shuffled batches, Adam)."""
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    g = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    perm, pos = torch.randperm(len(y), generator=g), 0
    for _ in range(iterations):
        if pos + BATCH > len(y):
            perm, pos = torch.randperm(len(y), generator=g), 0
        idx = perm[pos : pos + BATCH]
        pos += BATCH
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5000, help="training length for the accuracy figure")
    args = parser.parse_args()

    mirror = os.environ.get("PRUNELAB_DATA_MIRROR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    rows = {}
    for name in ("digits", "mnist1d", "mnist"):
        try:
            data = load_dataset(name, source=DataSource(mirror=Path(mirror), download=False))
        except DataUnavailableError as exc:
            print(f"{name}: skipped ({exc})")
            rows[name] = {"skipped": str(exc)}
            continue
        cfg = TrainConfig(iterations=TIMING_ITERATIONS, batch_size=BATCH, lr=1.2e-3, optimizer="adam")

        def prunelab_run():
            train(build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0), data, cfg, seed=0)

        def plain_run():
            plain_loop(build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0), data,
                       TIMING_ITERATIONS, 0)

        prunelab_run(), plain_run()  # warm-up
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternate so drift hits both equally
            ours.append(median_time(prunelab_run, 1)[0])
            theirs.append(median_time(plain_run, 1)[0])
        ours_med, theirs_med = sorted(ours)[len(ours) // 2], sorted(theirs)[len(theirs) // 2]

        model = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
        long_cfg = TrainConfig(iterations=args.iterations, batch_size=BATCH, lr=1.2e-3, eval_every=500)
        result = train(model, data, long_cfg, seed=0)
        test = evaluate(model, data.test, data.class_names)
        rows[name] = {
            "train_examples": len(data.train),
            "seconds_per_1000_iterations": ours_med,
            "plain_pytorch_seconds_per_1000_iterations": theirs_med,
            "ratio_prunelab_over_plain": ours_med / theirs_med,
            "repeats": {"prunelab": ours, "plain": theirs},
            "accuracy_iterations": args.iterations,
            "test_accuracy": test.accuracy,
            "early_stopping_iteration": result.early_stopping_iteration,
        }
        print(
            f"{name:8s} test acc {test.accuracy:.4f} after {args.iterations} it | "
            f"{ours_med:.2f} s/1000 it (plain PyTorch {theirs_med:.2f}, ratio {ours_med / theirs_med:.2f}x)"
        )
    write_result("train_lenet", {
        "model": "lenet_300_100", "batch_size": BATCH, "optimizer": "adam lr 1.2e-3",
        "target": "no numeric target in issue #2; reported for the record",
        "met": None, "datasets": rows,
    })


if __name__ == "__main__":
    main()
