"""Pruned generators scored the CaloChallenge way: the numbers of docs/hep.md's last section.

1. Planted answers for the scores: the simulator posing as a generator (nothing to find) and the same with
   layer 1 scaled by 1.1 — at one incident energy (50 GeV) and over 1–100 GeV — against 1,000 simulated e+,
   with the tests' small classifier and with the default one.
2. Generation time per shower at batch 1, 100 and 10,000 of the default `calogan` generator, dense and with
   about 93.75 % of its Linear weights zeroed (each kept with probability 1/16, masks made permanent),
   alternating the two for --rounds.

    python benchmarks/generator_scores.py            # 34 s on 2 cores at a load of 2.5

Writes benchmarks/results/generator_scores.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import torch  # noqa: E402

from prunelab.hep.calochallenge_classifier import ClassifierSettings  # noqa: E402
from prunelab.hep.generator_scores import (generation_timing, parameter_counts, score_model,  # noqa: E402
                                           simulator_generator)
from prunelab.hep.simulator import simulate  # noqa: E402
from prunelab.pruning.masks import apply_masks  # noqa: E402
from prunelab.tasks.models import build_model  # noqa: E402

# tests/test_generator_scores.py's classifier
FAST = ClassifierSettings(hidden=(32,), epochs=10, batch_size=100, learning_rate=1e-3, patience=3, bootstrap=200)


def _brief(score: dict) -> dict:
    c = score["classifiers"]
    return {"low_level_auc": [c["low-level"][k] for k in ("auc", "auc_low", "auc_high")],
            "high_level_auc": [c["high-level"][k] for k in ("auc", "auc_low", "auc_high")],
            "high_level_epochs": [c["high-level"]["best_epoch"], c["high-level"]["epochs_trained"]],
            "distances": score["distances"], "separation": score["separation"]}


def planted() -> dict:
    cases = {"simulator, 1-100 GeV": (simulate("eplus", 1000, seed=11), None, FAST),
             "layer 1 x 1.1, 50 GeV": (simulate("eplus", 1000, energy=50.0, seed=21), (1, 1.1), FAST),
             "layer 1 x 1.1, 1-100 GeV": (simulate("eplus", 1000, seed=11), (1, 1.1), FAST),
             "layer 1 x 1.1, 1-100 GeV, default classifier": (simulate("eplus", 1000, seed=11), (1, 1.1), None)}
    out = {}
    for name, (reference, scale, settings) in cases.items():
        began = time.perf_counter()
        score = score_model(simulator_generator(scale=scale), reference, seed=3, classifier_settings=settings)
        out[name] = {**_brief(score), "seconds": time.perf_counter() - began}
        print(name, out[name], flush=True)
    return out


def timing(rounds: int) -> dict:
    dense = build_model("calogan", (507,), 1, seed=0)
    pruned = build_model("calogan", (507,), 1, seed=0)
    g = torch.Generator().manual_seed(0)
    apply_masks(pruned, {f"{n}.weight": torch.rand(m.weight.shape, generator=g) >= 0.9375
                         for n, m in pruned.named_modules()
                         if n.startswith("generator") and isinstance(m, torch.nn.Linear)})
    out = {"parameters": {"dense": parameter_counts(dense), "pruned": parameter_counts(pruned)}, "rounds": []}
    for r in range(rounds):
        for name, model in (("dense", dense), ("pruned", pruned)):
            began = time.perf_counter()
            t = generation_timing(model, threads=1)
            t["seconds"] = time.perf_counter() - began
            out["rounds"].append({"round": r, "model": name, **t})
            print(r, name, [(b["batch"], round(b["median"] * 1e6, 1), round(b["min"] * 1e6, 1),
                             round(b["max"] * 1e6, 1)) for b in t["batches"]], f"load {t['load_average']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    write_result("generator_scores", {"planted": planted(), "timing": timing(args.rounds)})


if __name__ == "__main__":
    main()
