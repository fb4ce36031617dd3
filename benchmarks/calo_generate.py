"""Shower generation speed of the parameterised calorimeter simulator.

Target (issue #10): at least 50,000 e+ showers per second on 2 cores (central
beam, spot fluctuations on). Measured for every particle, with 1 and 2 worker
threads alternating, median of --repeats runs of --events showers each; the
threads=1 figure is the baseline the threaded one is compared with.

    python benchmarks/calo_generate.py [--events 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab.hep import simulate

TARGET = 50_000


def rate(particle: str, events: int, threads: int) -> float:
    start = time.perf_counter()
    simulate(particle, events, seed=0, threads=threads)
    return events / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    simulate("eplus", 4096)  # warm-up: lookup tables, imports
    cases = {}
    for particle in ("eplus", "gamma", "piplus"):
        runs = {1: [], 2: []}
        for _ in range(args.repeats):
            for threads in (1, 2):
                runs[threads].append(rate(particle, args.events, threads))
        cases[particle] = {
            f"threads_{t}": {"showers_per_s_median": statistics.median(r), "min": min(r), "max": max(r), "runs": r}
            for t, r in runs.items()
        }
        cases[particle]["speedup_2_vs_1"] = statistics.median(runs[2]) / statistics.median(runs[1])
        print(f"{particle:7s} 1 thread {statistics.median(runs[1]):9,.0f}/s   2 threads "
              f"{statistics.median(runs[2]):9,.0f}/s  (range {min(runs[2]):,.0f}–{max(runs[2]):,.0f}; "
              f"{cases[particle]['speedup_2_vs_1']:.2f}x)")
    showers_per_s = cases["eplus"]["threads_2"]["showers_per_s_median"]
    met = showers_per_s >= TARGET
    print(f"e+ showers per second (2 threads, median): {showers_per_s:,.0f}; target {TARGET:,}: "
          f"{'met' if met else 'NOT met'} ({showers_per_s / TARGET:.2f}x the target)")
    write_result("calo_generate", {"events": args.events, "repeats": args.repeats, "showers_per_s": showers_per_s,
                                   "target_showers_per_s": TARGET, "target_met": met, "cases": cases})


if __name__ == "__main__":
    main()
