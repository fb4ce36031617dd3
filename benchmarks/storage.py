"""Store size per state vs torch.save of each state.

The tree of benchmarks/orchestration.py (dense + 3 branches x 5 rounds of
prune / rewind / retrain on LeNet-300-100/digits; 47 states) is run into a
fresh store. Baseline: for every state, ``torch.save`` of what a hand-rolled
checkpoint folder would hold — the model state dict (weights), the optimizer
state and the masks (bool tensors) — i.e. the leanest plain-torch checkpoint.

Target (issue #3): store bytes per state <= 0.6x torch.save bytes per state.
The store's size counts every file in it: blobs, manifests, SQLite index.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="training length (size does not depend on it)")
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
        ours = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        blobs = sum(p.stat().st_size for p in (store / "blobs").rglob("*") if p.is_file())
        manifests = sum(p.stat().st_size for p in (store / "states").rglob("*") if p.is_file())
    n = len(states)
    theirs = sum(baseline.values())
    ratio = ours / theirs
    print(f"{n} states: store {ours / 1e6:.2f} MB ({ours / n / 1e3:.1f} kB/state; blobs {blobs / 1e6:.2f} MB, "
          f"manifests {manifests / 1e6:.2f} MB) vs torch.save {theirs / 1e6:.2f} MB ({theirs / n / 1e3:.1f} kB/state) "
          f"-> ratio {ratio:.3f}; target <= 0.6: {ratio <= 0.6}")
    write_result("storage", {
        "tree": f"lenet_300_100/digits, dense + {len(BRANCHES)} branches x {ROUNDS} rounds", "states": n,
        "store_bytes": ours, "store_blob_bytes": blobs, "store_manifest_bytes": manifests,
        "torch_save_bytes": theirs, "torch_save_bytes_by_recipe": {k: sum(v) for k, v in by_recipe.items()},
        "bytes_per_state": {"prunelab": ours / n, "torch_save": theirs / n},
        "ratio": ratio, "target": "<= 0.6", "met": ratio <= 0.6,
    })


if __name__ == "__main__":
    main()
