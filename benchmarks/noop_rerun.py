"""A no-op rerun of a finished study against its first run (issue #13: <= 5 % of the first run plus start-up).

The study is the README's main job, `prunelab run examples/quickstart.toml --executor local
--workers 2`, into a fresh store (timed once), then the same command again --repeats times
(nothing to compute: it plans, finds every state stored, and prints the summary, the paired
effects and the hypotheses), alternating with `python -c "import torch"` — the start-up
that any command building a study must pay.

    python benchmarks/noop_rerun.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import wall, write_result  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "examples" / "quickstart.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "prunelab.cli", "run", str(SPEC), "--store", str(Path(folder) / "store"),
                   "--executor", "local", "--workers", "2"]
        first = wall(command)
        reruns, imports = [], []
        for _ in range(args.repeats):
            reruns.append(wall(command))
            imports.append(wall([sys.executable, "-c", "import torch"]))
    rerun, start_up = statistics.median(reruns), statistics.median(imports)
    share = (rerun - start_up) / first
    met = share <= 0.05
    print(f"first run {first:.1f} s; no-op rerun median {rerun:.2f} s (range {min(reruns):.2f}-{max(reruns):.2f}); "
          f"import torch {start_up:.2f} s; (rerun - start-up) / first run = {share:.1%}; target <= 5 %: {met}")
    write_result("noop_rerun", {
        "study": "examples/quickstart.toml, --executor local --workers 2", "first_run_seconds": first,
        "rerun_seconds": {"median": rerun, "min": min(reruns), "max": max(reruns), "all": reruns},
        "import_torch_seconds": {"median": start_up, "min": min(imports), "max": max(imports)},
        "rerun_over_first_run": rerun / first, "rerun_minus_start_up_over_first_run": share,
        "target": "(no-op rerun - start-up) <= 5 % of the first run", "met": met,
    })


if __name__ == "__main__":
    main()
