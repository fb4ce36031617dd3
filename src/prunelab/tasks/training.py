"""Deterministic training, on the CPU or a CUDA device.

Reproducibility comes from three choices:

* the order of examples is a pure function of ``(seed, iteration)``: epoch
  ``e`` uses the permutation drawn from ``seed`` and ``e``, so training from
  iteration 0 to T in one go equals 0 → k followed by k → T;
* the learning rate is a pure function of the iteration (no scheduler object
  with hidden state);
* ``torch.use_deterministic_algorithms(True)`` is on while training.

Same config + seed + start state therefore gives bitwise-identical weights.
On CUDA the same holds on the same GPU model and software stack: cuBLAS gets
a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), TF32 is off unless
``tf32 = true`` and cuDNN's autotuner is off. CPU and CUDA results differ in
their last bits, so the device is part of a training's identity (see
``TrainConfig.device``).
"""

from __future__ import annotations

import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..caches import CACHES
from ..errors import PrunelabError, validated
from ..progress import progress_bar
from . import cuda_graphs
from .datasets import Dataset
from .evaluation import evaluate, task_loss

# cuBLAS reads this when its first handle is created; deterministic algorithms need it on CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

_OMIT_DEFAULT = {"identity": "omit_default"}  # recipes.OMIT_DEFAULT: enters identities only when set
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a CUDA device is visible, else ``cpu``; ``gpu`` means ``cuda``."""
    text = str(device).strip().lower()
    if text == "auto":
        import torch.cuda

        return "cuda" if torch.cuda.is_available() else "cpu"
    text = "cuda" + text[3:] if text.startswith("gpu") else text
    if not _DEVICE.fullmatch(text):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return text


class TrainConfig(BaseModel):
    """How to train. Exactly one of ``iterations`` / ``epochs`` sets the length."""

    # Non-finite numbers and absurd magnitudes are rejected here, not discovered as failed states
    # after a run (the bounds are far beyond any working setting).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Each description is the help of `prunelab train`'s option of the same name (--kebab-case).
    optimizer: Literal["sgd", "momentum", "adam", "adamw"] = Field(
        "adam", description="optimizer; adamw decays matrices only, as GPT-2")
    lr: float = Field(1.2e-3, gt=0, le=10, description="learning rate (a schedule's peak)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of optimizer momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (optimizer momentum)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay (adamw: decoupled)")
    batch_size: int = Field(60, gt=0, le=2**20, description="examples per step")
    iterations: int | None = Field(None, gt=0, le=10**9, description="training length in optimizer steps")
    epochs: float | None = Field(None, gt=0, le=10**6, description="training length in epochs (or iterations)")
    schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup_iterations: int = Field(0, ge=0, description="linear learning-rate warm-up, in steps")
    milestones: tuple[int, ...] = Field((), description="iterations at which schedule step multiplies lr by gamma")
    gamma: float = Field(0.1, gt=0, le=10, description="schedule step's factor at each milestone")
    eval_every: int = Field(0, ge=0, description="validation every N iterations (0: at the end only)")
    # nanoGPT's small models use 0.99.
    beta2: float = Field(0.999, gt=0, lt=1, json_schema_extra=_OMIT_DEFAULT,
                         description="Adam's and AdamW's second-moment decay")
    # GPT-2 and nanoGPT clip at 1.0.
    grad_clip: float = Field(0.0, ge=0, le=1e6, json_schema_extra=_OMIT_DEFAULT,
                             description="clip the global gradient norm to this before each step (0: never)")
    # nanoGPT: 0.1.
    lr_floor: float = Field(0.0, ge=0, le=1, json_schema_extra=_OMIT_DEFAULT,
                            description="schedule cosine decays to lr × lr_floor, not to 0")
    # "auto" is resolved when the config is read (on the machine that plans the run). The backend
    # (cpu / cuda) is part of a state's identity, the index (cuda:1) is not: CPU and GPU bits differ,
    # two GPUs of one model do not.
    device: str = Field("cpu", json_schema_extra={"identity": "device"},
                        description="auto, cpu, cuda or cuda:N (where to train)")
    tf32: bool = Field(False, json_schema_extra=_OMIT_DEFAULT,
                       description="TensorFloat-32 matmuls and convolutions (CUDA only)")
    # Groups are padded to W so a model's bits never depend on which models shared its pass; W is
    # therefore part of the identity.
    vectorize: int = Field(0, ge=0, le=1024, json_schema_extra=_OMIT_DEFAULT,
                           description="train W models of one architecture and config in one vmap pass "
                                       "(0: one at a time)")

    @model_validator(mode="before")
    @classmethod
    def _resolve_device(cls, data):
        if isinstance(data, dict) and "device" in data:
            data = {**data, "device": resolve_device(data["device"])}
            if data["device"] == "cpu" and data.get("tf32"):
                data["tf32"] = False  # no TF32 on a CPU: "auto" on a laptop must not fork identities
        return data

    @model_validator(mode="after")
    def _one_length(self) -> "TrainConfig":
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'iterations' or 'epochs'")
        if any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive iterations")
        if self.vectorize and (self.grad_clip or self.optimizer == "adamw"):
            raise ValueError("vectorize trains models with elementwise optimizers only: gradient clipping (a norm "
                             "over each model) and AdamW's per-tensor decay groups need vectorize = 0")
        return self

    @classmethod
    def parse(cls, data: dict, where: str = "training") -> "TrainConfig":
        return validated(cls, data, where)

    def total_iterations(self, train_size: int) -> int:
        if self.iterations is not None:
            return self.iterations
        return max(1, math.ceil(self.epochs * batches_per_epoch(train_size, self.batch_size)))

    def lr_at(self, iteration: int, total: int) -> float:
        """Learning rate used for the optimizer step taken at ``iteration``."""
        factor = 1.0
        if self.schedule == "step":
            factor = self.gamma ** sum(iteration >= m for m in self.milestones)
        elif self.schedule == "cosine":
            span = max(1, total - self.warmup_iterations)
            progress = min(1.0, max(0.0, (iteration - self.warmup_iterations) / span))
            factor = self.lr_floor + (1.0 - self.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if iteration < self.warmup_iterations:
            factor *= (iteration + 1) / self.warmup_iterations
        return self.lr * factor


def batches_per_epoch(train_size: int, batch_size: int) -> int:
    if batch_size > train_size:
        raise PrunelabError(f"batch_size {batch_size} is larger than the training set ({train_size} examples)")
    return train_size // batch_size  # the last incomplete batch is dropped


def batch_indices(seed: int, iteration: int, train_size: int, batch_size: int, device="cpu") -> torch.Tensor:
    """Example indices of the batch used at ``iteration`` (pure function), on ``device``."""
    per_epoch = batches_per_epoch(train_size, batch_size)
    epoch, position = divmod(iteration, per_epoch)
    return epoch_permutation(seed, epoch, train_size, device)[position * batch_size : (position + 1) * batch_size]


def epoch_permutation(seed: int, epoch: int, train_size: int, device: str = "cpu", _cache: dict = {}) -> torch.Tensor:
    """The order of examples in ``epoch`` (drawn on the CPU, copied to ``device`` once per epoch)."""
    key = (seed, epoch, train_size, str(device))
    perm = _cache.get(key)
    if perm is None:
        generator = torch.Generator().manual_seed(hash_seed(seed, epoch))
        perm = torch.randperm(train_size, generator=generator).to(device)
        if len(_cache) >= 64:  # a few epochs of a few models: memory stays flat
            _cache.clear()
        _cache[key] = perm
    return perm


def hash_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 steps; stable across runs)."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters in a canonical order that pruning does not change.

    torch's pruning re-registers ``weight`` as ``weight_orig`` (moving it after
    ``bias``); ordering by the name without ``_orig`` keeps an optimizer state
    saved before pruning loadable after it, and vice versa.
    """
    named = [(n.removesuffix("_orig"), p) for n, p in model.named_parameters() if p.requires_grad]
    return [p for _, p in sorted(named, key=lambda item: item[0])]


def make_optimizer(config: TrainConfig, params, fused: bool | None = None) -> torch.optim.Optimizer:
    """torch's optimizer for ``config``. ``fused`` (default: on CUDA) takes torch's fused kernel, one
    pass over each tensor (a small model's step is launch-bound on a GPU). One-at-a-time CPU training
    keeps torch's default implementation, which every CPU state in existing stores was trained with:
    switching it would change their bits."""
    params = list(params)
    fused = {"fused": True} if (bool(params) and params[0].is_cuda if fused is None else fused) else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                betas=(0.9, config.beta2), **fused)
    if config.optimizer == "adamw":  # decoupled decay of matrices only (GPT-2, nanoGPT): not of biases, norms
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, config.beta2),
                                 **fused)
    momentum = config.momentum if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(
        params, lr=config.lr, momentum=momentum, weight_decay=config.weight_decay,
        nesterov=config.nesterov and momentum > 0, **fused,
    )


@contextmanager
def deterministic(tf32: bool = False) -> Iterator[None]:
    import torch.utils.deterministic

    previous = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN, to expose kernels that read memory they
    # never wrote. No kernel used here does (bits are the same either way, tests/test_same_bits.py), and
    # the fills are a large share of a transformer's step on a CPU (docs/benchmarks/llm_study.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False  # the autotuner may pick another algorithm per run
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = flags


def training_device(config: TrainConfig) -> torch.device:
    """The device ``config`` trains on, checked to exist here."""
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PrunelabError(f"training asks for device {config.device!r}, but this process sees no CUDA device "
                                "(set device = \"cpu\" or \"auto\", or run where a GPU is visible)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PrunelabError(f"training asks for {config.device!r}, but only {torch.cuda.device_count()} CUDA "
                                "device(s) are visible")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def device_name(device: torch.device) -> str:
    """What provenance records about a device: ``cpu``, or ``cuda:0 NVIDIA H100 80GB HBM3 (sm_90)``."""
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"{device} {torch.cuda.get_device_name(device)} (sm_{major}{minor})"


def split_on(split, device: torch.device):
    """The training split's tensors on ``device``, copied once per process and device."""
    if device.type == "cpu":
        return split.x, split.y
    key = (id(split), str(device))
    on_device = CACHES.splits_on_device
    hit = on_device.get(key)
    if hit is None or hit[0] is not split:
        if len(on_device) >= 4:
            on_device.clear()
        hit = on_device[key] = (split, split.x.to(device), split.y.to(device))
    return hit[1], hit[2]


def _map_tensors(value, fn):
    """``value`` (a nested optimizer state dict) with ``fn`` applied to each of its tensors."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    return value


def own_copy(value):
    """A (nested) optimizer state dict whose tensors are fresh copies, shared with nobody."""
    return _map_tensors(value, torch.Tensor.clone)


def to_cpu(value):
    """Tensors in a (nested) optimizer state dict, moved to the CPU: stored blobs are always CPU tensors."""
    return _map_tensors(value, torch.Tensor.cpu)


class LossWatch:
    """Finite-loss checks without a device sync per step.

    Losses are kept on the device and checked every ``every`` steps (and
    before any curve point); a non-finite loss raises with the iteration where
    it first appeared. Training that diverged is discarded, so the few steps
    taken after it do not matter.
    """

    def __init__(self, config: TrainConfig, total: int, device: torch.device, models: int = 1, every: int = 64):
        self.config, self.total, self.every = config, total, every
        self.losses = torch.empty(every, models, device=device)
        self.first, self.count, self.last = 0, 0, float("nan")
        self.last_row = torch.full((models,), float("nan"))
        self.failures: dict[int, tuple[int, float]] = {}  # model → (first iteration, loss) of a non-finite loss

    def add(self, iteration: int, loss: torch.Tensor) -> None:
        if self.count == 0:
            self.first = iteration
        self.losses[self.count] = loss.detach()
        self.count += 1
        if self.count == self.every:
            self.check()

    def check(self) -> None:
        """Check the steps since the last check. One model: raise at its first non-finite loss;
        several: record each model's first one in ``failures`` (the others train on)."""
        if self.count == 0:
            return
        window = self.losses[: self.count].cpu()
        self.count = 0
        self.last_row = window[-1]
        bad = ~torch.isfinite(window)
        if bool(bad.any()):
            for lane in bad.any(dim=0).nonzero()[:, 0].tolist():
                i = int(bad[:, lane].nonzero()[0])
                self.failures.setdefault(lane, (self.first + i, window[i, lane].item()))
        if window.shape[1] == 1:
            if 0 in self.failures:
                it, value = self.failures[0]
                raise TrainingDiverged(f"loss became {value} at iteration {it} (lr {self.config.lr_at(it, self.total):g})")
            self.last = float(window[-1, 0])


class TrainingDiverged(PrunelabError):
    """The loss became NaN or infinite."""


# Called after every optimizer step with the model and the iteration. A hook whose class sets
# ``graph_safe = True`` promises to launch the same kernels on the same tensors at every step, whatever
# the iteration, so on CUDA the step it belongs to may be replayed as a graph (cuda_graphs); any other
# hook keeps the eager loop.
StepHook = Callable[[nn.Module, int], None]


@dataclass
class TrainResult:
    iterations: int  # the iteration reached (exclusive end)
    curve: list[dict] = field(default_factory=list)  # periodic validation metrics
    optimizer_state: dict | None = None  # always on the CPU
    seconds: float = 0.0
    device: str = "cpu"  # where it trained (device_name)
    group: dict | None = None  # a vectorised pass: its width, models, members and wall time
    cuda_graph: dict | None = None  # one-at-a-time on CUDA: its replayed steps (cuda_graphs.StepGraphs.record)

    @property
    def early_stopping_iteration(self) -> int | None:
        """Iteration of minimum validation loss (Frankle & Carbin)."""
        if not self.curve:
            return None
        return min(self.curve, key=lambda p: (p["val_loss"], p["iteration"]))["iteration"]


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    start: int = 0,
    stop: int | None = None,
    optimizer_state: dict | None = None,
    after_step: Sequence[StepHook] = (),
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place from iteration ``start`` to ``stop``.

    ``stop`` defaults to the configured length; training 0 → k, then k → T
    with the returned ``optimizer_state`` equals 0 → T. ``after_step`` hooks
    run after every optimizer step (pruning uses one to re-apply masks).
    """
    check_model_fits_task(model, dataset)
    train_split = dataset.train
    total = config.total_iterations(len(train_split))
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise PrunelabError(f"training window {start}..{stop} is outside 0..{total} iterations")
    batches_per_epoch(len(train_split), config.batch_size)

    device = training_device(config)
    model.to(device)  # in place: the caller's module (and torch's pruning buffers) now live on the device
    optimizer = make_optimizer(config, trainable_parameters(model))
    if optimizer_state is not None:
        # torch keeps a CPU state's tensors as they are and then updates them in place: without the
        # copy, training would change the state it started from (a stored parent still held in memory)
        optimizer.load_state_dict(own_copy(optimizer_state))  # torch moves the state to each parameter's device
    result = TrainResult(iterations=start, device=device_name(device))
    x_all, y_all = split_on(train_split, device)
    watch = LossWatch(config, total, device)
    now = start  # the iteration the hooks are told about

    def step(idx: torch.Tensor) -> torch.Tensor:
        loss = task_loss(model(x_all[idx]), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
        optimizer.step()
        for hook in after_step:
            hook(model, now)
        return loss.detach()

    # hooks that are not marked graph-safe may do anything in Python at any step: no replays then
    graphs = (cuda_graphs.for_training(step, optimizer, config, total, start, stop, (config.batch_size,), device)
              if all(getattr(hook, "graph_safe", False) for hook in after_step) else None)
    began = time.perf_counter()
    model.train()
    with deterministic(config.tf32), progress_bar(stop - start, f"training {type(model).__name__}", progress) as bar, \
            graphs.running() if graphs else nullcontext():
        for iteration in range(start, stop):
            now = iteration
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(iteration, total)
            idx = batch_indices(seed, iteration, len(train_split), config.batch_size, device)
            loss = graphs.step(iteration - start, idx) if graphs else step(idx)
            watch.add(iteration, loss)
            done = iteration + 1
            if config.eval_every and (done % config.eval_every == 0 or done == stop):
                watch.check()
                result.curve.append(_curve_point(model, dataset, done, watch.last))
            bar.advance()
    watch.check()
    if not config.eval_every and stop > start:
        result.curve.append(_curve_point(model, dataset, stop, watch.last))
    result.iterations = stop
    result.optimizer_state = to_cpu(optimizer.state_dict())
    result.seconds = time.perf_counter() - began
    if graphs:
        result.cuda_graph = graphs.record()
    return result


def check_model_fits_task(model: nn.Module, dataset: Dataset) -> None:
    """A language task needs a model that takes token ids (and gives logits per position), and a model
    that takes token ids needs a language task: said before a step, not as a dtype error inside one."""
    tokens = bool(getattr(model, "takes_tokens", False))
    if dataset.task == "language" and not tokens:
        raise PrunelabError(f"{dataset.name!r} is a language task (blocks of token ids); {type(model).__name__} "
                            "does not take token ids: use model 'gpt', an 'hf:' model, or a factory with tokens = True")
    if tokens and dataset.task != "language":
        raise PrunelabError(f"the model takes token ids, but {dataset.name!r} is a {dataset.task} task: give it a "
                            "language task such as 'tinyshakespeare'")


def _curve_point(model: nn.Module, dataset: Dataset, iteration: int, train_loss: float) -> dict:
    if len(dataset.validation):
        ev = evaluate(model, dataset.validation, dataset.class_names)
        if dataset.validation.regression:
            return {"iteration": iteration, "train_loss": train_loss, "val_loss": ev.loss, "val_rmse": ev.rmse}
        return {"iteration": iteration, "train_loss": train_loss, "val_loss": ev.loss, "val_accuracy": ev.accuracy}
    return {"iteration": iteration, "train_loss": train_loss, "val_loss": float("nan"), "val_accuracy": float("nan")}
