"""Store size per state vs torch.save of each state.

The tree of benchmarks/orchestration.py (dense + 3 branches x 5 rounds of
prune / rewind / retrain on LeNet-300-100/digits; 47 states) is run into a
fresh store. Baseline: for every state, ``torch.save`` of what a hand-rolled
checkpoint folder would hold — the model state dict (weights), the optimizer
state and the masks (bool tensors) — i.e. the leanest plain-torch checkpoint.

Target (issue #3): store bytes per state <= 0.6x torch.save bytes per state.
The store's size counts every file in it: blobs, manifests, SQLite index.

Durability (issue #14): every blob and manifest is fsynced, and its directory after
the rename. The cost is measured by writing the same 47 snapshots into fresh stores
with fsync on and off (alternating, median of --repeats), per state written.

    python benchmarks/storage.py [--iterations 100]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from orchestration import BRANCHES, ROUNDS, build_tree  # noqa: E402

from prunelab import TrainConfig
from prunelab.experiment import open_store


def torch_save_bytes(snapshot) -> int:
    buffer = io.BytesIO()
    torch.save({"model": snapshot.weights, "optimizer": snapshot.optimizer, "masks": snapshot.masks}, buffer)
    return buffer.getbuffer().nbytes


def fsync_cost(results, repeats: int) -> dict:
    """ms per state to write every snapshot of ``results`` into a fresh store, fsync on vs off."""
    import statistics
    import time

    import prunelab.files as files
    from prunelab.experiment import Store

    snapshots = [(m, results.snapshot(m["hash"])) for m in results.states()]
    real = files.fsync_path
    times = {True: [], False: []}
    for _ in range(repeats):
        for durable in (True, False):
            files.fsync_path = real if durable else (lambda path: None)
            with tempfile.TemporaryDirectory() as folder:
                store = Store(Path(folder) / "s")
                t0 = time.perf_counter()
                for m, snap in snapshots:
                    base = {k: m[k] for k in ("hash", "parent", "depth", "recipe", "tags", "seed")}
                    store.write_state(base, snap)
                times[durable].append(1e3 * (time.perf_counter() - t0) / len(snapshots))
    files.fsync_path = real
    summary = {("fsync_ms_per_state" if k else "no_fsync_ms_per_state"):
               {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()}
    return {**summary, "repeats": repeats, "ratio_median": statistics.median(times[True]) / statistics.median(times[False])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="training length (size does not depend on it)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fsync on/off write timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        summary = build_tree(store, TrainConfig(iterations=args.iterations, batch_size=60), BRANCHES).run()
        assert summary.ok
        results = open_store(store)
        states = results.states()
        baseline = {m["hash"]: torch_save_bytes(results.snapshot(m["hash"])) for m in states}
        by_recipe: dict[str, list[int]] = {}
        for m in states:
            by_recipe.setdefault(m["recipe"]["type"], []).append(baseline[m["hash"]])
        durability = fsync_cost(results, args.repeats)
        ours = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        blobs = sum(p.stat().st_size for p in (store / "blobs").rglob("*") if p.is_file())
        manifests = sum(p.stat().st_size for p in (store / "states").rglob("*") if p.is_file())
    n = len(states)
    theirs = sum(baseline.values())
    ratio = ours / theirs
    d = durability
    print(f"writing {n} states: {d['fsync_ms_per_state']['median']:.2f} ms/state with fsync, "
          f"{d['no_fsync_ms_per_state']['median']:.2f} without (median of {d['repeats']}): x{d['ratio_median']:.2f}")
    print(f"{n} states: store {ours / 1e6:.2f} MB ({ours / n / 1e3:.1f} kB/state; blobs {blobs / 1e6:.2f} MB, "
          f"manifests {manifests / 1e6:.2f} MB) vs torch.save {theirs / 1e6:.2f} MB ({theirs / n / 1e3:.1f} kB/state) "
          f"-> ratio {ratio:.3f}; target <= 0.6: {ratio <= 0.6}")
    write_result("storage", {
        "tree": f"lenet_300_100/digits, dense + {len(BRANCHES)} branches x {ROUNDS} rounds", "states": n,
        "store_bytes": ours, "store_blob_bytes": blobs, "store_manifest_bytes": manifests,
        "torch_save_bytes": theirs, "torch_save_bytes_by_recipe": {k: sum(v) for k, v in by_recipe.items()},
        "bytes_per_state": {"prunelab": ours / n, "torch_save": theirs / n},
        "ratio": ratio, "target": "<= 0.6", "met": ratio <= 0.6,
        "durability": durability,
    })


if __name__ == "__main__":
    main()
