"""State write: what `Store.write_state` costs for one trained LeNet-300-100 state, and how much
of it is fsync (issue #13's orchestration overhead: how far batching fsyncs could go).

Each repeat writes --states distinct snapshots (LeNet-300-100 on 40 inputs after one Adam
step: 6 weight tensors and 12 optimizer tensors, ~0.27 M values) into a fresh store, once with
the store's durable publish (each blob fsynced with its directory) and once with fsync
replaced by a no-op; the two alternate, medians of --repeats. Nothing is trained.

    python benchmarks/state_write.py [--states 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import prunelab.files as files  # noqa: E402
from prunelab.experiment.snapshot import ModelSpec, Snapshot  # noqa: E402
from prunelab.experiment.store import Store  # noqa: E402
from prunelab.tasks.models import build_model  # noqa: E402


def snapshots(n: int) -> list[Snapshot]:
    spec = ModelSpec("lenet_300_100", (40,), 10)
    out = []
    for i in range(n):
        model = build_model("lenet_300_100", (40,), 10, seed=i)
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(4, 40)).sum().backward()
        optimizer.step()
        out.append(Snapshot.capture(model, spec, "mnist1d", optimizer=optimizer.state_dict(), iteration=10))
    return out


def write_all(states: list[Snapshot]) -> float:
    """Milliseconds per state to write ``states`` into a fresh store."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store")
        start = time.perf_counter()
        for i, snap in enumerate(states):
            store.write_state({"hash": f"{i:064x}", "parent": None, "depth": 0,
                               "recipe": {"type": "Bench", "version": 1, "params": {}}, "tags": []}, snap)
        return (time.perf_counter() - start) / len(states) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    states = snapshots(args.states)
    durable = files.fsync_path
    runs: dict[str, list[float]] = {"fsync": [], "no_fsync": []}
    write_all(states[:4])  # warm-up: imports, first files
    for _ in range(args.repeats):
        for mode in runs:
            files.fsync_path = durable if mode == "fsync" else (lambda path: None)
            try:
                runs[mode].append(write_all(states))
            finally:
                files.fsync_path = durable
    median = {k: statistics.median(v) for k, v in runs.items()}
    share = (median["fsync"] - median["no_fsync"]) / median["fsync"]
    print(f"write_state: {median['fsync']:.1f} ms a state with fsync ({min(runs['fsync']):.1f}–"
          f"{max(runs['fsync']):.1f}), {median['no_fsync']:.1f} ms without ({min(runs['no_fsync']):.1f}–"
          f"{max(runs['no_fsync']):.1f}): fsync is {share:.0%} of it")
    write_result("state_write", {
        "command": "python benchmarks/state_write.py " + " ".join(sys.argv[1:]),
        "states": args.states, "repeats": args.repeats, "ms_per_state": runs, "median": median,
        "fsync_share": share,
        "note": "measures what batching a state's fsyncs could save of the per-state orchestration cost "
                "(docs/benchmarks/study_overhead.md); no target of its own",
    })


if __name__ == "__main__":
    main()
