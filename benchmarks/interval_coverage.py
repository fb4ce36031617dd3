"""Coverage of 95 % intervals over seeds: Student t vs bootstrap (BCa), by number of seeds.

Not a speed target: the measurement behind ``mean_ci(method="auto")`` (Student t
below 30 seeds, bootstrap from 30). For each sample size, ``--trials`` samples
are drawn from a known distribution of a "seed accuracy" and we count how often
each interval contains the true mean. Two distributions: normal (0.9, 0.02),
and a skewed one (0.9 − Exponential(0.02): occasional bad seeds).

    python benchmarks/interval_coverage.py [--trials 400]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab.analysis import bootstrap_ci
from prunelab.study import BOOTSTRAP_FROM, mean_ci

SIZES = (3, 5, 10, 20, 30, 50)
DISTRIBUTIONS = {
    "normal": (lambda rng, n: rng.normal(0.9, 0.02, size=n), 0.9),
    "skewed": (lambda rng, n: 0.9 - rng.exponential(0.02, size=n), 0.88),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=400)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # scipy warns on degenerate BCa resamples at n = 3
    rows = []
    for name, (draw, truth) in DISTRIBUTIONS.items():
        for n in SIZES:
            rng = np.random.default_rng(n)
            hits = {"t": 0, "bootstrap": 0, "auto": 0}
            for trial in range(args.trials):
                sample = draw(rng, n).tolist()
                intervals = {"t": mean_ci(sample, method="t")[1:],
                             "bootstrap": bootstrap_ci(sample, n_resamples=2000, seed=trial)[1:]}
                intervals["auto"] = intervals["bootstrap" if n >= BOOTSTRAP_FROM else "t"]
                for method, (lo, hi) in intervals.items():
                    hits[method] += int(lo <= truth <= hi)
            row = {"distribution": name, "seeds": n} | {m: h / args.trials for m, h in hits.items()}
            rows.append(row)
            print(f"{name:7s} n={n:3d}  t {row['t']:.3f}  bootstrap {row['bootstrap']:.3f}  auto {row['auto']:.3f}")
    shortfall = max(r["bootstrap"] - r["auto"] for r in rows)
    write_result("interval_coverage", {
        "trials": args.trials, "nominal": 0.95, "bootstrap_from": BOOTSTRAP_FROM, "rows": rows,
        "target": "auto covers at least as often as the bootstrap at every size (within 0.02, Monte Carlo noise)",
        "met": bool(shortfall <= 0.02), "largest_shortfall_vs_bootstrap": shortfall,
        "worst_auto_coverage": min(r["auto"] for r in rows),
    })


if __name__ == "__main__":
    main()
