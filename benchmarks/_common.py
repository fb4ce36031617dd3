"""Shared helpers for benchmark scripts: timing and result files."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def wall(args: list[str]) -> float:
    """Wall-clock seconds of one command, run to completion (output captured)."""
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "torch_threads": torch.get_num_threads(),
    }


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def timed_command(args: list[str]) -> tuple[float, float]:
    """(wall seconds, max RSS in MB) of one command run to completion, via /usr/bin/time; exits
    with the command's stderr when it fails."""
    import os
    import sys

    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True,
                          env={**os.environ, "CI": "1", "COLUMNS": "160"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


def loglog_exponent(sizes: list[int], values: list[float]) -> float:
    """The slope of log(value) against log(size): 1 is linear growth."""
    import math

    xs, ys = [math.log(s) for s in sizes], [math.log(max(v, 1e-9)) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def loop_pairs(make_model, data, config, plain_loop, repeats: int) -> dict[str, list[float]]:
    """Seconds of prunelab's ``train`` and of a hand-written ``plain_loop(model, data, config, seed)`` on
    freshly built models (``make_model()``), alternating which goes first; the first pair warms caches up
    and is dropped. Neither validates: the data's validation split is emptied, so both time training."""
    from dataclasses import replace

    from prunelab.tasks import train
    from prunelab.tasks.datasets import Split

    data = replace(data, validation=Split(data.validation.x[:0], data.validation.y[:0]))
    times = {"prunelab": [], "plain": []}
    for r in range(repeats + 1):
        for name in ("prunelab", "plain") if r % 2 == 0 else ("plain", "prunelab"):
            model = make_model()
            start = time.perf_counter()
            if name == "prunelab":
                train(model, data, config, seed=0, progress=False)
            else:
                plain_loop(model, data, config, seed=0)
            if r:
                times[name].append(time.perf_counter() - start)
    return times
