"""Global unstructured magnitude pruning of a ~50 M-parameter model to 90 %.

Baseline: ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured)``.
Target (issue #4): prunelab >= 8x faster and <= 1/3 of torch's peak memory
increase, with exactly the same kept set up to ties.

Each timing runs in a fresh subprocess (so peak RSS is the call's own):
the peak counter is reset after the model is built (``/proc/self/clear_refs``)
and read back as VmHWM. torch and prunelab alternate; medians of --repeats.

Shapes (issue #13): the same comparison in-process on the models users meet — one big
tensor, many small tensors, LeNet-300-100, a conv net (conv6), resnet20 — each beside
the limit (concatenate |w| and take the k-th value: the least work any exact
global selection must do, plus torch's mask attachment ``custom_from_mask``, which any
method that leaves torch-pruned modules — torch's own included — pays). Fresh models per run; torch, prunelab and the limit alternate;
median of --shape-repeats. Target: at least as fast as torch on every shape and within
1.5x of the limit.

    python benchmarks/global_prune.py [--repeats 3] [--width 4096] [--layers 3] [--shape-repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

AMOUNT = 0.9


def build(width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(which: str, width: int, layers: int) -> dict:
    from torch.nn.utils import prune as torch_prune

    from prunelab.pruning import prune

    model = build(width, layers)
    baseline = rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    if which == "torch":
        params = [(m, "weight") for m in model]
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=AMOUNT)
    else:
        prune(model, scope="global", amount=AMOUNT)
    seconds = time.perf_counter() - start
    peak = rss_kb("VmHWM")
    kept = sum(int(m.weight_mask.sum()) for m in model)
    return {"seconds": seconds, "peak_increase_mb": (peak - baseline) / 1024, "kept": kept}


def same_kept_set_up_to_ties(width: int, layers: int) -> dict:
    from torch.nn.utils import prune as torch_prune

    from prunelab.pruning import prune

    theirs, ours = build(width, layers), build(width, layers)
    torch_prune.global_unstructured([(m, "weight") for m in theirs], pruning_method=torch_prune.L1Unstructured, amount=AMOUNT)
    prune(ours, scope="global", amount=AMOUNT)
    differ, off_threshold = 0, 0
    kept_min = min(float(m.weight_orig.abs()[m.weight_mask.bool()].min()) for m in ours)
    pruned_max = max(float(m.weight_orig.detach().abs()[~m.weight_mask.bool()].max()) for m in ours)
    for a, b in zip(theirs, ours):
        diff = a.weight_mask != b.weight_mask
        differ += int(diff.sum())
        values = b.weight_orig.detach().abs()[diff]
        off_threshold += int(((values != kept_min) & (values != pruned_max)).sum())
    return {"entries_differing": differ, "differing_not_at_threshold": off_threshold,
            "threshold_tie": kept_min == pruned_max, "same_up_to_ties": off_threshold == 0}


def shape_models():
    from prunelab.tasks.models import build_model

    def many_small():
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(32, 32) for _ in range(200)])

    def one_big():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(2048, 2048))

    return {
        "one big tensor (2048x2048, 4.2 M)": one_big,
        "many small tensors (200 x 32x32, 0.2 M)": many_small,
        "lenet_300_100 (0.27 M)": lambda: build_model("lenet_300_100", (1, 28, 28), 10, seed=0),
        "conv6 (cifar shape, 2.3 M)": lambda: build_model("conv6", (3, 32, 32), 10, seed=0),
        "resnet20 (0.27 M, 22 tensors)": lambda: build_model("resnet20", (3, 32, 32), 10, seed=0),
    }


def _weights(model):
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def time_shapes(repeats: int) -> dict:
    from torch.nn.utils import prune as torch_prune

    from prunelab.pruning import prune

    def limit(model):
        # the least an exact global selection that leaves torch-pruned modules must do: one
        # kthvalue over all |w|, then torch's own mask attachment (which torch's baseline also pays)
        params = _weights(model)
        scores = torch.cat([m.weight.detach().abs().flatten() for m, _ in params])
        threshold = torch.kthvalue(scores, max(1, int(AMOUNT * scores.numel()))).values
        for m, name in params:
            torch_prune.custom_from_mask(m, name, m.weight.detach().abs() > threshold)

    contenders = {
        "torch": lambda m: torch_prune.global_unstructured(_weights(m), pruning_method=torch_prune.L1Unstructured,
                                                           amount=AMOUNT),
        "prunelab": lambda m: prune(m, scope="global", amount=AMOUNT),
        "kthvalue limit": limit,
    }
    out = {}
    for shape, make in shape_models().items():
        times = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, fn in contenders.items():
                model = make()
                start = time.perf_counter()
                fn(model)
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(v) for name, v in times.items()}
        out[shape] = {"median_seconds": med, "range_seconds": {n: [min(v), max(v)] for n, v in times.items()},
                      "speedup_vs_torch": med["torch"] / med["prunelab"],
                      "ratio_to_limit": med["prunelab"] / med["kthvalue limit"]}
        print(f"{shape:>42}: torch {med['torch'] * 1e3:8.1f} ms, prunelab {med['prunelab'] * 1e3:7.1f} ms, "
              f"limit {med['kthvalue limit'] * 1e3:7.1f} ms -> {out[shape]['speedup_vs_torch']:.1f}x vs torch, "
              f"{out[shape]['ratio_to_limit']:.2f}x the limit")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--shape-repeats", type=int, default=7)
    parser.add_argument("--worker", choices=["torch", "prunelab"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker, args.width, args.layers)))
        return

    runs: dict[str, list[dict]] = {"torch": [], "prunelab": []}
    for i in range(args.repeats):
        for which in ("torch", "prunelab"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", which, "--width", str(args.width), "--layers", str(args.layers)],
                capture_output=True, text=True, check=True,
            )
            runs[which].append(json.loads(out.stdout))
            print(f"repeat {i + 1} {which:8s} {runs[which][-1]}")
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "peak_increase_mb")} for k, v in runs.items()}
    speedup = med["torch"]["seconds"] / med["prunelab"]["seconds"]
    memory_ratio = med["prunelab"]["peak_increase_mb"] / med["torch"]["peak_increase_mb"]
    equality = same_kept_set_up_to_ties(args.width, args.layers)
    params = args.layers * args.width * args.width
    shapes = time_shapes(args.shape_repeats)
    shapes_met = all(r["speedup_vs_torch"] >= 1 and r["ratio_to_limit"] <= 1.5 for r in shapes.values())
    speedups = [r["speedup_vs_torch"] for r in shapes.values()] + [speedup]
    print(f"speedup vs torch across shapes: {min(speedups):.1f}x-{max(speedups):.1f}x; shapes target met: {shapes_met}")
    met = speedup >= 8 and memory_ratio <= 1 / 3 and equality["same_up_to_ties"] and shapes_met
    print(f"{params / 1e6:.1f} M weights to {AMOUNT:.0%}: torch {med['torch']['seconds']:.2f} s / "
          f"+{med['torch']['peak_increase_mb']:.0f} MB, prunelab {med['prunelab']['seconds']:.2f} s / "
          f"+{med['prunelab']['peak_increase_mb']:.0f} MB -> speedup {speedup:.1f}x, memory ratio {memory_ratio:.3f}; "
          f"{equality}; target met: {met}")
    write_result("global_prune", {
        "parameters": params, "amount": AMOUNT, "repeats": args.repeats, "runs": runs, "median": med,
        "speedup": speedup, "memory_ratio": memory_ratio, "equality": equality,
        "shapes": shapes, "speedup_range_all_shapes": [min(speedups), max(speedups)],
        "target": {"speedup": ">= 8", "memory_ratio": "<= 0.333", "kept_set": "same up to ties",
                   "shapes": ">= 1x torch and <= 1.5x the kthvalue limit on every shape"}, "met": met,
    })


if __name__ == "__main__":
    main()
