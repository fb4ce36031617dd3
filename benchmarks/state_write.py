"""State write: what `Store.write_state` costs for one trained LeNet-300-100 state (issue #13's
orchestration overhead), in the store's layout (format 3: a state's new tensors in one pack
file) against the layout before it (format 2: one file a tensor), and without fsync.

Each repeat writes --states distinct snapshots (LeNet-300-100 on 40 inputs after one Adam
step: 6 weight tensors and 12 optimizer tensors, 43,410 weights and 0.13 M values in all) into a fresh store, once in
each way; the ways alternate, medians of --repeats. Nothing is trained. The one-file-a-tensor
way is the code of format 2 (temporary file, safetensors, fsync, rename, directory fsync for
each tensor), run through the same write_state. The deferred way writes the packs as runs do,
inside ``Store.deferred_publishing`` (fsyncs and renames in a thread): it reports what the
writing thread waits a state, and the time a state until the last one is in place.

    python benchmarks/state_write.py [--states 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

import prunelab.files as files  # noqa: E402
from prunelab.experiment.snapshot import ModelSpec, Snapshot  # noqa: E402
from prunelab.experiment.store import Store, save_file  # noqa: E402
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


def write_all(states: list[Snapshot], deferred: bool = False) -> tuple[float, float]:
    """Milliseconds per state to write ``states`` into a fresh store: (in line, in all). Deferred:
    inside ``Store.deferred_publishing``, where fsyncs and renames happen in a thread; "in line"
    is what the writing thread waits, "in all" includes waiting for the last state at the end."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store")
        with store.deferred_publishing() if deferred else nullcontext():
            start = time.perf_counter()
            for i, snap in enumerate(states):
                store.write_state({"hash": f"{i:064x}", "parent": None, "depth": 0,
                                   "recipe": {"type": "Bench", "version": 1, "params": {}}, "tags": []}, snap)
            inline = time.perf_counter() - start
        total = time.perf_counter() - start
        return inline / len(states) * 1000, total / len(states) * 1000


def one_file_a_tensor(self, tensors, job=None):
    """Format 2's writer: each tensor in its own file, named by its content hash."""
    for digest, tensor in tensors.items():
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=digest[:8] + ".", suffix=".tmp", dir=path.parent)
            os.close(fd)
            save_file({"t": tensor.detach().contiguous().cpu()}, tmp)
            files.publish(tmp, path)
    return {digest: digest for digest in tensors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    states = snapshots(args.states)
    durable, packs = files.fsync_path, Store._store_tensors
    runs: dict[str, list[float]] = {"packs": [], "one_file_a_tensor": [], "packs_no_fsync": [],
                                    "packs_deferred_inline": [], "packs_deferred_in_all": []}
    write_all(states[:4])  # warm-up: imports, first files
    for _ in range(args.repeats):
        for mode in ("packs", "one_file_a_tensor", "packs_no_fsync", "packs_deferred"):
            files.fsync_path = (lambda path: None) if mode == "packs_no_fsync" else durable
            Store._store_tensors = one_file_a_tensor if mode == "one_file_a_tensor" else packs
            try:
                inline, in_all = write_all(states, deferred=mode == "packs_deferred")
            finally:
                files.fsync_path, Store._store_tensors = durable, packs
            if mode == "packs_deferred":
                runs["packs_deferred_inline"].append(inline)
                runs["packs_deferred_in_all"].append(in_all)
            else:
                runs[mode].append(in_all)
    median = {k: statistics.median(v) for k, v in runs.items()}
    ratio = median["one_file_a_tensor"] / median["packs"]
    share = (median["packs"] - median["packs_no_fsync"]) / median["packs"]
    for mode, values in runs.items():
        print(f"{mode:18s} {median[mode]:6.1f} ms a state ({min(values):.1f}–{max(values):.1f})")
    print(f"packs are {ratio:.1f}x faster than one file a tensor; fsync is {share:.0%} of a pack write")
    write_result("state_write", {
        "command": "python benchmarks/state_write.py " + " ".join(sys.argv[1:]),
        "states": args.states, "repeats": args.repeats, "ms_per_state": runs, "median": median,
        "one_file_a_tensor_vs_packs": ratio, "fsync_share_of_packs": share,
        "note": "the per-state storage cost behind the study overhead (docs/benchmarks/study_overhead.md); "
                "no target of its own",
    })


if __name__ == "__main__":
    main()
