"""Many models of one architecture trained in one pass (``[training] vectorize = W``).

The parameters of W models are stacked along a new first dimension and one
``torch.func.vmap`` over ``functional_call`` runs all W forward passes as
batched kernels; one backward and one optimizer step serve them all. Each
model keeps everything it would have alone: its own data order (seed), its own
masks (re-applied after every step), its own optimizer state and its own
divergence check.

What stays exact and what does not:

* The optimizer is elementwise (Adam, SGD, momentum, weight decay), so a stacked
  step is the per-model step, bit for bit.
* The forward/backward kernels are batched (``bmm``, grouped convolutions)
  instead of one model's ``mm``/``conv``, which sums in another order: results
  match one-at-a-time training to rounding, then drift apart as training
  amplifies rounding (tested within a stated tolerance).
* Batched kernels may also choose their blocking by the batch count, so a
  group is always padded to exactly W lanes (idle lanes repeat the first
  model). A model's bits then depend only on its own inputs and W — never on
  which models shared its pass, or on whether a crash split a group — so W is
  part of the identity (``TrainConfig.vectorize``) and the group is recorded in
  provenance (``metrics.vectorized``).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PrunelabError
from ..progress import progress_bar
from . import cuda_graphs
from .datasets import Dataset
from .evaluation import task_loss
from .training import (LossWatch, TrainConfig, TrainingDiverged, TrainResult, _curve_point, batches_per_epoch,
                       check_model_fits_task, deterministic, device_name, epoch_permutation, make_optimizer, split_on, to_cpu,
                       training_device)


def train_group(
    models: list[nn.Module],
    dataset: Dataset,
    config: TrainConfig,
    *,
    seeds: list[int],
    start: int = 0,
    stop: int | None = None,
    optimizer_states: list[dict | None] | None = None,
    labels: list[str] | None = None,
    progress: bool | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train ``models`` (same architecture, possibly pruned) in place, ``config.vectorize`` at a time.

    Every model starts at iteration ``start``; ``optimizer_states`` are all None or all at that
    step. Returns, per model, its :class:`TrainResult` or the :class:`TrainingDiverged` it hit
    (the other models are unaffected). Models leave on the CPU with their pruning re-attached.
    """
    width = config.vectorize or len(models)
    states = optimizer_states or [None] * len(models)
    labels = labels or [str(i) for i in range(len(models))]
    if not (len(models) == len(seeds) == len(states) == len(labels)):
        raise PrunelabError("train_group: models, seeds, optimizer states and labels differ in number")
    for model in models[:1]:
        check_model_fits_task(model, dataset)
    out: list = []
    for lo in range(0, len(models), width):
        hi = lo + width
        out += _train_lanes(models[lo:hi], dataset, config, width, seeds[lo:hi], start, stop, states[lo:hi],
                            labels[lo:hi], progress)
    return out


def _train_lanes(models, dataset, config, width, seeds, start, stop, states, labels, progress):
    from .masking import attach_masks, attached_masks, detach_masks

    train_split = dataset.train
    total = config.total_iterations(len(train_split))
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise PrunelabError(f"training window {start}..{stop} is outside 0..{total} iterations")
    per_epoch = batches_per_epoch(len(train_split), config.batch_size)
    if (states[0] is None) != all(s is None for s in states):
        raise PrunelabError("train_group: some models have optimizer state and some do not; train them apart")
    device = training_device(config)
    n = len(models)
    lanes = list(range(n)) + [0] * (width - n)  # idle lanes repeat model 0: fixed kernel shapes

    masks = [attached_masks(m) for m in models]
    for m in models:
        detach_masks(m)  # masks made permanent while training, re-applied after every step
    names = sorted(name for name, p in models[0].named_parameters() if p.requires_grad)
    buffer_names = sorted(name for name, _ in models[0].named_buffers())
    for m in models[1:]:
        if sorted(name for name, p in m.named_parameters() if p.requires_grad) != names:
            raise PrunelabError("train_group: the models do not share one architecture")

    def stack(getter):
        return torch.stack([getter(models[lane]).detach() for lane in lanes]).to(device)

    layouts = [Layout.of(models[0].get_parameter(k)) for k in names]
    params = [lay.store(stack(lambda m, k=k: m.get_parameter(k))).requires_grad_() for k, lay in zip(names, layouts)]
    buffers = [stack(lambda m, k=k: m.get_buffer(k)) for k in buffer_names]
    masked = [i for i, k in enumerate(names) if any(k in mk for mk in masks)]
    lane_masks = [layouts[i].store(torch.stack([masks[lane].get(names[i], torch.ones((), dtype=torch.bool)).expand_as(
        models[lane].get_parameter(names[i])) for lane in lanes]).to(params[i].dtype)).to(device) for i in masked]

    # torch's fused kernel: one pass over each tensor instead of about eight (vectorised states are
    # new identities, so nothing stored depends on the unfused kernel's bits)
    optimizer = make_optimizer(config, params, fused=True)
    if states[0] is not None:
        optimizer.load_state_dict(_stack_states([states[lane] for lane in lanes], layouts))

    base = copy.deepcopy(models[0]).to("meta")  # structure only; tensors come from the stacks

    def one(p, b, x):
        return torch.func.functional_call(base, {**dict(zip(names, p)), **dict(zip(buffer_names, b))}, (x,))

    forward = torch.func.vmap(one, randomness="error")
    x_all, y_all = split_on(train_split, device)

    def step(idx: torch.Tensor) -> torch.Tensor:
        """One training step of every lane on batch indices ``idx`` (W, B); returns the (W,) losses."""
        views = tuple(lay.view(p) for p, lay in zip(params, layouts))
        output = forward(views, tuple(buffers), x_all[idx])
        loss = task_loss(output.flatten(0, 1), y_all[idx].flatten(0, 1), reduction="none")
        loss = loss.view(width, -1).mean(dim=1)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # lanes share no parameter: each gets its own model's gradient
        optimizer.step()
        if masked:
            with torch.no_grad():
                torch._foreach_mul_([params[i] for i in masked], lane_masks)
        return loss.detach()

    graphs = cuda_graphs.for_training(step, optimizer, config, total, start, stop, (width, config.batch_size), device)
    watch = LossWatch(config, total, device, models=width)
    curves: list[list[dict]] = [[] for _ in range(n)]
    order, order_epoch = None, None
    began = time.perf_counter()
    base.train()
    with deterministic(config.tf32), progress_bar(stop - start, f"training {n} x {type(models[0]).__name__}",
                                                  progress) as bar, graphs.running() if graphs else nullcontext():
        for iteration in range(start, stop):
            lr = config.lr_at(iteration, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            epoch, position = divmod(iteration, per_epoch)
            if epoch != order_epoch:  # every lane's order of this epoch, stacked once (not W slices a step)
                order = torch.stack([epoch_permutation(seeds[lane], epoch, len(train_split)) for lane in lanes])
                order, order_epoch = order.to(device), epoch
            idx = order[:, position * config.batch_size : (position + 1) * config.batch_size]
            loss = graphs.step(iteration - start, idx) if graphs else step(idx)
            watch.add(iteration, loss)
            done = iteration + 1
            if config.eval_every and (done % config.eval_every == 0 or done == stop):
                watch.check()
                for i in range(n):
                    _unstack_into(models[i], i, names, params, layouts, buffer_names, buffers)
                    curves[i].append(_curve_point(models[i], dataset, done, float(watch.last_row[i])))
            bar.advance()
    watch.check()
    seconds = time.perf_counter() - began

    results: list = []
    state = optimizer.state_dict()
    group = {"width": width, "models": n, "members": list(labels), "seconds": seconds, "device": device_name(device)}
    if graphs:
        group["cuda_graph"] = graphs.record()
    for i, model in enumerate(models):
        _unstack_into(model, i, names, params, layouts, buffer_names, buffers)
        model.to("cpu")
        attach_masks(model, masks[i])
        if i in watch.failures:
            it, value = watch.failures[i]
            results.append(TrainingDiverged(f"loss became {value} at iteration {it} "
                                            f"(lr {config.lr_at(it, total):g}; trained in a vectorised group)"))
            continue
        if not config.eval_every and stop > start:
            curves[i].append(_curve_point(model, dataset, stop, float(watch.last_row[i])))
        results.append(TrainResult(iterations=stop, curve=curves[i], optimizer_state=_lane_state(state, i, width, layouts),
                                   seconds=seconds / n, device=device_name(device), group=group))
    return results


ALIGN = 64  # elements: a multiple of every CPU vector width and cache line torch's kernels step by


@dataclass(frozen=True)
class Layout:
    """How one parameter's W lanes are stored in the tensor the optimizer updates.

    * ``flip``: a matrix (Linear weight) as (W, in, out). Its gradient x^T g leaves the batched
      matmul in exactly this layout; as (W, out, in) it would cost a transposing copy and a zero fill
      every step (docs/architecture.md, "Figures behind the code's comments").
    * ``pad``: a tensor whose size is not a multiple of ALIGN, as (W, P) rows padded with zeros to
      P = a multiple of ALIGN. torch's fused CPU optimizer runs its vector code in aligned blocks
      and a scalar loop over the very last elements, which rounds differently: unpadded, the model
      in the last lane got other bits than it would in any other lane. Padded, every lane starts
      aligned and the scalar tail never runs, so a model's bits do not depend on its lane. The
      padding stays zero (zero gradient, zero update).
    * ``plain``: as stacked, (W, *shape).
    """

    shape: tuple[int, ...]
    kind: str

    @classmethod
    def of(cls, param: torch.Tensor) -> "Layout":
        numel = param.numel()
        kind = "pad" if numel % ALIGN else ("flip" if param.ndim == 2 else "plain")
        return cls(tuple(param.shape), kind)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def store(self, stacked: torch.Tensor) -> torch.Tensor:
        """(W, *shape) → the stored layout (a new contiguous tensor)."""
        if self.kind == "flip":
            return stacked.transpose(1, 2).contiguous()
        if self.kind == "pad":
            flat = stacked.reshape(stacked.shape[0], -1)
            return torch.nn.functional.pad(flat, (0, -self.numel % ALIGN)).contiguous()
        return stacked.contiguous()

    def view(self, stored: torch.Tensor) -> torch.Tensor:
        """The stored tensor seen as (W, *shape), without copying (autograd flows through)."""
        if self.kind == "flip":
            return stored.transpose(1, 2)
        if self.kind == "pad":
            return stored[:, : self.numel].view(stored.shape[0], *self.shape)
        return stored

    def lane(self, stored: torch.Tensor, i: int) -> torch.Tensor:
        return self.view(stored)[i]


@torch.no_grad()
def _unstack_into(model: nn.Module, lane: int, names, params, layouts, buffer_names, buffers) -> None:
    for name, stacked, layout in zip(names, params, layouts):
        model.get_parameter(name).copy_(layout.lane(stacked, lane))
    for name, stacked in zip(buffer_names, buffers):
        model.get_buffer(name).copy_(stacked[lane])


def _stack_states(states: list[dict], layouts: list[Layout]) -> dict:
    """One optimizer state dict for the stacked parameters, from each lane's own state dict."""
    first = states[0]
    stacked = {}
    for j in range(len(layouts)):
        entries = [s["state"].get(j, s["state"].get(str(j))) for s in states]
        if any(e is None for e in entries):
            if all(e is None for e in entries):
                continue
            raise PrunelabError("train_group: optimizer states differ in which parameters have state")
        merged = {}
        for key, value in entries[0].items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                merged[key] = layouts[j].store(torch.stack([e[key] for e in entries]))
            else:  # the step count: the same in every lane (the grouping key checks it)
                merged[key] = value.clone() if isinstance(value, torch.Tensor) else value
        stacked[j] = merged
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def _lane_state(state: dict, lane: int, width: int, layouts: list[Layout]) -> dict:
    """Lane ``lane``'s slice of the stacked optimizer state, shaped like a one-model state dict."""
    out = {}
    for j, entry in state["state"].items():
        def one(v):
            if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == width:
                return layouts[int(j)].lane(v, lane).contiguous().clone()
            return v.clone() if isinstance(v, torch.Tensor) else v

        out[j] = {k: one(v) for k, v in entry.items()}
    return to_cpu({"state": out, "param_groups": copy.deepcopy(state["param_groups"])})
