"""The `local` executor on studies too small for a cluster: never more than 5 % slower than `serial`.

Issue #13: "The Dask local executor is never more than 5 % slower than serial (fall back to
in-process when a study is too small to gain)". The tree of dask_scaling.py (2 independent
seeds of LeNet-300-100 on digits, each a dense training and 3 rounds of prune 20 % / rewind /
retrain) at several training lengths, from a few seconds of work to enough for two workers to
gain. Each run is a fresh process (as `prunelab run` is); serial and local alternate, each going
first in turn; medians of --repeats. For each size: local / serial, whether local started its
cluster (its summary's note says why not), and identical weights.

Target: local / serial <= 1.05 at every size. With --without-fallback, a third contender
runs local with ``fallback=False`` (a cluster whatever the plan: what local did before).

    python benchmarks/dask_fallback.py [--repeats 3] [--iterations 50 500 1500 3000] [--without-fallback] [--name NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from dask_scaling import fresh_process_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, nargs="+", default=[50, 500, 1500, 3000])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--without-fallback", action="store_true", help="also time local with fallback=False")
    parser.add_argument("--name", default="dask_fallback", help="result file name")
    args = parser.parse_args()
    contenders = ("serial", "local") + (("local-no-fallback",) if args.without_fallback else ())
    fresh_process_run(10, "serial", 1)  # fills the dataset cache
    rows = []
    for iterations in args.iterations:
        times = {c: [] for c in contenders}
        notes, same_bits = [], True
        for repeat in range(args.repeats):
            order = contenders[repeat % len(contenders):] + contenders[:repeat % len(contenders)]  # each first in turn
            bits = {}
            for executor in order:
                seconds, bits[executor] = fresh_process_run(iterations, executor, args.seeds,
                                                            notes if executor == "local" else None)
                times[executor].append(seconds)
            same_bits &= all(b == bits["serial"] for b in bits.values())
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["local"] / med["serial"]
        in_process = [bool(n) for n in notes]
        without = med["local-no-fallback"] / med["serial"] if args.without_fallback else None
        rows.append({"iterations_per_train": iterations, "seconds": times, "median": med, "ratio": ratio,
                     "ratio_without_fallback": without,
                     "pairs": [a / b for a, b in zip(times["local"], times["serial"])],
                     "local_ran_in_process": in_process, "note": notes[-1], "bitwise_identical": same_bits,
                     "met": ratio <= 1.05 and same_bits})
        how = "in process" if all(in_process) else "cluster" if not any(in_process) else "mixed"
        print(f"{iterations:>6} iterations: serial {med['serial']:.2f} s, local {med['local']:.2f} s "
              f"({ratio:.3f}x, {how}); identical weights: {same_bits}"
              + (f"; without the fallback {med['local-no-fallback']:.2f} s ({without:.3f}x)" if without else ""),
              flush=True)
    met = all(r["met"] for r in rows)
    write_result(args.name, {
        "tree": f"{args.seeds} roots x (train + 3 x prune/rewind/train), lenet_300_100/digits",
        "command": " ".join(["python benchmarks/dask_fallback.py", *sys.argv[1:]]), "workers": 2,
        "repeats": args.repeats, "rows": rows, "target": "local / serial <= 1.05 at every size", "met": met,
    })


if __name__ == "__main__":
    main()
