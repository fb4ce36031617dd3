"""Physically remove pruned neurons and channels (Torch-Pruning does the surgery).

A masked model still computes with its full weight tensors. ``compact``
builds Torch-Pruning's dependency graph, finds for every coupled group
(a conv's output channels, its batch norm, the next layers' input channels,
residual partners, concatenations) the channels that are *dead* in every
member, and removes them. A channel is dead when its weight slice is all zero,
its bias (if any) is zero, and every batch norm in the group maps it to
exactly zero (gamma = beta = 0). Structured pruning with ``prune_bias`` (and
:func:`mask_coupled_batchnorm` for batch-norm models) produces such channels,
so the compacted model computes the same function as the masked one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import PrunelabError
from .masks import clone_model, remove_pruning
from .targets import PRUNABLE_TYPES

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class CompactionReport:
    parameters_before: int
    parameters_after: int
    removed: dict[str, int]  # root module name -> channels removed
    max_abs_difference: float  # |compacted(x) - masked(x)| on the example input

    @property
    def parameter_ratio(self) -> float:
        return self.parameters_after / self.parameters_before


def _tp():
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise PrunelabError("compaction needs the 'torch-pruning' package (pip install torch-pruning)") from exc
    return torch_pruning


def _dead_out_channels(module: nn.Module) -> torch.Tensor:
    """Bool per output channel: weight slice zero and bias zero (or absent)."""
    w = module.weight.detach()
    dead = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
    if getattr(module, "bias", None) is not None:
        dead &= module.bias.detach() == 0
    return dead


def _bn_zero_channels(bn: nn.Module) -> torch.Tensor:
    if not bn.affine:
        return torch.zeros(bn.num_features, dtype=torch.bool)
    return (bn.weight.detach() == 0) & (bn.bias.detach() == 0)


def _ints(indices) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in indices]


def _root_indices(item) -> list:
    """Root-layer channel of each index (a flatten maps many inputs to one channel)."""
    roots = getattr(item, "root_idxs", None)
    if roots is None:
        return [getattr(i, "root_idx", i) for i in item.idxs]
    return roots


def compact(model: nn.Module, example_input: torch.Tensor, *, atol: float = 1e-5) -> tuple[nn.Module, CompactionReport]:
    """Return a smaller copy of ``model`` without its dead channels, and a report.

    The input model is not modified. The copy has its masks made permanent
    (plain weights, no pruning hooks). The output layer keeps all its outputs.
    Raises if the compacted model's output differs from the masked model's by
    more than ``atol`` on ``example_input`` (eval mode).
    """
    tp = _tp()
    masked = model
    work = remove_pruning(clone_model(model)).eval()
    before = sum(p.numel() for p in work.parameters())
    prunable = [m for m in work.modules() if isinstance(m, PRUNABLE_TYPES)]
    if not prunable:
        raise PrunelabError("the model has no Linear/Conv layers to compact")
    output_layer = prunable[-1]
    graph = tp.DependencyGraph().build_dependency(work, example_inputs=example_input, verbose=False)
    names = {m: n for n, m in work.named_modules()}
    removed: dict[str, int] = {}
    for group in graph.get_all_groups(ignored_layers=[output_layer], root_module_types=(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        n_root = len(group[0].idxs)  # get_all_groups gives the root layer's full channel list
        if n_root == 0:
            continue
        dead = torch.ones(n_root, dtype=torch.bool)
        for item in group:
            dep, idxs = item.dep, item.idxs
            module = dep.target.module
            if not graph.is_out_channel_pruning_fn(dep.handler):
                continue
            if isinstance(module, PRUNABLE_TYPES):
                channel_dead = _dead_out_channels(module)
            elif isinstance(module, _BN):
                channel_dead = _bn_zero_channels(module)
            else:
                continue
            for idx, root in zip(_ints(idxs), _ints(_root_indices(item))):
                if not bool(channel_dead[idx]):
                    dead[root] = False
        chosen = torch.nonzero(dead).flatten().tolist()
        if not chosen or len(chosen) >= n_root:
            continue  # nothing to remove, or removing all would disconnect the network
        root_dep = group[0].dep
        pruning_group = graph.get_pruning_group(root_dep.target.module, root_dep.handler, chosen)
        if graph.check_pruning_group(pruning_group):
            pruning_group.prune()
            removed[names.get(root_dep.target.module, "?")] = len(chosen)
    after = sum(p.numel() for p in work.parameters())
    with torch.no_grad():
        was = masked.training
        masked.eval()
        try:
            reference = masked(example_input)
        finally:
            masked.train(was)
        difference = float((work(example_input) - reference).abs().max())
    if difference > atol:
        raise PrunelabError(f"compaction changed the model's output by {difference:.3g} (> {atol}); please report this model")
    return work, CompactionReport(before, after, removed, difference)


def mask_coupled_batchnorm(model: nn.Module, example_input: torch.Tensor) -> int:
    """Zero (via masks) the batch-norm gamma/beta of output channels pruned away.

    After structured pruning of conv output channels, the following batch norm
    still emits a constant for each removed channel; masking its affine
    parameters makes the channel output exactly zero, as removal would.
    Returns the number of batch-norm channels masked.
    """
    tp = _tp()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    count = 0
    for module in list(model.modules()):
        if not isinstance(module, PRUNABLE_TYPES) or module not in graph.module2node:
            continue
        weight = module.weight.detach()
        dead = torch.nonzero((weight.reshape(weight.shape[0], -1) == 0).all(dim=1)).flatten().tolist()
        if not dead:
            continue
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels if not isinstance(module, nn.Linear) else tp.prune_linear_out_channels, dead)
        for item in group:
            bn = item.dep.target.module
            if isinstance(bn, _BN) and bn.affine and graph.is_out_channel_pruning_fn(item.dep.handler):
                keep = torch.ones(bn.num_features, dtype=torch.bool)
                keep[_ints(item.idxs)] = False
                torch_prune.custom_from_mask(bn, "weight", keep)
                torch_prune.custom_from_mask(bn, "bias", keep)
                count += int((~keep).sum())
    return count
