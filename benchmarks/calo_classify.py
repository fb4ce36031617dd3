"""Image models vs shower shapes on the simulated calorimeter: e+ vs gamma and e+ vs pi+.

The same events for every method (the registered datasets ``calo_eplus_gamma``
/ ``calo_eplus_piplus`` and their ``_shapes`` twins: 18,000 training, 2,000
validation and 10,000 test showers), three seeds each (model initialisation,
data order, tree randomness; the events stay fixed):

* ``calo_densenet`` on the 507 cell features (--densenet-iterations steps of Adam);
* ``shower_shape_mlp`` on the 22 shower-shape observables (--mlp-iterations steps);
* scikit-learn's ``HistGradientBoostingClassifier`` on the same shower shapes.

Reported: test ROC AUC and background rejection 1/FPR at 90 % signal (e+)
efficiency, mean and 95 % t-interval over the seeds. Target (issue #10): the
table, and a plain statement whether the images beat the shower shapes here.

    python benchmarks/calo_classify.py [--seeds 0 1 2] [--densenet-iterations 1500]
        [--tasks eplus_gamma] [--variant physics=2]

``--variant`` gives the simulated datasets options (``calo_eplus_gamma[physics=2]``: the
simulator's physics=2 showers); its results go to ``calo_classify_<variant>.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab import TrainConfig, build_model, evaluate, load_dataset, train
from prunelab.hep.baselines import gradient_boosted_trees
from prunelab.study import mean_ci


def torch_method(dataset, model_name: str, iterations: int, seed: int) -> dict:
    model = build_model(model_name, dataset.input_shape, dataset.num_classes, seed=seed)
    start = time.perf_counter()
    train(model, dataset, TrainConfig(iterations=iterations, batch_size=60, lr=1.2e-3), seed=seed)
    ev = evaluate(model, dataset.test, dataset.class_names)
    return {"auc": ev.roc_auc, "rejection_90": ev.rejection[0.9], "seconds": time.perf_counter() - start}


def gbdt_method(dataset, seed: int) -> dict:
    start = time.perf_counter()
    result = gradient_boosted_trees(dataset, seed, (0.9,))
    return {"auc": result["roc_auc"], "rejection_90": result["rejection"][0.9], "seconds": time.perf_counter() - start}


def summary(values: list[float], background: int | None = None) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):  # no background event passes: the rejection is only bounded below
        return {"values": [v if math.isfinite(v) else None for v in values], "mean": None, "low": None, "high": None,
                "lower_bound": background,
                "note": f"{len(values) - len(finite)} of {len(values)} runs reject every one of the {background} "
                        "background test events (rejection > that number)"}
    mean, low, high = mean_ci(values, method="t")
    return {"values": values, "mean": mean, "low": low, "high": high}


def show(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return f"> {stat['lower_bound']} (no background event passes in {stat['values'].count(None)} runs)"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--densenet-iterations", type=int, default=1500)
    parser.add_argument("--mlp-iterations", type=int, default=3000)
    parser.add_argument("--tasks", nargs="+", default=["eplus_gamma", "eplus_piplus"],
                        choices=["eplus_gamma", "eplus_piplus"])
    parser.add_argument("--variant", default="", help="dataset options, e.g. physics=2 or physics=2,threshold=0.5")
    args = parser.parse_args()
    suffix = f"[{args.variant}]" if args.variant else ""
    tasks = {}
    for task in args.tasks:
        cells, shapes = load_dataset(f"calo_{task}{suffix}"), load_dataset(f"calo_{task}_shapes{suffix}")
        runs: dict[str, list[dict]] = {"calo_densenet (images)": [], "shower_shape_mlp": [], "HistGradientBoosting (shapes)": []}
        for seed in args.seeds:  # methods alternate within each seed
            runs["calo_densenet (images)"].append(torch_method(cells, "calo_densenet", args.densenet_iterations, seed))
            runs["shower_shape_mlp"].append(torch_method(shapes, "shower_shape_mlp", args.mlp_iterations, seed))
            runs["HistGradientBoosting (shapes)"].append(gbdt_method(shapes, seed))
        tasks[task] = {}
        background = int((cells.test.y == 0).sum())
        for method, rows in runs.items():
            tasks[task][method] = {"auc": summary([r["auc"] for r in rows]),
                                   "rejection_90": summary([r["rejection_90"] for r in rows], background),
                                   "seconds": [r["seconds"] for r in rows]}
            a, r = tasks[task][method]["auc"], tasks[task][method]["rejection_90"]
            print(f"{task:13s} {method:30s} AUC {show(a, 6 if a['mean'] > 0.999 else 4)}  "
                  f"rejection@90% {show(r, 1)}")
        image = tasks[task]["calo_densenet (images)"]["auc"]
        best_shape = max((tasks[task][m]["auc"] for m in ("shower_shape_mlp", "HistGradientBoosting (shapes)")),
                         key=lambda s: s["mean"])
        if image["low"] > best_shape["high"]:
            verdict = "images beat the shower shapes (intervals apart)"
        elif image["high"] < best_shape["low"]:
            verdict = "shower shapes beat the images (intervals apart)"
        else:
            verdict = "images and shower shapes are indistinguishable (intervals overlap)"
        tasks[task]["verdict"] = verdict
        print(f"{task}: {verdict}")
    name = "calo_classify" + ("_" + args.variant.replace("=", "").replace(",", "_") if args.variant else "")
    write_result(name, {"seeds": args.seeds, "variant": args.variant, "densenet_iterations": args.densenet_iterations,
                                   "mlp_iterations": args.mlp_iterations, "tasks": tasks,
                                   "target": "AUC and rejection at 90 % efficiency for images vs shower shapes "
                                             "with intervals over >= 3 seeds",
                                   "target_met": len(args.seeds) >= 3})


if __name__ == "__main__":
    main()
