"""The local executor's fallback: the plan's work predicted statically, a probe's step cost, the
makespan of a task graph on workers, and the decision (issue #13: local never much slower than serial)."""

import pytest
import torch

from prunelab import TrainConfig
from prunelab.experiment import Experiment, Finetune, Prune, RandomReinit, Rewind, Train, Transfer
from prunelab.experiment import scheduling
from prunelab.experiment.context import dataset_cache
from prunelab.experiment.dask_executors import LocalExecutor
from prunelab.experiment.planning import plan
from prunelab.experiment.taskgraph import Task, max_parallel
from prunelab.pruning import technique

from .experiment_helpers import CONFIG

SHORT = TrainConfig(iterations=12, batch_size=32, eval_every=5)


def rewinding_tree(path, seeds=(0,)):
    """Per seed: train to 4, on to the end, then one branch rewinding to 4 and one fine-tuning."""
    exp = Experiment(path)
    for seed in seeds:
        root = exp.root(dataset="digits", model="lenet_300_100", seed=seed)
        early = root.then(Train(SHORT, stop=4))
        dense = early.then(Train(SHORT))
        pruned = dense.then(Prune(technique("l1_unstructured", amount=0.3)))
        pruned.then(Rewind(to=early)).then(Train(SHORT))
        pruned.then(Finetune(TrainConfig(iterations=7, batch_size=32)))
    return exp


def test_static_iterations_and_steps_are_what_the_run_records(tmp_path):
    """Planted: the iteration each state ends at and the steps each training takes, predicted from the
    recipes before anything runs, equal what the stored manifests say after the run."""
    exp = rewinding_tree(tmp_path / "s")
    n_train = len(dataset_cache("digits").train)
    ends = scheduling.end_iterations(exp.states, lambda state: n_train)
    assert exp.run().ok
    stored = {h: exp.store.manifest(h) for h in exp.states}
    assert ends == {h: m["iteration"] for h, m in stored.items()}
    for h, state in exp.states.items():
        steps = scheduling.training_steps(state, ends)
        if isinstance(state.recipe, Finetune):
            assert steps == 7
        elif isinstance(state.recipe, Train):
            assert steps == stored[h]["iteration"] - stored[state.parent.hash]["iteration"]
            assert steps in (4, 8, 12 - 4)  # 0→4, 4→12, and the rewound 4→12
        else:
            assert steps == 0


def test_controls_that_restart_training_are_counted_from_zero(tmp_path):
    """Planted: a random re-init and a transferred ticket start again at iteration 0, so the full
    training after each is counted (a re-init control counted from its parent's iteration would
    have looked free); predictions equal the stored iterations after the run."""
    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    ticket = root.then(Train(SHORT)).then(Prune(technique("l1_unstructured", amount=0.3)))
    reinit_trained = ticket.then(RandomReinit()).then(Train(SHORT))
    other = exp.root(dataset="digits", model="lenet_300_100", seed=1)
    transfer_trained = other.then(Transfer(source=ticket)).then(Train(SHORT))
    n_train = len(dataset_cache("digits").train)
    ends = scheduling.end_iterations(exp.states, lambda state: n_train)
    assert scheduling.training_steps(reinit_trained, ends) == 12
    assert scheduling.training_steps(transfer_trained, ends) == 12
    assert exp.run().ok
    assert ends == {h: exp.store.manifest(h)["iteration"] for h in exp.states}


def test_makespan_lists_ready_tasks_onto_the_first_free_worker():
    """Against schedules worked out by hand."""
    chain = [Task(deps=[]), Task(deps=[0]), Task(deps=[1])]
    assert scheduling.makespan(chain, [1.0, 2.0, 3.0], workers=4) == 6.0  # a chain cannot spread
    fan = [Task(deps=[]), Task(deps=[0]), Task(deps=[0]), Task(deps=[0])]
    assert scheduling.makespan(fan, [1.0, 2.0, 2.0, 2.0], workers=2) == 5.0  # 1, then 2 ‖ 2, then 2
    assert scheduling.makespan(fan, [1.0, 2.0, 2.0, 2.0], workers=3) == 3.0
    independent = [Task(deps=[]) for _ in range(4)]
    assert scheduling.makespan(independent, [3.0, 1.0, 1.0, 1.0], workers=2) == 3.0
    assert scheduling.makespan(independent, [3.0, 1.0, 1.0, 1.0], workers=1) == 6.0


def test_the_probe_leaves_threads_and_random_state_as_they_were():
    from prunelab.experiment.recipes import Init

    data = dataset_cache("digits")
    root = Init(dataset="digits", model="lenet_300_100", seed=0, input_shape=tuple(data.input_shape),
                num_classes=data.num_classes)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    cost = scheduling.probe_step_cost(root, data, CONFIG, threads=1)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert 0 < cost.step < 1 and cost.fixed >= 0


def test_a_small_plan_runs_in_process_and_says_why(tmp_path, monkeypatch):
    """Two independent seeds could run on two workers, but their few dozen steps take less than a
    cluster takes to start: the local executor runs them here."""
    monkeypatch.setattr(LocalExecutor, "connect", lambda *a, **k: pytest.fail("started a cluster"))
    exp = rewinding_tree(tmp_path / "s", seeds=(0, 1))
    tasks = plan(exp)[0]
    assert max_parallel(tasks) >= 2
    summary = exp.run("local", workers=2)
    assert summary.ok and len(summary.computed) == len(exp.states)
    assert summary.note.startswith("ran in this process: about") and "training steps" in summary.note
    serial = rewinding_tree(tmp_path / "t", seeds=(0, 1))
    assert serial.run().ok
    for h in exp.states:  # the same bits as a serial run, of course
        assert exp.store.manifest(h)["weights"] == serial.store.manifest(h)["weights"]


def test_a_large_plan_is_predicted_to_gain_from_a_cluster(tmp_path):
    """The same shape with 20,000-step trainings: tens of seconds of work on two independent seeds,
    which two workers halve; the estimate says start the cluster (and counts the planned steps)."""
    long = TrainConfig(iterations=20_000, batch_size=60)
    exp = Experiment(tmp_path / "s")
    for seed in (0, 1):
        root = exp.root(dataset="digits", model="lenet_300_100", seed=seed)
        root.then(Train(long)).then(Prune(technique("l1_unstructured", amount=0.2))).then(Rewind(to=root)).then(
            Train(long))
    tasks = plan(exp)[0]
    predicted = scheduling.estimate(exp, tasks, workers=2, threads=1)
    assert predicted.iterations == 4 * 20_000
    assert predicted.cluster_pays and predicted.local < 0.7 * predicted.serial
    # one worker can only add the start-up
    alone = scheduling.estimate(exp, tasks, workers=1, threads=1)
    assert not alone.cluster_pays and alone.local > alone.serial


def test_a_plan_it_cannot_estimate_gets_its_cluster(tmp_path, monkeypatch):
    """A training recipe the estimate does not know (its own config): no guess, the cluster as asked."""
    from dataclasses import dataclass

    from prunelab.experiment.recipes import Recipe

    @dataclass(frozen=True)
    class OtherTraining(Recipe):
        config: dict

    exp = Experiment(tmp_path / "s")
    for seed in (0, 1):
        exp.root(dataset="digits", model="lenet_300_100", seed=seed).then(OtherTraining({"steps": 10}))
    assert scheduling.estimate(exp, plan(exp)[0], workers=2, threads=1) is None
