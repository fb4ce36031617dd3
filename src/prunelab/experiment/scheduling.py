"""Does a Dask cluster pay for itself on a plan? The ``local`` executor's fallback.

A ``LocalCluster`` costs seconds before it runs anything (workers start and import torch, the
data is loaded again, shutdown; docs/benchmarks/dask_scaling.md), and two workers on two
cores each run slower than one process alone. A small study therefore gains less from the
workers than the cluster's start-up costs, and runs slower on ``--executor local`` than in one
process (docs/benchmarks/dask_fallback.md). Before starting a cluster, the run predicts both
ways from the plan:

- **work**: each training state's iterations, found statically along the tree (each recipe's
  ``end_iteration``: a Train runs from its parent's iteration to its stop; a Rewind takes its
  target's iteration; a Finetune, a random re-init and a transfer restart at 0), times the seconds a training step takes, measured here on the study's own
  model, data and batch size (a probe of a few dozen steps, short for a small model), plus
  its evaluations and a fixed cost per state;
- **serial**: the sum; **local**: the cluster's start-up plus the makespan of the task graph
  listed onto the workers (the order Dask runs ready tasks in), slowed by the contention.

The cluster is used only when it is predicted to take at most :data:`MARGIN` of the serial
time. A plan that cannot be estimated (trainings other than Train/Finetune, an accelerator,
more than :data:`MAX_PROBES` model/data/batch combinations) gets its cluster as asked.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..pruning.methods import PruningConfig
from .recipes import Finetune, Init, Train

if TYPE_CHECKING:
    from .taskgraph import Task
    from .tree import Experiment, State

CLUSTER_START_SECONDS = 3.0  # what a cluster adds to a serial run, start to shutdown (dask_scaling.md)
CONTENTION = 1.15  # two processes on two cores: how much slower each runs than alone (dask_scaling.md)
STATE_SECONDS = 0.003  # what a state costs besides its training (docs/benchmarks/study_overhead.md)
# What a real step costs besides the probe's passes: the optimizer's Python (parameter groups,
# state lookups) and the loop's bookkeeping, a constant per step that matters only for small models
# (measured: docs/architecture.md, "`local` decides from the plan")
STEP_OVERHEAD_SECONDS = 0.0002
MARGIN = 0.9  # the cluster must be predicted at least 10 % faster: the estimate is rough
MAX_PROBES = 4
PROBE_SECONDS = 0.05  # what the longer probe aims at


@dataclass(frozen=True)
class Estimate:
    """Predicted seconds of a plan in this process (``serial``) and on ``workers`` workers
    (``local``, cluster start included), from ``iterations`` training steps."""

    serial: float
    local: float
    workers: int
    iterations: int

    @property
    def cluster_pays(self) -> bool:
        return self.local <= MARGIN * self.serial

    def describe(self) -> str:
        return (f"about {self.serial:.1f} s of work ({self.iterations:,} training steps): a cluster of "
                f"{self.workers} would take about {self.local:.1f} s with its start-up")


@dataclass(frozen=True)
class StepCost:
    """Seconds of one training step, and the fixed seconds a training pays besides its steps
    (making its optimizer, its end-of-training validation point)."""

    step: float
    fixed: float


def roots_of(states: dict[str, "State"]) -> dict[str, "State"]:
    """Every state's root (a walk up each parent chain once, not a lineage per state)."""
    roots: dict[str, "State"] = {}
    for state in states.values():
        chain, node = [], state
        while node.hash not in roots and node.parent is not None:
            chain.append(node)
            node = node.parent
        root = roots.setdefault(node.hash, node)  # node: a root, or a state whose root is known
        for n in chain:
            roots[n.hash] = root
    return roots


def end_iterations(states: dict[str, "State"], train_size) -> dict[str, int]:
    """The iteration every state of the tree ends at, from its recipe's ``end_iteration`` alone.
    ``train_size(state)``: the size of the training split the state's model trains on."""
    ends: dict[str, int] = {}

    def end(state: "State") -> int:
        chain, node = [], state  # iterative along the parent chain: IMP trees are deep
        while node is not None and node.hash not in ends:
            chain.append(node)
            node = node.parent
        for node in reversed(chain):
            parent_end = 0 if node.parent is None else ends[node.parent.hash]
            ends[node.hash] = node.recipe.end_iteration(parent_end, train_size(node), end)
        return ends[state.hash]

    for s in states.values():
        end(s)
    return ends


def training_steps(state: "State", ends: dict[str, int]) -> int:
    """How many training steps computing ``state`` takes (0 for all but Train and Finetune)."""
    recipe = state.recipe
    if isinstance(recipe, Finetune):
        return ends[state.hash]
    if isinstance(recipe, Train):
        return max(0, ends[state.hash] - ends[state.parent.hash])
    return 0


def probe_step_cost(root: Init, data, config, threads: int) -> StepCost:
    """Time training steps of the root's model on its data with ``config``'s batch size, at
    ``threads`` torch threads. Nothing is stored and no random state changes.

    The update is a stand-in with the same elementwise passes as the optimizer's (Adam's four
    over every parameter, momentum's two, SGD's one) and the mask re-application of a pruned
    training: creating a torch optimizer imports torch._dynamo on its first use (a slow import),
    which a run that then starts a cluster would pay for nothing.
    """
    from ..tasks.evaluation import task_loss
    from ..tasks.training import batch_indices, trainable_parameters

    train = data.train
    passes = {"adam": 4, "momentum": 2}.get(config.optimizer, 1)
    previous_threads, rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(threads)
    try:
        model = root.spec().build(seed=root.seed)
        model.train()
        params = trainable_parameters(model)
        buffers = [torch.zeros_like(p) for p in params]

        def steps(first: int, n: int) -> float:
            began = time.perf_counter()
            for iteration in range(first, first + n):
                idx = batch_indices(0, iteration, len(train), config.batch_size)
                loss = task_loss(model(train.x[idx]), train.y[idx])
                for p in params:
                    p.grad = None
                loss.backward()
                with torch.no_grad():
                    grads = [p.grad if p.grad is not None else b for p, b in zip(params, buffers)]
                    for _ in range(passes):
                        torch._foreach_mul_(buffers, 0.9)
                    torch._foreach_add_(buffers, grads, alpha=0.0)
                    torch._foreach_add_(params, buffers, alpha=-0.0)  # the weights stay as built
                    torch._foreach_mul_(params, 1.0)  # as MaskReapplier re-applies masks
            return time.perf_counter() - began

        steps(0, 1)  # first calls of the process (kernels, the allocator) are no training's cost
        short = steps(1, 2)
        per = short / 2
        if short > 10 * PROBE_SECONDS:  # a large model: this much says enough
            return StepCost(per, 0.0)
        n = int(min(200, max(8, PROBE_SECONDS / max(per, 1e-6))))
        per = max(steps(3, n) / n, 1e-7)
        # a training's fixed part: its validation point at the end (a forward pass over the set)
        began = time.perf_counter()
        with torch.no_grad():
            for lo in range(0, len(data.validation), 1024):
                model(data.validation.x[lo:lo + 1024])
        return StepCost(per, time.perf_counter() - began)
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_rng_state(rng)


def estimate(experiment: "Experiment", tasks: list["Task"], workers: int, threads: int) -> Estimate | None:
    """Predict the plan's seconds both ways (see the module's docstring); None when it cannot."""
    from .context import dataset_cache

    states = experiment.states
    root_state = roots_of(states)
    roots: dict[str, Init] = {}
    for task in tasks:
        for st in task.states:
            recipe, root = states[st.hash].recipe, root_state[st.hash].recipe
            config = getattr(recipe, "config", None)
            if isinstance(recipe, (Train, Finetune)):
                if config.device != "cpu":
                    return None
            elif config is not None and not isinstance(config, PruningConfig):
                return None  # a training this estimate does not know (a GAN's)
            if not isinstance(root, Init):
                return None
            roots[st.hash] = root

    def train_size(state: "State") -> int:
        return len(dataset_cache(root_state[state.hash].recipe.dataset).train)

    ends = end_iterations(states, train_size)
    costs: dict[tuple, StepCost] = {}
    task_seconds, steps_total = [], 0
    for task in tasks:
        seconds = STATE_SECONDS * (len(task.states) + len(task.probes))
        for st in task.states:
            state = states[st.hash]
            steps = training_steps(state, ends)
            if not steps:
                continue
            root, config = roots[st.hash], state.recipe.config
            key = (root.spec(), root.dataset, config.batch_size, config.optimizer)
            if key not in costs:
                if len(costs) == MAX_PROBES:
                    return None
                try:
                    costs[key] = probe_step_cost(root, dataset_cache(root.dataset), config, threads)
                except Exception:  # noqa: BLE001 - only advice: the run itself reports what is wrong
                    return None
            cost = costs[key]
            evaluations = (math.ceil(steps / config.eval_every) if config.eval_every else 1) \
                + (2 if state.recipe.evaluate else 0)  # validation and test sets at the end
            seconds += steps * (cost.step + STEP_OVERHEAD_SECONDS) + evaluations * cost.fixed
            steps_total += steps
        task_seconds.append(seconds)
    serial = sum(task_seconds)
    return Estimate(serial, CLUSTER_START_SECONDS + CONTENTION * makespan(tasks, task_seconds, workers),
                    workers, steps_total)


def makespan(tasks: list["Task"], seconds: list[float], workers: int) -> float:
    """When the last task ends if each ready task goes to the first free worker, in plan order
    (tasks come in dependency order)."""
    finish = [0.0] * len(tasks)
    free = [0.0] * max(1, workers)
    for i, task in enumerate(tasks):
        ready = max((finish[d] for d in task.deps), default=0.0)
        start = max(ready, heapq.heappop(free))
        finish[i] = start + seconds[i]
        heapq.heappush(free, finish[i])
    return max(finish, default=0.0)


STATE_WORK = 10  # what a state costs besides its training, in training steps (for a progress ETA only)


def progress_work(experiment: "Experiment", hashes) -> dict[str, float]:
    """Each state's work in training steps (its training's steps plus :data:`STATE_WORK`), found
    statically as :func:`estimate` finds them: what a run's ETA weighs finished states by. Empty
    where it cannot be found (a root that is not an :class:`Init`): the ETA then counts states."""
    from .context import dataset_cache

    states = experiment.states
    pending = {h: states[h] for h in hashes if h in states}
    try:
        root_state = roots_of(pending)
        sizes: dict[str, int] = {}

        def train_size(state: "State") -> int:
            root = root_state[state.hash].recipe
            if root.dataset not in sizes:
                sizes[root.dataset] = len(dataset_cache(root.dataset).train)
            return sizes[root.dataset]

        ends = end_iterations(pending, train_size)
        return {h: float(training_steps(s, ends) + STATE_WORK) for h, s in pending.items()}
    except Exception:  # noqa: BLE001 - only an ETA: count states instead
        return {}
