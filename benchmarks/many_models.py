"""Many-model throughput: K LeNet-300-100 trained together (vectorised) vs one after the other.

Targets (issue #16): on CPU at least 3x at K = 8; on a GPU at least 20x at
K = 32, both against one-at-a-time training on the same device in the same
process. Throughput is models x iterations per second; batches are MNIST-size
(60 examples of 1x28x28). The data are random tensors of MNIST's shape and
size (60,000 examples): step time does not depend on pixel values.

The one-at-a-time path is prunelab's own training loop (``train_masked``, as
the Train recipe runs it); the vectorised path is ``train_group`` with
``vectorize = K``. The two alternate, --repeats times each; medians are
reported with their ranges. After the first repeat the weights of both paths
are compared (they agree to rounding, not bitwise: batched kernels sum in
another order). On CUDA both paths replay their step as a CUDA graph (the default), and
both are also timed without replays (the eager loops; ``--no-eager`` skips them); the replayed
and eager weights are compared too (equal bit for bit).

``--full-training`` also times one Frankle & Carbin LeNet-300-100 training
(50,000 iterations, Adam 1.2e-3, batch 60) on the chosen device, and on the
CPU of the same machine for ``--cpu-iterations`` iterations (scaled to 50,000
and labelled as such when fewer).

Each device writes its own section of benchmarks/results/many_models.json
(a CPU run keeps a GPU section measured elsewhere, and vice versa; ``--section`` names another).

    python benchmarks/many_models.py [--device cpu|cuda] [--ks 1,8,32] [--iterations N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment  # noqa: E402

from prunelab import TrainConfig, build_model
from prunelab.pruning.masked import train_masked
from prunelab.tasks import Dataset, Split
from prunelab.tasks.training import device_name, training_device
from prunelab.tasks import cuda_graphs
from prunelab.tasks.vectorized import train_group

TARGETS = {"cpu": (8, 3.0), "cuda": (32, 20.0)}  # device → (K, minimum speed-up)


def mnist_shaped(n: int = 60000) -> Dataset:
    g = torch.Generator().manual_seed(0)
    train = Split(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    empty = Split(train.x[:0], train.y[:0])
    return Dataset("mnist-shaped", train, empty, empty, tuple(str(i) for i in range(10)))


def models(k: int):
    return [build_model("lenet_300_100", (1, 28, 28), 10, seed=s) for s in range(k)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextmanager
def graphs_on(on: bool):
    """CUDA graph replays on or off (the eager loop: the same bits, tested in tests/test_device.py)."""
    previous, cuda_graphs.ENABLED = cuda_graphs.ENABLED, on
    try:
        yield
    finally:
        cuda_graphs.ENABLED = previous


def one_at_a_time(data, config, k, iterations, device, graphs: bool = True):
    nets = models(k)
    with graphs_on(graphs):
        sync(device)
        t0 = time.perf_counter()
        for seed, net in enumerate(nets):
            train_masked(net, data, config, seed=seed, stop=iterations, progress=False)
        sync(device)
    return time.perf_counter() - t0, nets


def vectorised(data, config, k, iterations, device, graphs: bool = True):
    nets = models(k)
    with graphs_on(graphs):
        sync(device)
        t0 = time.perf_counter()
        train_group(nets, data, config.model_copy(update={"vectorize": k}), seeds=list(range(k)), stop=iterations,
                    progress=False)
        sync(device)
    return time.perf_counter() - t0, nets


def max_difference(a, b) -> float:
    return max(float((x.detach().cpu() - y.detach().cpu()).abs().max())
               for m, n in zip(a, b) for x, y in zip(m.state_dict().values(), n.state_dict().values()))


def median_range(values: list[float]) -> tuple[float, list[float]]:
    return statistics.median(values), [min(values), max(values)]


def throughput(data, device: str, ks: list[int], iterations: int, repeats: int, eager: bool = True) -> list[dict]:
    """Per K: model-it/s of each path, alternating, ``repeats`` times. On CUDA each path runs with its
    step replayed as a CUDA graph (the default) and without (the eager loop); the headline speed-up
    compares the defaults, vectorised vs one at a time."""
    config = TrainConfig(iterations=50000, batch_size=60, device=device)
    cuda = device.startswith("cuda")
    variants = [("one_at_a_time", one_at_a_time, True), ("vectorised", vectorised, True)]
    if cuda and eager:
        variants += [("one_at_a_time_eager", one_at_a_time, False), ("vectorised_eager", vectorised, False)]
    for _, run, graphs in variants:  # warm-up: vmap's first trace, CUDA context, kernels and a graph capture
        run(data, config, 2, 24, device, graphs)
    rows = []
    for k in ks:
        rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        nets: dict[str, list] = {}
        for r in range(repeats):
            for name, run, graphs in variants:
                seconds, trained = run(data, config, k, iterations, device, graphs)
                rates[name].append(k * iterations / seconds)
                if r == 0:
                    nets[name] = trained
        row = {"K": k, "iterations": iterations}
        for name in rates:
            row[f"{name}_model_its_per_s"], row[f"{name}_range"] = median_range(rates[name])
        ratios = [v / s for v, s in zip(rates["vectorised"], rates["one_at_a_time"])]
        row["speedup"], row["speedup_range"] = statistics.median(rates["vectorised"]) / statistics.median(
            rates["one_at_a_time"]), [min(ratios), max(ratios)]
        row["max_abs_weight_difference"] = max_difference(nets["one_at_a_time"], nets["vectorised"])
        line = (f"K={k:3d}: one at a time {row['one_at_a_time_model_its_per_s']:8.0f} model-it/s, vectorised "
                f"{row['vectorised_model_its_per_s']:8.0f} model-it/s → {row['speedup']:.2f}x "
                f"(range {row['speedup_range'][0]:.2f}–{row['speedup_range'][1]:.2f}); "
                f"max |Δw| after {iterations} its {row['max_abs_weight_difference']:.2e}")
        if cuda and eager:  # without graphs, and how far the graph replays are from the eager loops' bits (0 expected)
            row["speedup_vs_eager_one_at_a_time"] = (statistics.median(rates["vectorised"])
                                                     / statistics.median(rates["one_at_a_time_eager"]))
            row["eager_speedup"] = (statistics.median(rates["vectorised_eager"])
                                    / statistics.median(rates["one_at_a_time_eager"]))
            row["graph_vs_eager_max_abs_weight_difference"] = max(
                max_difference(nets["one_at_a_time"], nets["one_at_a_time_eager"]),
                max_difference(nets["vectorised"], nets["vectorised_eager"]))
            line += (f"\n        eager loops: one at a time {row['one_at_a_time_eager_model_its_per_s']:8.0f}, vectorised "
                     f"{row['vectorised_eager_model_its_per_s']:8.0f} → {row['eager_speedup']:.2f}x; vectorised "
                     f"(graphs) vs eager one at a time {row['speedup_vs_eager_one_at_a_time']:.1f}x; graph vs eager "
                     f"|Δw| {row['graph_vs_eager_max_abs_weight_difference']:.1e}")
        print(line)
        rows.append(row)
    return rows


def full_training(data, device: str, cpu_iterations: int, device_iterations: int = 50000,
                  rates: dict[str, float] | None = None) -> dict:
    """One F&C LeNet-300-100 training (50,000 iterations, Adam 1.2e-3, batch 60) on ``device`` and on
    this machine's CPU. On CUDA: one at a time with graph replays (the default), the eager loop, and
    a vectorised group of one. A run is timed in full when ``rates`` (model-it/s measured above)
    put it under 90 s; otherwise for ``device_iterations`` (``cpu_iterations`` on the CPU), scaled."""
    rates = rates or {}
    cuda = device.startswith("cuda")
    runs = [(device, "one_at_a_time", True)]
    if cuda:
        runs += [(f"{device} eager", "one_at_a_time_eager", False), (f"{device} vectorize=1", "vectorised", True),
                 ("cpu", "cpu", True)]
    out = {}
    for label, rate_key, graphs in runs:
        where = "cpu" if label == "cpu" else device
        rate = rates.get(rate_key)
        its = (cpu_iterations if where == "cpu" and cuda
               else 50000 if rate and 50000 / rate < 90 else device_iterations if where != "cpu" else cpu_iterations)
        net = models(1)[0]
        config = TrainConfig(iterations=50000, batch_size=60, device=where)
        with graphs_on(graphs):
            sync(where)
            t0 = time.perf_counter()
            if "vectorize" in label:
                train_group([net], data, config.model_copy(update={"vectorize": 1}), seeds=[0], stop=its,
                            progress=False)
            else:
                train_masked(net, data, config, seed=0, stop=its, progress=False)
            sync(where)
            seconds = time.perf_counter() - t0
        out[label] = {"iterations_timed": its, "seconds": seconds, "seconds_for_50000": seconds * 50000 / its,
                      "extrapolated": its != 50000, "torch_threads": torch.get_num_threads()}
        print(f"50,000 iterations, {label}: {seconds * 50000 / its:.1f} s"
              + (f" (timed {its}, scaled)" if its != 50000 else ""))
    if cuda:
        out["gpu_vs_cpu_speedup"] = out["cpu"]["seconds_for_50000"] / out[device]["seconds_for_50000"]
        print(f"GPU (one at a time, graph replays) vs CPU for one training: {out['gpu_vs_cpu_speedup']:.1f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--ks", default="1,8,32")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per model (default 30 CPU, 300 GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-training", action="store_true")
    parser.add_argument("--cpu-iterations", type=int, default=5000)
    parser.add_argument("--device-iterations", type=int, default=50000,
                        help="iterations timed of the one-at-a-time training on --device (scaled to 50,000)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-eager", action="store_true", help="on CUDA, skip the loops without graph replays")
    parser.add_argument("--section", default=None,
                        help="the result file's section to write (default: the backend, cpu or cuda)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(training_device(TrainConfig(iterations=1, device=args.device)))
    backend = device.partition(":")[0]
    iterations = args.iterations or (30 if backend == "cpu" else 300)
    ks = [int(k) for k in args.ks.split(",")]
    data = mnist_shaped()
    print(f"device {device_name(torch.device(device))}, {torch.get_num_threads()} torch threads")
    rows = throughput(data, device, ks, iterations, args.repeats, eager=not args.no_eager)
    k_target, minimum = TARGETS[backend]
    at_target = next((r for r in rows if r["K"] == k_target), None)
    section = {
        "device": device_name(torch.device(device)),
        "host": platform.node(),
        "environment": environment(),
        "command": "python benchmarks/many_models.py " + " ".join(sys.argv[1:]),
        "rows": rows,
        "target": f">= {minimum}x at K = {k_target} vs one at a time on the same device",
        "measured_at_target": None if at_target is None else at_target["speedup"],
        "met": None if at_target is None else at_target["speedup"] >= minimum,
    }
    print(f"target {section['target']}: measured {section['measured_at_target']}, met: {section['met']}")
    write(args.section or backend, section)
    if args.full_training:  # written again with it: the rows above survive a failure in here
        section["full_training"] = full_training(data, device, args.cpu_iterations, args.device_iterations,
                                                     {key[: -len("_model_its_per_s")]: value
                                                      for row in rows if row["K"] == 1
                                                      for key, value in row.items() if key.endswith("_model_its_per_s")})
        write(args.section or backend, section)


def write(backend: str, section: dict) -> None:
    path = RESULTS / "many_models.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "many_models", "runs": {}}
    payload.setdefault("runs", {})[backend] = section
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
