"""The shower GAN: fidelity after a fixed training budget, generation speed, and fidelity against sparsity.

Targets (issue #11): train e+ within 20 minutes on 2 cores, then report the
classifier two-sample AUC on shower shapes (aim: below 0.75), the worst
normalised Wasserstein distance over observables, and showers per second of
the generator against the parameterised simulator on the same machine
(alternating, median of --repeats). Then the pruning study of the same spec:
one-shot and iterative magnitude pruning of the generator, each followed by a
fine-tune, and the dense control.

    python benchmarks/calogan.py                       # examples/calogan_eplus.toml, ~35 minutes
    python benchmarks/calogan.py --quick               # a smoke run of the same pipeline (minutes)

The store is kept (--store), so a second run reuses every state and only
re-measures the generation speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import torch  # noqa: E402

from prunelab.experiment.query import open_store  # noqa: E402
from prunelab.hep.generation import sample  # noqa: E402
from prunelab.hep.gan_study import build_gan_study, gan_points, load_gan_spec  # noqa: E402
from prunelab.hep.simulator import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 20 * 60
AUC_TARGET = 0.75


def speed(model, particle: str, events: int, repeats: int, threads: int) -> dict:
    """Showers per second, generator vs simulator, alternating; both at ``threads`` threads."""
    import numpy as np

    energies = np.random.default_rng(0).uniform(1, 100, events)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sample(model, energies[:4096])  # warm-up
        simulate(particle, 4096, threads=threads)
        runs = {"generator": [], "simulator": []}
        for r in range(repeats):
            began = time.perf_counter()
            sample(model, energies, seed=r)
            runs["generator"].append(events / (time.perf_counter() - began))
            began = time.perf_counter()
            simulate(particle, events, seed=r, threads=threads)
            runs["simulator"].append(events / (time.perf_counter() - began))
    finally:
        torch.set_num_threads(previous)
    out = {k: {"showers_per_s_median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
           for k, v in runs.items()}
    out["generator_vs_simulator"] = statistics.median(runs["generator"]) / statistics.median(runs["simulator"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "calogan_eplus.toml")
    parser.add_argument("--store", type=Path, default=Path("runs") / "bench_calogan")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while training the GAN")
    parser.add_argument("--workers", type=int, default=2, help="processes for the pruning study (1 thread each)")
    parser.add_argument("--events", type=int, default=20_000, help="showers per speed measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-prune", action="store_true", help="skip the pruning study")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, not the figures")
    args = parser.parse_args()

    spec = load_gan_spec(args.spec)
    if args.quick:
        gan = spec.gan.model_copy(update={"iterations": 200, "evaluate_showers": 2000})
        prune = spec.pruning.model_copy(update={"rounds": 2, "one_shot": (0.75,), "finetune": spec.pruning.finetune.model_copy(
            update={"iterations": 50, "evaluate_showers": 2000})})
        spec = spec.model_copy(update={"name": spec.name + "_quick", "gan": gan, "pruning": prune,
                                       "checkpoint_every": 100})
        args.events, args.repeats = 4096, 2
    training_only = spec.model_copy(update={"pruning": None})

    began = time.perf_counter()
    summary = build_gan_study(training_only, args.store).run("serial", threads=args.threads)
    training_wall = time.perf_counter() - began
    print(summary)
    results = open_store(args.store)
    points = gan_points(results)
    trained = points[points["kind"] == "trained"].iloc[0]
    checkpoints = points[points["kind"] == "checkpoint"].sort_values("iteration")
    train_seconds = sum(results.get(h)["metrics"]["train_seconds"] for h in checkpoints["hash"])
    fid = results.get(trained["hash"])["metrics"]["fidelity"]
    s = fid["summary"]
    print(f"trained {spec.gan.iterations} iterations in {train_seconds:.0f} s of training "
          f"({training_wall:.0f} s with evaluations, this run)")
    print(f"two-sample AUC {s['auc']:.3f} [{s['auc_interval'][0]:.3f}, {s['auc_interval'][1]:.3f}], worst W1/SD "
          f"{s['worst_wasserstein']:.3f} ({s['worst_observable']}), median {s['median_wasserstein']:.3f}")

    model = results.load_model(trained["hash"])
    particle = spec.dataset.removeprefix("calo_showers_")
    rates = speed(model, particle, args.events, args.repeats, args.threads)
    print(f"generator {rates['generator']['showers_per_s_median']:,.0f}/s vs simulator "
          f"{rates['simulator']['showers_per_s_median']:,.0f}/s: {rates['generator_vs_simulator']:.2f}x")

    curve = None
    if not args.no_prune and spec.pruning is not None:
        began = time.perf_counter()
        print(build_gan_study(spec, args.store).run("local" if args.workers > 1 else "serial", workers=args.workers,
                                                    threads=1))
        prune_wall = time.perf_counter() - began
        points = gan_points(open_store(args.store))
        keep = ["label", "kind", "seed", "round", "target", "sparsity", "auc", "auc_low", "auc_high",
                "worst_wasserstein", "worst_observable", "median_wasserstein", "max_ks", "response_bias"]
        table = points[points["kind"].isin(["trained", "dense_control", "imp", "one_shot"])].sort_values(
            ["kind", "sparsity"])[keep]
        print(table.to_string(index=False))
        curve = {"wall_seconds_this_run": prune_wall, "points": table.to_dict(orient="records")}

    write_result("calogan" + ("_quick" if args.quick else ""), {
        "spec": spec.model_dump(mode="json"),
        "training": {"iterations": spec.gan.iterations, "train_seconds": train_seconds,
                     "wall_seconds_this_run": training_wall, "threads": args.threads,
                     "budget_seconds": BUDGET_S, "within_budget": train_seconds <= BUDGET_S,
                     "curve": [{"iteration": int(r["iteration"]), "auc": r["auc"],
                                "worst_wasserstein": r["worst_wasserstein"]} for _, r in checkpoints.iterrows()]},
        "fidelity": {**s, "events": fid["two_sample"]["test_events"] + fid["two_sample"]["train_events"],
                     "observables": [r for r in fid["table"] if r["energy_bin"] == "all"],
                     "energy_response": fid["energy_response"]},
        "target": {"auc_below": AUC_TARGET, "met": s["auc"] < AUC_TARGET},
        "generation_speed": rates,
        "pruning": curve,
        "command": "python benchmarks/calogan.py" + (" --quick" if args.quick else ""),
    })


if __name__ == "__main__":
    main()
