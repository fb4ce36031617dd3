"""Pruning on top of ``torch.nn.utils.prune``: scores, selection, masks, schedules."""

from .masks import LayerSparsity, Masks, SparsityReport, apply_masks, get_masks, pack, remove_pruning, sparsity_report, unpack
from .methods import TECHNIQUES, PruneResult, PruningConfig, prune, technique
from .targets import Target, select

__all__ = [
    "LayerSparsity", "Masks", "PruneResult", "PruningConfig", "SparsityReport", "TECHNIQUES", "Target",
    "apply_masks", "get_masks", "pack", "prune", "remove_pruning", "select", "sparsity_report", "technique", "unpack",
]
