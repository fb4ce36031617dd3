"""Methods that look at data: Wanda and SparseGPT beside the calibration forward pass they need, and
what one-shot pruning without retraining costs in accuracy on real MNIST.

Targets (issue #31): Wanda within 1.3x the time of one forward pass over its calibration
examples; SparseGPT's ratio reported, target <= 3x. Part 1 times, on LeNet-300-100 and on LeNet-5
(a conv net) trained briefly on MNIST: the forward pass over N calibration examples (no grad, eval
mode, the pass a calibration method makes), a Wanda prune to 50 % and a SparseGPT prune to 50 %,
alternating, each prune on a fresh copy of the model, median of --repeats at 1 torch thread; and
the peak memory each adds (VmHWM reset before the operation, in a fresh process per operation).
Part 2: LeNet-300-100 trained on MNIST, pruned once to 50 %, 2:4 and 4:8 without retraining by
magnitude (layer by layer), Wanda and SparseGPT; calibration 128 training examples drawn with 5
seeds; test accuracy, mean and 95 % t-interval over the seeds (magnitude draws nothing: one value).

    python benchmarks/calibrated_prune.py [--repeats 5] [--samples 4096] [--seeds 5]

MNIST is read from PRUNELAB_DATA_MIRROR (default ../shared/data when it exists).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if "PRUNELAB_DATA_MIRROR" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["PRUNELAB_DATA_MIRROR"] = str(ROOT.parent / "shared" / "data")

import torch  # noqa: E402

from prunelab import TrainConfig, build_model, load_dataset, train  # noqa: E402
from prunelab.pruning import prune, technique  # noqa: E402
from prunelab.tasks.checkpoint import load_weights, save_weights  # noqa: E402
from prunelab.tasks.evaluation import evaluate  # noqa: E402

MODELS = {"lenet_300_100": 3000, "lenet5": 1500}  # training iterations (Adam 1.2e-3, batch 60)
TARGETS = {"wanda": 1.3, "sparsegpt": 3.0}


def trained(name: str, data, cache: Path):
    model = build_model(name, data.input_shape, data.num_classes, seed=0)
    path = cache / f"{name}.safetensors"
    if path.exists():
        load_weights(model, path)
    else:
        train(model, data, TrainConfig(iterations=MODELS[name], batch_size=60, lr=1.2e-3), seed=0)
        save_weights(model, path)
    return model.eval()


def operation(kind: str, model, x):
    if kind == "forward":
        with torch.no_grad():
            model(x)
        return None
    return prune(model, technique(kind, amount=0.5), calibration=x)


def timings(data, cache: Path, samples: int, repeats: int) -> dict:
    x = data.train.x[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:samples]]
    out = {}
    for name in MODELS:
        model = trained(name, data, cache)
        times = {k: [] for k in ("forward", "wanda", "sparsegpt")}
        for _ in range(repeats):
            for kind in times:  # alternating: each repeat times all three, in turn
                subject = copy.deepcopy(model)
                start = time.perf_counter()
                operation(kind, subject, x)
                times[kind].append(time.perf_counter() - start)
        medians = {k: statistics.median(v) for k, v in times.items()}
        out[name] = {"seconds": times, "median_s": medians,
                     "ratio": {k: medians[k] / medians["forward"] for k in ("wanda", "sparsegpt")},
                     "peak_extra_mb": {k: peak_memory(name, k, samples) for k in times}}
        r = out[name]
        print(f"{name}: forward {medians['forward'] * 1e3:.1f} ms over {samples} examples; wanda "
              f"{medians['wanda'] * 1e3:.1f} ms ({r['ratio']['wanda']:.2f}x); sparsegpt {medians['sparsegpt'] * 1e3:.1f} "
              f"ms ({r['ratio']['sparsegpt']:.2f}x); peak extra MB {r['peak_extra_mb']}")
    return out


def peak_memory(name: str, kind: str, samples: int) -> float:
    """Extra resident memory at the peak of one operation, in a fresh process (VmHWM reset before it)."""
    proc = subprocess.run([sys.executable, __file__, "--child", name, kind, str(samples)], capture_output=True,
                          text=True, check=True, env=os.environ)
    return json.loads(proc.stdout.strip().splitlines()[-1])["extra_mb"]


def _vm(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    return float("nan")


def child(name: str, kind: str, samples: int) -> None:
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    model = trained(name, data, Path(os.environ["CALIBRATED_PRUNE_CACHE"]))
    x = data.train.x[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:samples]].clone()
    del data
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current resident size
        fh.write("5")
    before = _vm("VmRSS")
    operation(kind, model, x)
    print(json.dumps({"extra_mb": _vm("VmHWM") - before}))


def accuracy_table(data, cache: Path, seeds: int) -> list[dict]:
    from prunelab.study import mean_ci

    model = trained("lenet_300_100", data, cache)
    dense = evaluate(model, data.test, data.class_names).accuracy
    rows = [{"method": "dense", "setting": "dense", "excluded": [], "sparsity": 0.0, "mean": dense,
             "ci": [dense, dense], "values": [dense]}]
    print(f"dense LeNet-300-100: test accuracy {dense:.4f}")
    for setting, kwargs in (("50 %", {"amount": 0.5}), ("2:4", {"pattern": "2:4"}), ("4:8", {"pattern": "4:8"})):
        if "pattern" in kwargs:  # layers whose inputs are not a multiple of M cannot take the pattern
            m = int(kwargs["pattern"].split(":")[1])
            kwargs["exclude"] = tuple(n for n, mod in model.named_modules()
                                      if isinstance(mod, torch.nn.Linear) and mod.in_features % m)
        for method in ("l1_unstructured", "wanda", "sparsegpt"):
            values, sparsity = [], None
            for seed in range(1 if method == "l1_unstructured" else seeds):
                g = torch.Generator().manual_seed(seed)
                x = data.train.x[torch.randperm(len(data.train), generator=g)[:128]]
                subject = copy.deepcopy(model)
                sparsity = prune(subject, technique(method, **kwargs), calibration=x).report.sparsity
                values.append(evaluate(subject, data.test, data.class_names).accuracy)
            mean, low, high = mean_ci(values, method="t") if len(values) > 1 else (values[0],) * 3
            label = "magnitude" if method == "l1_unstructured" else method
            rows.append({"method": label, "setting": setting, "excluded": list(kwargs.get("exclude", ())),
                         "sparsity": sparsity, "mean": mean, "ci": [low, high], "values": values})
            print(f"{setting:>5} {label:10s} {mean:.4f} [{low:.4f}, {high:.4f}] over {len(values)} calibration seed(s); "
                  f"sparsity {sparsity:.3f}, excluded {list(kwargs.get('exclude', ()))}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CALIBRATED_PRUNE_CACHE"] = folder
        times = timings(data, Path(folder), args.samples, args.repeats)
        table = accuracy_table(data, Path(folder), args.seeds)
    met = {name: {k: r["ratio"][k] <= TARGETS[k] for k in TARGETS} for name, r in times.items()}
    write_result("calibrated_prune", {
        "command": f"python benchmarks/calibrated_prune.py --repeats {args.repeats} --samples {args.samples} "
                   f"--seeds {args.seeds}",
        "target": {"wanda_vs_forward": TARGETS["wanda"], "sparsegpt_vs_forward": TARGETS["sparsegpt"]},
        "calibration_samples": args.samples, "timings": times, "accuracy": table, "met": met})


if __name__ == "__main__":
    main()
