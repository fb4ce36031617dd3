"""Compaction: CPU inference latency and size of compacted vs masked models.

Conv-4 and VGG-11 (batch norm) on CIFAR-shaped input, structured-pruned to
50 % of their channels by L2 norm (``l2_structured``, bias and coupled batch
norm masked so the channels are truly dead), then physically compacted with
Torch-Pruning. Latency of one batch of 64 in eval mode without autograd;
masked (torch's hooks) and compacted alternate, median of --repeats.
Issue #4 asks for a compacted model that is measurably faster; there is no
numeric target, so 'met' means: faster, and outputs equal within 1e-5.

    python benchmarks/compaction.py [--repeats 20]
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

from prunelab import build_model
from prunelab.pruning import prune, technique
from prunelab.pruning.compaction import compact, mask_coupled_batchnorm

SHAPE = (3, 32, 32)


def latency(model, x) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    x = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(0))
    results, met = {}, True
    for name in ("conv4", "vgg11"):
        model = build_model(name, SHAPE, 10, seed=0)
        dense_params = sum(p.numel() for p in model.parameters())
        prune(model, technique("l2_structured", amount=0.5))
        mask_coupled_batchnorm(model, x[:2])
        compacted, report = compact(model, x[:2])
        model.eval(), compacted.eval()
        for _ in range(3):
            latency(model, x), latency(compacted, x)
        masked_t, compact_t = [], []
        for _ in range(args.repeats):
            masked_t.append(latency(model, x))
            compact_t.append(latency(compacted, x))
        with torch.no_grad():
            diff = float((model(x) - compacted(x)).abs().max())
        m, c = statistics.median(masked_t), statistics.median(compact_t)
        case_met = c < m and diff <= 1e-5
        met &= case_met
        results[name] = {
            "dense_parameters": dense_params, "masked_parameters_stored": report.parameters_before,
            "compacted_parameters": report.parameters_after, "parameter_ratio": report.parameter_ratio,
            "channels_removed": report.removed, "masked_ms": 1000 * m, "compacted_ms": 1000 * c,
            "speedup": m / c, "max_abs_output_difference": diff, "met": case_met,
        }
        print(f"{name:6s} params {report.parameters_before:,} -> {report.parameters_after:,} "
              f"({report.parameter_ratio:.3f}x); latency masked {1000 * m:.1f} ms -> compacted {1000 * c:.1f} ms "
              f"({m / c:.2f}x faster); max |diff| {diff:.2g}")
    write_result("compaction", {
        "batch": 64, "input_shape": SHAPE, "pruning": "l2_structured 50% of channels", "repeats": args.repeats,
        "cases": results, "target": "compacted faster than masked, outputs equal within 1e-5", "met": met,
    })


if __name__ == "__main__":
    main()
