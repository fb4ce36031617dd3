"""Which training steps replay a CUDA graph: the plan is pure Python and tested here on any machine;
that a replay gives the eager step's bits needs a GPU (tests/test_device.py)."""

import math

import pytest
import torch

from prunelab import TrainConfig
from prunelab.tasks import cuda_graphs
from prunelab.tasks.cuda_graphs import CAPTURE, EAGER, REPLAY, replay_plan


def brute_force_plan(lrs, warmup, min_run):
    """Step by step from the definition: eager during warm-up; afterwards replay while the lr equals the
    last captured one, capture when at least min_run steps of this lr lie ahead (this one included)."""
    plan, captured = [], None
    for k, lr in enumerate(lrs):
        run = 0
        while k + run < len(lrs) and lrs[k + run] == lr:
            run += 1
        if k < warmup:
            plan.append(EAGER)
        elif captured == lr:
            plan.append(REPLAY)
        elif run >= min_run:
            plan.append(CAPTURE)
            captured = lr
        else:
            plan.append(EAGER)
    return plan


def lrs_of(config: TrainConfig, start: int = 0, stop: int | None = None):
    total = config.iterations
    return [config.lr_at(it, total) for it in range(start, total if stop is None else stop)]


def test_constant_lr_warms_up_then_captures_once():
    assert replay_plan([0.1] * 40, warmup=3, min_run=16) == [EAGER] * 3 + [CAPTURE] + [REPLAY] * 36
    assert replay_plan([0.1] * 18, warmup=3, min_run=16) == [EAGER] * 18  # 15 steps left after warm-up: not worth it
    assert replay_plan([], warmup=3, min_run=16) == []


@pytest.mark.parametrize("config", [
    TrainConfig(iterations=70, warmup_iterations=5, schedule="step", milestones=(24, 34), gamma=0.5),
    TrainConfig(iterations=300, schedule="step", milestones=(10, 100, 110, 250), gamma=0.3),
    TrainConfig(iterations=200, schedule="cosine", warmup_iterations=20),
    TrainConfig(iterations=50, warmup_iterations=49),
])
@pytest.mark.parametrize("warmup,min_run", [(3, 16), (0, 1), (10, 5)])
def test_schedules_match_the_brute_force_plan(config, warmup, min_run):
    for start in (0, 7, 33):
        lrs = lrs_of(config, start=start)
        plan = replay_plan(lrs, warmup, min_run)
        assert plan == brute_force_plan(lrs, warmup, min_run)
        # every replay reuses a graph captured at an earlier step with exactly its lr
        for k, action in enumerate(plan):
            if action == REPLAY:
                last = max(j for j in range(k) if plan[j] == CAPTURE)
                assert lrs[last] == lrs[k]


def test_the_step_schedule_of_the_gpu_test_captures_twice():
    lrs = lrs_of(TrainConfig(iterations=70, lr=0.05, warmup_iterations=5, schedule="step", milestones=(24, 34),
                             gamma=0.5))
    plan = replay_plan(lrs)
    assert [k for k, a in enumerate(plan) if a == CAPTURE] == [4, 34]
    assert plan.count(REPLAY) + plan.count(CAPTURE) == 56  # the count tests/test_device.py expects


def test_cosine_decay_changes_the_lr_every_step_and_stays_eager():
    lrs = lrs_of(TrainConfig(iterations=100, schedule="cosine"))
    assert len(set(lrs)) > 90 and not math.isnan(lrs[-1])
    assert set(replay_plan(lrs)) == {EAGER}


def test_no_graphs_on_a_cpu_or_when_switched_off(monkeypatch):
    def step(idx):
        raise AssertionError("never called")

    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    config = TrainConfig(iterations=50)
    assert cuda_graphs.for_training(step, opt, config, 50, 0, 50, (4,), torch.device("cpu")) is None
    assert cuda_graphs.for_training(step, opt, config, 50, 7, 7, (4,), torch.device("cuda")) is None  # empty window
    monkeypatch.setenv("PRUNELAB_CUDA_GRAPHS", "0")
    assert not cuda_graphs.enabled()
    monkeypatch.setenv("PRUNELAB_CUDA_GRAPHS", "1")
    assert cuda_graphs.enabled()
    monkeypatch.setattr(cuda_graphs, "ENABLED", False)
    assert not cuda_graphs.enabled()


def test_a_cuda_window_gets_the_plan_of_its_own_learning_rates(monkeypatch):
    """The plumbing a GPU run uses, checked here with StepGraphs replaced by a recorder."""
    made = {}

    class Recorder:
        def __init__(self, step, optimizer, lrs, idx_shape, device):
            made.update(lrs=lrs, idx_shape=idx_shape, device=device, plan=replay_plan(lrs))

    monkeypatch.setattr(cuda_graphs, "StepGraphs", Recorder)
    config = TrainConfig(iterations=70, lr=0.05, warmup_iterations=5, schedule="step", milestones=(24, 34), gamma=0.5)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    assert isinstance(cuda_graphs.for_training(lambda idx: idx, opt, config, 70, 30, 70, (3, 32),
                                               torch.device("cuda")), Recorder)
    assert made["lrs"] == [config.lr_at(it, 70) for it in range(30, 70)] and made["idx_shape"] == (3, 32)
    # the second half of the GPU test's split window: 30-32 warm up, 33 (lr/2) is eager, 34-69 (lr/4) replay
    assert made["plan"] == [EAGER] * 4 + [CAPTURE] + [REPLAY] * 35
