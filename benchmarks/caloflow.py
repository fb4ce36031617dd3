"""The shower flow: does it pass the CaloChallenge classifier test after a fixed training budget?

Target (issue #35): trained on e+ within 20 minutes on 2 cores, a high-level classifier AUC below
0.75 against held-out simulator showers (the CaloChallenge protocol, prunelab.hep.calochallenge);
the low-level AUC, separation powers and FPD/KPD are reported beside it, and the same shower-shape
two-sample AUC the GAN's benchmark reports (benchmarks/calogan.py), so the two compare on one scale.

Baseline, side by side: the shower GAN of examples/calogan_eplus.toml, trained and evaluated the same
way in the same run (``--gan``; about 15 more minutes), or left out (``--no-gan``).

    python benchmarks/caloflow.py                  # examples/caloflow_eplus.toml's training, seed 0
    python benchmarks/caloflow.py --gan            # and the GAN beside it
    python benchmarks/caloflow.py --quick          # a smoke run of the same pipeline

The store is kept (--store, default the example's runs/caloflow_eplus): a trained flow there is
reused, not retrained, and its stored training time is reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import numpy as np  # noqa: E402

from prunelab.experiment.query import open_store  # noqa: E402
from prunelab.hep.calochallenge import evaluate  # noqa: E402
from prunelab.hep.gan_recipes import EVALUATION_SEED  # noqa: E402
from prunelab.hep.gan_study import build_gan_study, load_gan_spec  # noqa: E402
from prunelab.hep.generation import sample  # noqa: E402
from prunelab.hep.tasks import shower_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 20 * 60
AUC_TARGET = 0.75


def train(spec, store: Path, threads: int) -> dict:
    """Train seed 0 of ``spec`` (no pruning) in ``store``; the trained state and its training time."""
    spec = spec.model_copy(update={"pruning": None, "seeds": (spec.seeds[0],)})
    began = time.perf_counter()
    # no document: the store's study document (which states are its points) stays the full study's
    exp = build_gan_study(spec, store, document=False)
    summary = exp.run("serial", threads=threads)
    wall = time.perf_counter() - began
    print(summary)
    results = open_store(store)
    checkpoints = [p for p in exp.built_points if p["kind"] == "checkpoint"]
    manifests = [results.get(p["hash"]) for p in checkpoints]
    trained = next(p["hash"] for p in exp.built_points if p["kind"] == "trained")
    seconds = sum(m["metrics"]["train_seconds"] for m in manifests)
    return {"results": results, "hash": trained, "train_seconds": seconds, "wall_seconds_this_run": wall,
            "computed_this_run": len(summary.computed), "iterations": spec.training.iterations,
            "own_fidelity": results.get(trained)["metrics"]["fidelity"]["summary"],
            "checkpoints": [{"iteration": p["iteration"], "shower_shape_auc": m["metrics"]["fidelity"]["summary"]["auc"]}
                            for p, m in zip(checkpoints, manifests)]}


def challenge(trained: dict, dataset: str, events: int) -> dict:
    reference = shower_split(dataset, "test")
    reference = reference.take(np.arange(min(events, len(reference))))
    model = trained["results"].load_model(trained["hash"])
    began = time.perf_counter()
    generated = sample(model, reference.energy, seed=EVALUATION_SEED + 1, particle=reference.particle)
    generation = time.perf_counter() - began
    began = time.perf_counter()
    ev = evaluate(reference, generated)
    seconds = time.perf_counter() - began
    out = ev.to_dict()
    sep = ev.separation[ev.separation["energy_range"] == "all"]
    worst = sep.sort_values("separation_power").iloc[-1]
    summary = {kind: {"auc": r["auc"], "auc_interval": r["auc_interval"], "jsd": r["jsd"]}
               for kind, r in ev.classifiers.items()}
    summary["separation_worst"] = {"feature": worst["feature"], "value": float(worst["separation_power"]),
                                   "floor": float(worst["floor"])}
    summary["separation_above_twice_floor"] = int((ev.separation["separation_power"]
                                                   > 2 * ev.separation["floor"]).sum())
    summary["separation_cells"] = len(ev.separation)
    row = ev.distances[ev.distances["energy_range"] == "all"].iloc[0]
    summary["fpd_x1e3"] = [row["fpd"] * 1e3, row["fpd_error"] * 1e3]
    summary["kpd_x1e3"] = [row["kpd"] * 1e3, row["kpd_error"] * 1e3]
    summary["fpd_reference_halves_x1e3"] = [row["fpd_reference_split"] * 1e3,
                                            row["fpd_reference_split_error"] * 1e3]
    return {"summary": summary, "evaluation": out, "events": len(reference), "generation_seconds": generation,
            "evaluation_seconds": seconds}


def report(name: str, trained: dict, scores: dict) -> None:
    s = scores["summary"]
    print(f"{name}: {trained['iterations']} iterations, {trained['train_seconds']:.0f} s of training "
          f"(budget {BUDGET_S} s), shower-shape AUC {trained['own_fidelity']['auc']:.3f}")
    for kind in ("high-level", "low-level"):
        low, high = s[kind]["auc_interval"]
        print(f"  CaloChallenge {kind} AUC {s[kind]['auc']:.3f} [{low:.3f}, {high:.3f}], JSD {s[kind]['jsd']:.3f}")
    w = s["separation_worst"]
    print(f"  worst separation power {w['value']:.4f} ({w['feature']}, floor {w['floor']:.4f}); "
          f"{s['separation_above_twice_floor']} of {s['separation_cells']} cells above twice the floor")
    print(f"  FPD x1e3 {s['fpd_x1e3'][0]:.3f} ± {s['fpd_x1e3'][1]:.3f} (reference halves "
          f"{s['fpd_reference_halves_x1e3'][0]:.3f}), KPD x1e3 {s['kpd_x1e3'][0]:.3f} ± {s['kpd_x1e3'][1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "caloflow_eplus.toml")
    parser.add_argument("--store", type=Path, default=Path("runs") / "caloflow_eplus")
    parser.add_argument("--gan", action=argparse.BooleanOptionalAction, default=False,
                        help="train and evaluate the GAN of examples/calogan_eplus.toml beside it")
    parser.add_argument("--gan-store", type=Path, default=Path("runs") / "bench_calogan")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--events", type=int, default=10_000, help="showers per side in the evaluation")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, not the figures")
    args = parser.parse_args()

    specs = {"flow": (load_gan_spec(args.spec), args.store)}
    if args.gan:
        specs["gan"] = (load_gan_spec(ROOT / "examples" / "calogan_eplus.toml"), args.gan_store)
    out = {}
    for name, (spec, store) in specs.items():
        if args.quick:
            training = spec.training.model_copy(update={"iterations": 40, "evaluate_showers": 1000})
            spec = spec.model_copy(update={"name": spec.name + "_quick", "gan" if spec.gan else "flow": training,
                                           "checkpoint_every": 20})
            store = store.with_name(store.name + "_quick")
        trained = train(spec, store, args.threads)
        scores = challenge(trained, spec.dataset, 1000 if args.quick else args.events)
        report(name, trained, scores)
        high = scores["summary"]["high-level"]["auc"]
        out[name] = {"spec": spec.model_dump(mode="json"), "store": str(store), "state": trained["hash"],
                     "training": {k: v for k, v in trained.items() if k not in ("results", "hash")},
                     "calochallenge": scores,
                     "target": {"high_level_auc_below": AUC_TARGET, "within_seconds": BUDGET_S,
                                "met": high < AUC_TARGET and trained["train_seconds"] <= BUDGET_S}}
    if "gan" in out:
        print(f"high-level AUC, flow vs GAN: {out['flow']['calochallenge']['summary']['high-level']['auc']:.3f} vs "
              f"{out['gan']['calochallenge']['summary']['high-level']['auc']:.3f}")
    write_result("caloflow" + ("_quick" if args.quick else ""), {
        **out, "target": out["flow"]["target"],
        "command": "python benchmarks/caloflow.py" + (" --gan" if args.gan else "") + (" --quick" if args.quick else ""),
    })


if __name__ == "__main__":
    main()
