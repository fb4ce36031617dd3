"""The "Prune Responsibly" reproduction on this machine: 1,020 trained LeNet-300-100 models on real
MNIST plus the report, its wall time against the arithmetic floor, and how the report gets every
model's predictions (recomputed in a stream vs read back from a stored vector).

Target (issue #34): examples/prune_responsibly.toml (≈1,000 trained models) and its report within 30
minutes on 2 CPU cores.

Part 1 times a plain PyTorch loop of one LeNet-300-100 (Adam, batch 60, the same batches) beside
prunelab's own loop, alternating, ``--repeats`` pairs at 1 torch thread: the per-model-step cost
that bounds the study (the floor: trainings × iterations × that cost / 2 cores). Part 2 runs
``prunelab run`` on the example in a fresh store (``--executor local --workers 2``) and
``prunelab report`` on it, each timed with its CPU use. Part 3 times, over the store's states,
recomputing a state's test predictions from its weights against reading them from a stored uint8
vector (safetensors), alternating, median of ``--repeats``.

    python benchmarks/prune_responsibly.py             # about 30 minutes
    python benchmarks/prune_responsibly.py --quick     # 4 seeds, 3 rounds, 300 iterations: minutes

MNIST is read from PRUNELAB_DATA_MIRROR (default ../shared/data when it exists).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loop_pairs, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if "PRUNELAB_DATA_MIRROR" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["PRUNELAB_DATA_MIRROR"] = str(ROOT.parent / "shared" / "data")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from prunelab.tasks import TrainConfig, build_model, load_dataset  # noqa: E402
from prunelab.tasks.evaluation import task_loss  # noqa: E402

EXAMPLE = ROOT / "examples" / "prune_responsibly.toml"
TARGET_SECONDS = 30 * 60


def quick_spec(text: str) -> str:
    swaps = [("seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]", "seeds = [0, 1, 2, 3]"),
             ("iterations = 1000 ", "iterations = 300 "), ("rounds = 10", "rounds = 3"),
             ("vectorize = 10 ", "vectorize = 4 ")]
    for old, new in swaps:
        if old not in text:
            sys.exit(f"examples/prune_responsibly.toml no longer has {old!r}: update quick_spec")
        text = text.replace(old, new)
    return text


def plain_loop(model, data, config: TrainConfig, seed: int) -> None:
    """A hand-written loop: Adam, the same batch size, a seeded permutation per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    n, b = len(data.train), config.batch_size
    per_epoch = n // b
    model.train()
    for it in range(config.iterations):
        epoch, pos = divmod(it, per_epoch)
        if pos == 0:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        idx = perm[pos * b:(pos + 1) * b]
        loss = task_loss(model(data.train.x[idx]), data.train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def loop_benchmark(data, config: TrainConfig, repeats: int) -> dict:
    times = loop_pairs(lambda: build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0), data,
                       config, plain_loop, repeats)
    ratios = [a / b for a, b in zip(times["prunelab"], times["plain"])]
    step = {k: [t / config.iterations * 1e3 for t in v] for k, v in times.items()}
    return {"ms_per_step": {k: {"median": statistics.median(v), "range": [min(v), max(v)]} for k, v in step.items()},
            "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "iterations": config.iterations}


def timed(args: list[str]) -> dict:
    """Wall seconds, CPU use (% of one core) and peak RSS (MB) of one command, via /usr/bin/time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %P", *args], capture_output=True, text=True,
                          env={**os.environ, "CI": "1", "COLUMNS": "160"})
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rss, cpu = proc.stderr.strip().splitlines()[-1].split()
    return {"seconds": seconds, "cpu_percent": float(cpu.rstrip("%")), "peak_rss_mb": int(rss) / 1024,
            "stdout": proc.stdout}


def prediction_paths(store: Path, repeats: int, states: int = 50) -> dict:
    """Recompute a state's test predictions from its weights vs read them from a stored uint8 vector."""
    from safetensors.numpy import load_file, save_file

    from prunelab.analysis.fairness import state_predictions
    from prunelab.analysis.tables import study_points
    from prunelab.experiment.query import open_store

    results = open_store(store)
    hashes = list(dict.fromkeys(study_points(results)["hash"]))[:states]
    with tempfile.TemporaryDirectory() as tmp:
        for h in hashes:  # what a stored form would hold: one byte per test example
            save_file({"predicted": state_predictions(results, h)[1].astype(np.uint8)}, f"{tmp}/{h}.safetensors")
        times = {"recompute": [], "stored": []}
        for r in range(repeats):
            for name in ("recompute", "stored") if r % 2 == 0 else ("stored", "recompute"):
                start = time.perf_counter()
                for h in hashes:
                    if name == "recompute":
                        state_predictions(results, h)
                    else:
                        load_file(f"{tmp}/{h}.safetensors")["predicted"]
                times[name].append((time.perf_counter() - start) / len(hashes) * 1e3)
        size = Path(f"{tmp}/{hashes[0]}.safetensors").stat().st_size
    pack = sum(p.stat().st_size for p in (store / "blobs").rglob("*") if p.is_file()) / max(1, len(results))
    return {"states": len(hashes), "ms_per_state": {k: {"median": statistics.median(v), "range": [min(v), max(v)]}
                                                    for k, v in times.items()},
            "stored_bytes_per_state": size, "store_bytes_per_state": pack}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 seeds, 3 rounds, 300 iterations")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="keep the study's store here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = EXAMPLE.read_text()
    spec_text = quick_spec(text) if args.quick else text
    spec = tomllib.loads(spec_text)
    data = load_dataset(spec["task"]["dataset"])
    config = TrainConfig(**{**{k: v for k, v in spec["training"].items() if k != "vectorize"}, "iterations": 300})
    print(f"part 1: 300 iterations of LeNet-300-100, prunelab's loop vs a plain loop, {args.repeats} pairs")
    loop = loop_benchmark(data, config, args.repeats)
    ms = loop["ms_per_step"]
    print(f"  plain {ms['plain']['median']:.2f} ms/step, prunelab {ms['prunelab']['median']:.2f} ms/step: ratio "
          f"{loop['ratio_median']:.3f} ({loop['ratio_range'][0]:.3f}–{loop['ratio_range'][1]:.3f})")

    seeds = len(spec["study"]["seeds"])
    branches = spec["branches"]
    trainings = seeds * (1 + sum(b["rounds"] for b in branches.values()))
    steps = trainings * spec["training"]["iterations"]
    floor = steps * ms["plain"]["median"] / 1e3 / 2
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.toml"
        spec_path.write_text(spec_text)
        store = args.keep or Path(tmp) / "store"
        run = timed([sys.executable, "-m", "prunelab.cli", "run", str(spec_path), "--store", str(store),
                     "--executor", "local", "--workers", "2"])
        print(f"part 2: {trainings} trainings ({steps:,} model-steps) in {run['seconds']:.1f} s, CPU "
              f"{run['cpu_percent']:.0f} % of one core; the plain loop's floor on 2 cores {floor:.0f} s")
        report = timed([sys.executable, "-m", "prunelab.cli", "report", str(store), "-o", str(Path(tmp) / "r.html")])
        print(f"  report in {report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
        hypotheses = [line for line in run["stdout"].splitlines() if " pays in " in line or "grow in" in line]
        print(f"part 3: predictions of {min(50, trainings)} states, recomputed vs read back")
        paths = prediction_paths(store, args.repeats)
        pm = paths["ms_per_state"]
        print(f"  recompute {pm['recompute']['median']:.1f} ms/state, stored {pm['stored']['median']:.2f} ms/state; "
              f"a stored vector would be {paths['stored_bytes_per_state']:,} B beside "
              f"{paths['store_bytes_per_state']:,.0f} B of a state")
    total = run["seconds"] + report["seconds"]
    result = {
        "command": "python benchmarks/prune_responsibly.py" + (" --quick" if args.quick else ""),
        "variant": "quick" if args.quick else "full", "trainings": trainings, "model_steps": steps,
        "loop": loop, "floor_seconds": floor,
        "study": {k: v for k, v in run.items() if k != "stdout"}, "report": {k: v for k, v in report.items()
                                                                            if k != "stdout"},
        "study_over_floor": run["seconds"] / floor, "hypothesis_lines": hypotheses,
        "predictions": paths, "total_seconds": total,
        "target": {"total_seconds": TARGET_SECONDS}, "met": {"total_seconds": total <= TARGET_SECONDS},
    }
    print(f"study + report: {total:.1f} s (target ≤ {TARGET_SECONDS} s for the full study): "
          f"{'met' if total <= TARGET_SECONDS else 'NOT met'}; {run['seconds'] / floor:.2f}x the floor")
    write_result("prune_responsibly_quick" if args.quick else "prune_responsibly", result)


if __name__ == "__main__":
    main()
