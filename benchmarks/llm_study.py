"""The LLM-pruning study on this machine: training throughput of the built-in GPT beside a plain
PyTorch loop, the whole example's wall time, and how much a calibration draw moves the result.

Targets (issue #32): prunelab's training loop within 1.05x the time of a plain PyTorch loop of the
same model and recipe (AdamW, cosine, clipping; same batches); examples/llm_pruning.toml within
20 minutes on 2 CPU cores, and its quick variant (a 2-layer width-32 GPT, 150 iterations, 2 seeds)
within a minute.

Part 1 alternates the two loops (``--steps`` iterations each, ``--repeats`` times, 1 torch thread,
the same freshly built model each time) and reports tokens per second, median and range. Part 2
runs ``prunelab run`` on the example in a fresh store (``--executor local --workers 2``) and
reports its wall time (``--study-repeats`` runs; the full study is long, so one by default). Part
3 reads the dense models of that store back and prunes each with Wanda and SparseGPT (50 % and
2:4) from 5 calibration draws: the spread a single-draw paper cannot show.

    python benchmarks/llm_study.py                 # everything (about 20 minutes)
    python benchmarks/llm_study.py --quick         # the quick variant (about 2 minutes)
    python benchmarks/llm_study.py --loop-only --repeats 9   # part 1 alone

Tiny Shakespeare is read from PRUNELAB_DATA_MIRROR (default ../shared/data when it exists).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loop_pairs, timed_command, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if "PRUNELAB_DATA_MIRROR" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["PRUNELAB_DATA_MIRROR"] = str(ROOT.parent / "shared" / "data")

import torch  # noqa: E402

from prunelab import TrainConfig, build_model, load_dataset  # noqa: E402
from prunelab.tasks.evaluation import evaluate, task_loss  # noqa: E402

EXAMPLE = ROOT / "examples" / "llm_pruning.toml"
TARGETS = {"loop_ratio": 1.05, "study_minutes": 20.0, "quick_minutes": 1.0}


def quick_spec(text: str) -> str:
    """The example made small: 2 seeds, a 2-layer width-32 GPT on blocks of 32, 150 iterations."""
    swaps = [('seeds = [0, 1, 2]', 'seeds = [0, 1]'),
             ('model_options = { layers = 4, heads = 4, width = 128 }',
              'model_options = { layers = 2, heads = 2, width = 32 }'),
             ('dataset = "tinyshakespeare"', 'dataset = "tinyshakespeare[block=32]"'),
             ('iterations = 1500', 'iterations = 150'), ('warmup_iterations = 100', 'warmup_iterations = 15'),
             ('lr = 1e-3', 'lr = 3e-3'), ('finetune_iterations = 300', 'finetune_iterations = 30'),
             ('rewind_iteration = 100', 'rewind_iteration = 10'), ('name = "llm_pruning"', 'name = "llm_quick"')]
    for old, new in swaps:
        if old not in text:
            sys.exit(f"examples/llm_pruning.toml no longer has {old!r}: update quick_spec")
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------- part 1: the training loop


def plain_loop(model, data, config: TrainConfig, seed: int) -> None:
    """What a researcher writes by hand: the same optimizer, schedule, clipping and batch order."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, config.beta2))
    n = len(data.train)
    total = config.iterations
    per_epoch = n // config.batch_size
    model.train()
    perm = None
    for it in range(total):
        epoch, pos = divmod(it, per_epoch)
        if pos == 0:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        idx = perm[pos * config.batch_size:(pos + 1) * config.batch_size]
        for g in opt.param_groups:
            g["lr"] = config.lr_at(it, total)
        loss = task_loss(model(data.train.x[idx]), data.train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()


def loop_benchmark(data, options: dict, config: TrainConfig, repeats: int) -> dict:
    tokens = config.iterations * config.batch_size * data.input_shape[0]
    times = loop_pairs(lambda: build_model("gpt", data.input_shape, data.num_classes, seed=0, **options), data,
                       config, plain_loop, repeats)
    ratios = [a / b for a, b in zip(times["prunelab"], times["plain"])]
    out = {name: {"seconds_median": statistics.median(t), "seconds": t,
                  "tokens_per_second_median": tokens / statistics.median(t),
                  "tokens_per_second_range": [tokens / max(t), tokens / min(t)]} for name, t in times.items()}
    out.update(ratio_median=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)],
               iterations=config.iterations, batch_size=config.batch_size, block=data.input_shape[0],
               parameters=sum(p.numel() for p in build_model("gpt", data.input_shape, data.num_classes,
                                                             **options).parameters()))
    return out


# ---------------------------------------------------------------- part 3: calibration draws


def calibration_spread(store: Path, data, draws: int, samples: int) -> list[dict]:
    from prunelab.analysis.tables import study_points
    from prunelab.experiment.query import open_store
    from prunelab.pruning import prune, technique

    results = open_store(store)
    points = study_points(results, metric="test.perplexity")
    dense = points[points.branch == "dense"].sort_values("seed")
    rows = []
    for method, setting in (("wanda", {"amount": 0.5}), ("sparsegpt", {"amount": 0.5}),
                            ("wanda", {"pattern": "2:4"}), ("sparsegpt", {"pattern": "2:4"})):
        label = f"{method} {'2:4' if 'pattern' in setting else '50 %'}"
        for _, p in dense.iterrows():
            values = []
            for draw in range(draws):
                model = results.load_model(p["hash"]).eval()
                g = torch.Generator().manual_seed(10_000 + draw)
                idx = torch.randperm(len(data.train), generator=g)[:samples]
                prune(model, technique(method, **setting), calibration=data.train.x[idx])
                values.append(evaluate(model, data.test, data.class_names).perplexity)
            rows.append({"method": label, "training_seed": int(p["seed"]), "dense": float(p["test.perplexity"]),
                         "draws": draws, "mean": statistics.fmean(values), "sd": statistics.stdev(values),
                         "min": min(values), "max": max(values)})
            print(f"  {label:14s} seed {int(p['seed'])}: dense {p['test.perplexity']:.3f}, pruned "
                  f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} (SD over {draws} draws, "
                  f"{min(values):.3f}–{max(values):.3f})")
    return rows


def study_table(store: Path) -> tuple[list[dict], list[dict]]:
    """Perplexity per row and round (mean, 95 % interval over seeds) and the declared claims' results."""
    from dataclasses import asdict

    from prunelab.analysis.effects import evaluate_hypotheses
    from prunelab.analysis.tables import study_points
    from prunelab.experiment.query import open_store
    from prunelab.study import mean_ci

    points = study_points(open_store(store), metric="test.perplexity")
    claims = [asdict(h) for h in evaluate_hypotheses(points, points.attrs["hypotheses"], value="test.perplexity")]
    rows = []
    for (branch, rnd), g in points.groupby(["branch", "round"], sort=False):
        mean, lo, hi = mean_ci(g["test.perplexity"].tolist(), bounds=(1.0, math.inf))
        rows.append({"branch": branch, "round": int(rnd), "remaining": float(g["remaining"].iloc[0]),
                     "seeds": len(g), "perplexity": mean, "ci": [lo, hi]})
    return rows, claims


def token_table(store: Path, top: int = 5) -> dict:
    """The characters whose loss rises most (share of the rise) for magnitude and Wanda at 50 % and 2:4."""
    from prunelab.analysis.tables import study_points
    from prunelab.analysis.text import study_token_costs
    from prunelab.experiment.query import open_store

    results = open_store(store)
    points = study_points(results, metric="test.perplexity")
    out = {}
    for branch in ("magnitude_50", "wanda_50", "magnitude_2of4", "wanda_2of4"):
        table = study_token_costs(results, points, branch).head(top)
        out[branch] = table.to_dict("records")
        shown = ", ".join(f"{c!r} {s:.0%} (+{d:.2f} nats)" for c, s, d in zip(table["class"], table["share"],
                                                                                 table["delta"]))
        print(f"  who pays, {branch}: {shown}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick variant only (CI-sized)")
    parser.add_argument("--steps", type=int, default=None, help="iterations per timed training (part 1)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs of timed trainings")
    parser.add_argument("--study-repeats", type=int, default=None)
    parser.add_argument("--draws", type=int, default=5, help="calibration draws per dense model (part 3)")
    parser.add_argument("--loop-only", action="store_true",
                        help="part 1 alone (written to results/llm_study_loop.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    text = EXAMPLE.read_text()
    spec_text = quick_spec(text) if args.quick else text
    spec = tomllib.loads(spec_text)
    options = spec["task"]["model_options"]
    training = spec["training"]
    data = load_dataset(spec["task"]["dataset"])
    steps = args.steps or (100 if args.quick else 200)
    config = TrainConfig(**{**training, "iterations": steps})
    print(f"part 1: {steps} iterations of a {options} GPT, prunelab's loop vs a plain loop, {args.repeats} pairs")
    loop = loop_benchmark(data, options, config, args.repeats)
    print(f"  prunelab {loop['prunelab']['tokens_per_second_median']:,.0f} tokens/s, plain "
          f"{loop['plain']['tokens_per_second_median']:,.0f} tokens/s: ratio {loop['ratio_median']:.3f} "
          f"({loop['ratio_range'][0]:.3f}–{loop['ratio_range'][1]:.3f}); target ≤ {TARGETS['loop_ratio']}")

    if args.loop_only:
        write_result("llm_study_loop", {"command": " ".join(["python benchmarks/llm_study.py", *sys.argv[1:]]),
                                        "loop": loop, "targets": {"loop_ratio": TARGETS["loop_ratio"]},
                                        "met": {"loop_ratio": loop["ratio_median"] <= TARGETS["loop_ratio"]}})
        return
    repeats = args.study_repeats or (3 if args.quick else 1)
    walls, store = [], None
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.toml"
        spec_path.write_text(spec_text)
        for r in range(repeats):
            store = Path(tmp) / f"store{r}"
            seconds, rss = timed_command([sys.executable, "-m", "prunelab.cli", "run", str(spec_path), "--store",
                                          str(store), "--executor", "local", "--workers", "2"])
            walls.append(seconds)
            print(f"part 2: the {'quick ' if args.quick else ''}study in {seconds:.1f} s (peak RSS of the "
                  f"command {rss:.0f} MB)")
        table, claims = study_table(store)
        for claim in claims:
            print(f"  {claim['claim']:30s} A − B {claim['mean']:+.3f} [{claim['ci_low']:+.3f}, {claim['ci_high']:+.3f}] "
                  f"ppl, p {claim['p']:.3g}, Holm {claim['p_adjusted']:.3g}: {claim['verdict']}")
        for row in table:
            print(f"  {row['branch']:15s} r{row['round']} {row['remaining']:5.1f} %  ppl {row['perplexity']:.3f} "
                  f"[{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]  ({row['seeds']} seeds)")
        who_pays = token_table(store)
        print(f"part 3: {args.draws} calibration draws of 128 blocks per dense model")
        spread = calibration_spread(store, data, args.draws, 128)
    limit = TARGETS["quick_minutes" if args.quick else "study_minutes"] * 60
    result = {
        "command": "python benchmarks/llm_study.py" + (" --quick" if args.quick else ""),
        "loop": loop,
        "study": {"variant": "quick" if args.quick else "full", "seconds": walls,
                  "seconds_median": statistics.median(walls), "seconds_range": [min(walls), max(walls)],
                  "table": table, "hypotheses": claims},
        "calibration_draws": spread,
        "who_pays": who_pays,
        "targets": {"loop_ratio": TARGETS["loop_ratio"], "study_seconds": limit},
        "met": {"loop_ratio": loop["ratio_median"] <= TARGETS["loop_ratio"],
                "study_seconds": statistics.median(walls) <= limit},
    }
    print(f"study: {statistics.median(walls):.1f} s (target ≤ {limit:.0f} s): "
          f"{'met' if result['met']['study_seconds'] else 'NOT met'}; loop ratio {loop['ratio_median']:.3f}: "
          f"{'met' if result['met']['loop_ratio'] else 'NOT met'}")
    write_result("llm_study_quick" if args.quick else "llm_study", result)


if __name__ == "__main__":
    main()
