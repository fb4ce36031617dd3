"""Pruning on top of ``torch.nn.utils.prune``: scores, selection, masks, schedules."""

from .masks import LayerSparsity, Masks, SparsityReport, apply_masks, get_masks, pack, remove_pruning, sparsity_report, unpack
from .method import METHODS, Context, Method, register
from .methods import TECHNIQUES, CalibrationConfig, PruneResult, PruningConfig, prune, technique
from .targets import Target, select

__all__ = [
    "CalibrationConfig", "Context", "LayerSparsity", "METHODS", "Masks", "Method", "PruneResult", "PruningConfig",
    "SparsityReport", "TECHNIQUES", "Target", "apply_masks", "get_masks", "pack", "prune", "register",
    "remove_pruning", "select", "sparsity_report", "technique", "unpack",
]
