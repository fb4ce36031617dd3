"""Study overhead: a whole study vs the sum of its training runs measured alone.

Study 1 (examples/lottery_mnist1d.toml) with one seed and 5 rounds: dense
training (split at iteration 100), three IMP branches (rewind to 0, rewind
to 100, fine-tune) and two controls (random re-init, random pruning), run by
``prunelab run`` machinery into a fresh store. Baseline: every training run of
that study (each Train / Finetune state, with its periodic validation curve
and final test/validation evaluation) replayed alone from its stored parent,
timed individually and summed — what the study would cost with zero
orchestration (no spec, hashing, storage, pruning or scheduling).

Target (issue #5): study wall time <= 1.05x the sum of its training runs.
All at 1 torch thread. Medians of --repeats; three ways rotate, each going
first in turn:

* study: the run alone; its trainings are also timed inside it, which gives
  the milliseconds a state spends besides training and a lower bound on the
  overhead (blind to what the study's other work costs the trainings);
* replay: the trainings replayed alone from the finished reference store,
  summed. Minutes away from the study: the host drifting by +-10 % between
  the two moves this ratio by as much;
* interleaved: the study again, each training replayed alone right after the
  study ran it or right before, in turn (same seconds, same host state); the
  replays' time is taken out of the study's, and so are the waits for the
  study's deferred writes before each replay (reported: counted in, they give
  an upper bound).

The target is met when all three medians are within it. Interleaved and inside
cannot be moved by the drift; only the separate replay sees what the study's
other work costs its trainings themselves (its writing thread, caches left cold
between them): 1-3 % on this machine.

    python benchmarks/study_overhead.py [--repeats 3]

Issue #13 asks for the same on a study of at least 1,000 small states:
``--seeds 17 --iterations 150`` runs 17 seeds (1,037 states, 459 trainings of 150 iterations)
and writes ``study_overhead_large.json`` instead.
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

import prunelab.experiment.recipes as recipes
from prunelab.experiment import Finetune, Train
from prunelab.experiment.context import dataset_cache
from prunelab.pruning.masked import train_masked
from prunelab.spec import load_spec
from prunelab.study import build_study
from prunelab.tasks.evaluation import evaluate

SPEC = Path(__file__).resolve().parents[1] / "examples" / "lottery_mnist1d.toml"


def study_spec(seeds: int = 1, iterations: int | None = None):
    spec = load_spec(SPEC)
    branches = {name: b.model_copy(update={"rounds": 5}) for name, b in spec.branches.items()}
    spec = spec.model_copy(update={"study": spec.study.model_copy(update={"seeds": list(range(seeds))}),
                                   "branches": branches})
    if iterations is not None:  # a short training: rewind points and curves scaled with it
        raw = spec.model_dump()
        scale = iterations / raw["training"]["iterations"]
        raw["training"].update(iterations=iterations, eval_every=max(1, int(raw["training"]["eval_every"] * scale)))
        for b in raw["branches"].values():
            if b.get("rewind_iteration"):
                b["rewind_iteration"] = max(1, int(b["rewind_iteration"] * scale))
        from prunelab.spec import parse_spec

        spec = parse_spec(raw, "study_overhead")
    return spec


def replay_trainings(tree) -> tuple[float, int]:
    """Time each training run of the finished study alone; return (sum of seconds, count)."""
    store = tree.experiment.store
    total, count = 0.0, 0
    for state in tree.experiment.states.values():
        recipe = state.recipe
        if not isinstance(recipe, (Train, Finetune)):
            continue
        parent = store.load(state.parent.hash)
        if isinstance(recipe, Finetune):
            parent = parent.evolve(iteration=0, optimizer=None)
        total += replay_one(recipe, parent, seed=0)
        count += 1
    return total, count


class InsideTimer:
    """Seconds spent in the study's trainings and their final evaluations, timed inside the run: the
    same work the replay times, measured in the same minutes as the study (immune to the host
    drifting between the study and its replay, blind to what the study's other work costs them)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._saved = (recipes.train_masked, recipes._evaluation_metrics)

    def _timed(self, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return run

    def __enter__(self):
        recipes.train_masked, recipes._evaluation_metrics = (self._timed(f) for f in self._saved)
        return self

    def __exit__(self, *exc):
        recipes.train_masked, recipes._evaluation_metrics = self._saved


class InterleavedReplay:
    """Each training of the study replayed alone right after the study ran it: the baseline timed in
    the same seconds as the study, so that the host drifting cannot come between them.

    A replay is what ``replay_trainings`` times (the parent's model with its masks attached,
    ``train_masked``, the final evaluations), on the parent the study's training starts from.
    Its wall time (with the model build) is taken out of the study's. Replays go right before
    the study's training and right after it in turn: whichever of two runs of one training comes
    second finds its data and code warm (about 5 % faster at these sizes), so always replaying
    after would favour the baseline, always before the study. Before each replay the study's
    deferred writes are waited for, so that the replay never runs beside the study's publishing.
    That wait is file system latency (fsyncs) which the study, run alone, hides behind its next
    computation: it is kept apart (``waited``) and reported both ways, left out of the study's
    time (the figure the verdict takes; it leaves out what the publishing thread's own work would
    have cost the study meanwhile, a few tenths of a millisecond a state) and counted in (an
    upper bound).
    """

    def __init__(self) -> None:
        self.seconds = 0.0  # the replays' trainings and evaluations
        self.excluded = 0.0  # wall time spent replaying, taken out of the study's
        self.waited = 0.0  # waits for the study's writes before the replays (see the docstring)
        self.count = 0
        self._saved = Train.run

    def __enter__(self):
        original, outer = self._saved, self

        def run(recipe, ctx, parent):  # (a Finetune runs a Train on its restarted parent)
            first = outer.count % 2 == 0  # the replay before the study's training, or after it, in turn
            snapshot = None if first else original(recipe, ctx, parent)
            waiting = time.perf_counter()
            ctx.store.wait_published()
            began = time.perf_counter()
            outer.waited += began - waiting
            outer.seconds += replay_one(recipe, parent, ctx.root_seed if recipe.data_seed is None else recipe.data_seed)
            outer.excluded += time.perf_counter() - began
            outer.count += 1
            return original(recipe, ctx, parent) if first else snapshot

        Train.run = run
        return self

    def __exit__(self, *exc):
        Train.run = self._saved


def replay_one(recipe, parent, seed: int) -> float:
    """Seconds of one training (a Train's or a Finetune's) and its final evaluations, replayed
    alone from ``parent`` (for a Finetune: the parent restarted at iteration 0)."""
    data = dataset_cache(parent.dataset)
    model = parent.model()
    start = time.perf_counter()
    train_masked(model, data, recipe.config, seed=seed, start=parent.iteration, stop=getattr(recipe, "stop", None),
                 optimizer_state=parent.optimizer)
    if recipe.evaluate:
        for split in ("validation", "test"):
            evaluate(model, data.split(split), data.class_names)
    return time.perf_counter() - start


def run_interleaved(spec, folder: Path):
    """(the study's own seconds, its trainings' seconds replayed in between, replay count, seconds
    waited for its writes before the replays)."""
    replays = InterleavedReplay()
    seconds, _ = timed_run(spec, folder, replays)
    return seconds - replays.excluded - replays.waited, replays.seconds, replays.count, replays.waited


def run_study(spec, folder: Path):
    """(wall seconds, seconds inside its trainings, the finished tree) of one run into a fresh store."""
    inside = InsideTimer()
    seconds, tree = timed_run(spec, folder, inside)
    return seconds, inside.seconds, tree


def timed_run(spec, folder: Path, watch):
    """(wall seconds, the finished tree) of one run of the study into a fresh store, inside ``watch``."""
    tree = build_study(spec, folder / "store")
    with watch:
        start = time.perf_counter()
        summary = tree.experiment.run()
        seconds = time.perf_counter() - start
    assert summary.ok
    return seconds, tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="training length (default: the spec's 1,500)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = study_spec(args.seeds, args.iterations)
    dataset_cache(spec.task.dataset)
    with tempfile.TemporaryDirectory() as warm:  # imports, optimizer warm-up
        tiny = spec.model_copy(update={"training": spec.training.model_copy(update={"iterations": 120, "eval_every": 0})})
        build_study(tiny, Path(warm) / "s").experiment.run()
    ways = ["study", "replay", "interleaved"]
    wall: dict[str, list[float]] = {w: [] for w in ways}
    inside: list[float] = []  # each study's seconds inside its trainings
    interleaved_replays: list[float] = []  # the interleaved run's replays, summed
    interleaved_waits: list[float] = []  # its waits for the study's writes before them
    n_trainings = n_states = 0
    with tempfile.TemporaryDirectory() as base:
        # the replay reads parents from one finished store, made once (untimed) before the repeats
        reference = run_study(spec, Path(base) / "reference")[2]
        for r in range(args.repeats):
            for way in ways[r % 3:] + ways[:r % 3]:  # each goes first in turn
                if way == "replay":
                    seconds, n_trainings = replay_trainings(reference)
                    wall["replay"].append(seconds)
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    if way == "interleaved":
                        own, replayed, count, waited = run_interleaved(spec, Path(folder))
                        wall["interleaved"].append(own)
                        interleaved_replays.append(replayed)
                        interleaved_waits.append(waited)
                        continue
                    seconds, in_trainings, tree = run_study(spec, Path(folder))
                wall["study"].append(seconds)
                inside.append(in_trainings)
                n_states = len(tree.experiment.states)
            print(f"repeat {r + 1}: study {wall['study'][-1]:.1f} s, replay {wall['replay'][-1]:.1f} s; "
                  f"study / replay {wall['study'][-1] / wall['replay'][-1]:.3f}x, "
                  f"study / its trainings inside it {wall['study'][-1] / inside[-1]:.3f}x, "
                  f"interleaved {wall['interleaved'][-1] / interleaved_replays[-1]:.3f}x "
                  f"({wall['interleaved'][-1]:.1f} s / {interleaved_replays[-1]:.1f} s)", flush=True)
    assert count == n_trainings, (count, n_trainings)
    median = {w: statistics.median(v) for w, v in wall.items()}
    ratio = median["study"] / median["replay"]
    paired = [a / b for a, b in zip(wall["study"], wall["replay"])]
    inside_ratios = [a / b for a, b in zip(wall["study"], inside)]
    interleaved = [a / b for a, b in zip(wall["interleaved"], interleaved_replays)]
    with_waits = [(a + w) / b for a, b, w in zip(wall["interleaved"], interleaved_replays, interleaved_waits)]
    overhead_ms = [(a - b) / n_states * 1000 for a, b in zip(wall["study"], inside)]
    # The interleaved ratio (baseline timed between the study's own steps) and the inside ratio (a
    # lower bound) are immune to the host drifting between a study and its replay; the separate
    # replay is not, but it is the only one that sees what the study's other work (its writing
    # thread, the work between trainings) costs the trainings themselves. The target is met when
    # all three medians are within it.
    met_each = {"interleaved": statistics.median(interleaved) <= 1.05,
                "inside": statistics.median(inside_ratios) <= 1.05, "separate_replay": ratio <= 1.05}
    met = all(met_each.values())
    print(f"study {median['study']:.2f} s vs trainings alone {median['replay']:.2f} s -> {ratio:.3f}x "
          f"({n_states} states; repeats {', '.join(f'{x:.3f}' for x in paired)})")
    print(f"interleaved: study {statistics.median(interleaved):.3f}x its trainings replayed in between "
          f"(repeats {', '.join(f'{x:.3f}' for x in interleaved)}); {statistics.median(with_waits):.3f}x with the "
          f"waits for its writes counted in ({statistics.median(interleaved_waits):.2f} s)")
    print(f"study / its trainings inside it {statistics.median(inside_ratios):.3f}x, "
          f"{statistics.median(overhead_ms):.1f} ms a state besides training; target <= 1.05: {met_each}")
    large = args.seeds > 1 or args.iterations is not None
    write_result("study_overhead_large" if large else "study_overhead", {
        "study": f"examples/lottery_mnist1d.toml, seeds 0..{args.seeds - 1}, 5 rounds, "
                 f"{spec.training.iterations} iterations a training",
        "command": "python benchmarks/study_overhead.py " + " ".join(sys.argv[1:]),
        "states": n_states, "trainings": n_trainings, "repeats": args.repeats,
        "ways": {"study": "prunelab's run of the study into a fresh store",
                 "replay": "the study's trainings (with their evaluations) replayed alone from stored parents, summed",
                 "interleaved": "the study's own seconds in a run where each training is replayed alone right "
                                "before or after the study's (in turn); the replays and the waits for the "
                                "study's writes before them taken out"},
        "seconds": wall, "median": median,
        "ratio": ratio, "ratios_by_repeat": paired,
        "seconds_interleaved_replays": interleaved_replays, "interleaved_ratios": interleaved,
        "interleaved_ratio": statistics.median(interleaved),
        "seconds_interleaved_waits": interleaved_waits, "interleaved_ratios_waits_counted": with_waits,
        "seconds_inside_trainings": inside, "wall_over_inside": inside_ratios,
        "inside_ratio": statistics.median(inside_ratios),
        "ms_a_state_besides_training": overhead_ms,
        "target": "<= 1.05: the study against its trainings replayed in between (interleaved), timed inside it, "
                  "and replayed separately", "met_each": met_each, "met": met,
    })


if __name__ == "__main__":
    main()
