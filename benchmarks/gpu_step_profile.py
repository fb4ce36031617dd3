"""Where a LeNet-300-100 training step spends GPU time: kernels per step and their summed time.

Profiles the eager loops (CUDA graph replays off, so the profiler sees each kernel) of one-at-a-time
training and of vectorised groups of K models, batch 60 of MNIST's shape. When the summed kernel time
of a step is close to the time a replayed step takes (benchmarks/many_models.py), the replay is bound
by the GPU running small kernels, not by launching them.

    python benchmarks/gpu_step_profile.py [--ks 1,8,32] [--steps 50]   (needs a CUDA device)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment  # noqa: E402
from many_models import graphs_on, mnist_shaped, models  # noqa: E402

from prunelab import TrainConfig  # noqa: E402
from prunelab.pruning.masked import train_masked  # noqa: E402
from prunelab.tasks.training import device_name  # noqa: E402
from prunelab.tasks.vectorized import train_group  # noqa: E402


def kernels(run, steps: int) -> dict:
    run(3)  # warm-up outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(steps)
        torch.cuda.synchronize()
    # kernels only: the copies that move models and optimizer states between host and GPU at the start
    # and end of a training window are not part of a step
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
              and not e.name.startswith(("Memcpy", "Memset"))]
    time_by_name: Counter = Counter()
    for e in events:
        time_by_name[e.name[:90]] += e.device_time
    total_us = sum(time_by_name.values())
    return {"kernels_per_step": len(events) / steps, "gpu_us_per_step": total_us / steps,
            "top": [{"kernel": k, "us_per_step": v / steps} for k, v in time_by_name.most_common(8)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,8,32")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_step_profile needs a CUDA device")
    data = mnist_shaped()
    config = TrainConfig(iterations=50000, batch_size=60, device="cuda")
    out = {"device": device_name(torch.device("cuda")), "environment": environment(), "rows": []}
    with graphs_on(False):
        runs = [("one at a time", 1, lambda n: train_masked(models(1)[0], data, config, seed=0, stop=n,
                                                             progress=False))]
        for k in (int(k) for k in args.ks.split(",")):
            runs.append((f"vectorised K={k}", k, lambda n, k=k: train_group(
                models(k), data, config.model_copy(update={"vectorize": k}), seeds=list(range(k)), stop=n,
                progress=False)))
        for label, k, run in runs:
            row = {"loop": label, "K": k, **kernels(run, args.steps)}
            out["rows"].append(row)
            print(f"{label:18s} {row['kernels_per_step']:6.0f} kernels/step, {row['gpu_us_per_step']:8.1f} µs GPU "
                  f"time/step ({row['gpu_us_per_step'] / k:7.1f} µs a model)")
            for t in row["top"][:5]:
                print(f"      {t['us_per_step']:8.1f} µs  {t['kernel']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_step_profile.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
