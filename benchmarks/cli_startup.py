"""Wall time of the CLI's reading commands on a small store, beside `python -c "import torch"`.

Issue #13: `prunelab --help`, `ls`, `tree`, `show` and `verify` on a small store in
<= 0.8 s wall. The reference is what every command used to pay first: importing torch.
The store is a real study (digits, LeNet-300-100, 2 seeds, 2 pruning rounds: 14 states).
Each command and the reference run alternately, --repeats times; medians and ranges.

    python benchmarks/cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import wall, write_result  # noqa: E402

SPEC = """
[study]
name = "startup"
store = "STORE"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 50
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 2
"""
TARGET = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "prunelab.cli"]
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        spec = Path(folder) / "spec.toml"
        spec.write_text(SPEC.replace("STORE", str(store)))
        subprocess.run(cli + ["run", str(spec)], check=True, capture_output=True)
        first = sorted((store / "states").glob("*.json"))[0].stem[:10]
        commands = {"--help": ["--help"], "ls": ["ls", str(store)], "tree": ["tree", str(store)],
                    "show": ["show", str(store), first], "verify": ["verify", str(store)]}
        reference = [sys.executable, "-c", "import torch"]
        times = {name: [] for name in commands} | {"import torch": []}
        for _ in range(args.repeats):
            for name, extra in commands.items():
                times[name].append(wall(cli + extra))
                times["import torch"].append(wall(reference))
    rows = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in times.items()}
    for name, r in rows.items():
        print(f"{name:>14}: median {r['median']:.3f} s (range {r['min']:.3f}-{r['max']:.3f})")
    worst = max(rows[name]["median"] for name in commands)
    print(f"slowest command median {worst:.3f} s; target <= {TARGET} s: {worst <= TARGET}")
    write_result("cli_startup", {"store_states": 14, "repeats": args.repeats, "seconds": rows,
                                 "slowest_median": worst, "target": f"<= {TARGET} s wall per command",
                                 "met": worst <= TARGET})


if __name__ == "__main__":
    main()
