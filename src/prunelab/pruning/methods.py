"""``prune()``: one call for every method, scope and structure.

Semantics follow ``torch.nn.utils.prune``: a float ``amount`` is the fraction
of the *remaining* (unpruned) entries to remove — iterative pruning therefore
only ever touches what is still there — and an int ``amount`` is a count.
``target`` instead asks for an overall sparsity of the selected tensors.

* ``scope="layer"``: each tensor is pruned by its own amount;
  ``scope="global"``: one threshold across all selected tensors (tensors named
  in ``overrides`` are pruned on their own at their override amount, e.g.
  Frankle & Carbin's output layer at half the rate: ``{"<output>": 0.1}``).
* ``structure="structured"``: whole slices along ``dim`` (0 = neurons /
  output channels, 1 = input channels) scored by their Ln ``norm``. A pruned
  output slice takes its bias entry with it, so the neuron is removed entirely
  (``prune_bias``). For global structured scope, slice norms are divided by
  ``numel ** (1/n)`` so slices of different sizes are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import PrunelabError, validated
from .masks import Masks, SparsityReport, get_masks, sparsity_report
from .scores import expand_slices, random_scores, slice_scores, snip_scores, synflow_scores
from .selection import ScoreSource, count_eligible, lowest_k_masks
from .targets import Target, pruned_targets, resolve_overrides, select


class PruningConfig(BaseModel):
    """What to prune and how. Validated: bad values name their key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["magnitude", "random", "snip", "synflow"] = "magnitude"
    structure: Literal["unstructured", "structured"] = "unstructured"
    scope: Literal["layer", "global"] = "layer"
    amount: float | int | None = None  # fraction (float) or count (int) of remaining entries
    target: float | None = Field(None, ge=0, le=1)  # overall sparsity to reach instead
    dim: int = 0
    norm: float | Literal["inf"] = 1.0
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    overrides: dict[str, float | int] = Field(default_factory=dict)
    prune_bias: bool = True
    synflow_iterations: int = Field(100, gt=0)
    seed: int = 0

    @field_validator("norm", mode="before")
    @classmethod
    def _norm_as_float(cls, value):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "PruningConfig":
        if (self.amount is None) == (self.target is None):
            raise ValueError("give exactly one of 'amount' (of remaining entries) or 'target' (overall sparsity)")
        values = [self.amount] if self.amount is not None else []
        for value in values + list(self.overrides.values()):
            _check_amount(value)
        if self.method == "synflow" and self.structure == "structured":
            raise ValueError("synflow is defined for unstructured pruning only")
        if isinstance(self.norm, (int, float)) and self.norm <= 0:
            raise ValueError("norm must be positive or 'inf'")
        return self

    @classmethod
    def parse(cls, data: dict, where: str = "pruning") -> "PruningConfig":
        return validated(cls, data, where)


def _check_amount(value) -> None:
    if isinstance(value, bool):
        raise ValueError(f"amount {value!r} must be a number")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"amount {value} must be in [0, 1] (a fraction of remaining entries) or an int count")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"amount {value} must be a non-negative count")


#: The techniques compared in arXiv 2007.04091 / 2001.05050, plus SNIP and SynFlow.
TECHNIQUES: dict[str, dict] = {
    "l1_unstructured": dict(method="magnitude", structure="unstructured", scope="layer"),
    "global_unstructured": dict(method="magnitude", structure="unstructured", scope="global"),
    "random_unstructured": dict(method="random", structure="unstructured", scope="layer"),
    "l1_structured": dict(method="magnitude", structure="structured", scope="layer", norm=1),
    "l2_structured": dict(method="magnitude", structure="structured", scope="layer", norm=2),
    "linf_structured": dict(method="magnitude", structure="structured", scope="layer", norm="inf"),
    "random_structured": dict(method="random", structure="structured", scope="layer"),
    "snip": dict(method="snip", structure="unstructured", scope="global"),
    "synflow": dict(method="synflow", structure="unstructured", scope="global"),
}


def technique(name: str, **settings) -> PruningConfig:
    """A :class:`PruningConfig` for a named technique, e.g. ``technique("l2_structured", amount=0.2)``."""
    if name not in TECHNIQUES:
        import difflib

        close = difflib.get_close_matches(name, TECHNIQUES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PrunelabError(f"unknown pruning technique {name!r}{hint} (known: {', '.join(TECHNIQUES)})")
    return PruningConfig.parse({**TECHNIQUES[name], **settings}, where=name)


@dataclass(frozen=True)
class PruneResult:
    masks: Masks  # every pruned tensor of the model after this call
    report: SparsityReport
    pruned: dict[str, int]  # entries (or slices) newly pruned per tensor


def prune(
    model: nn.Module,
    config: PruningConfig | None = None,
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    positions: dict[str, int] | None = None,
    **settings,
) -> PruneResult:
    """Prune ``model`` in place according to ``config`` (or keyword settings).

    ``batch`` (inputs, labels) is needed by SNIP; ``input_shape`` by SynFlow
    (and to report FLOPs). ``positions``: the model's :func:`~prunelab.pruning.masks.output_positions`
    for ``input_shape``, when the caller has them (the report's forward pass is then skipped).
    """
    if config is None:
        config = PruningConfig.parse(settings)
    elif settings:
        config = PruningConfig.parse({**config.model_dump(), **settings})
    targets = select(model, config.include, config.exclude)
    overrides = resolve_overrides(targets, config.overrides)
    # In target mode the amounts (and override values) are sparsities to reach.
    default = config.amount if config.target is None else config.target
    amounts = {t.name: overrides.get(t.name, default) for t in targets}
    targets_by_group = _groups(targets, overrides, config.scope)

    if config.method == "synflow":
        if input_shape is None:
            raise PrunelabError("synflow pruning needs input_shape (the model's input without the batch dimension)")
        keeps = _synflow(model, targets, targets_by_group, amounts, config, input_shape)
    else:
        scores = _scores(model, targets, config, batch)
        keeps = {}
        for group in targets_by_group:
            keeps.update(_select_group(group, scores, amounts[group[0].name], config))

    pruned, kept = {}, {}
    for t in targets:
        keep = keeps[t.name]
        mask = t.mask
        before = keep.numel() if mask is None else int(torch.count_nonzero(mask))
        torch_prune.custom_from_mask(t.module, t.param, keep)
        kept[t.name] = int(torch.count_nonzero(keep))
        pruned[t.name] = before - kept[t.name]
        if config.structure == "structured" and config.prune_bias and config.dim % keep.dim() == 0:
            bias = getattr(t.module, "bias_orig", getattr(t.module, "bias", None))
            if bias is not None:
                torch_prune.custom_from_mask(t.module, "bias", keep.reshape(keep.shape[0], -1).any(dim=1))
    if config.structure == "unstructured":
        # the keep masks already include what was pruned before (eligibility), so they are the
        # model's masks for these tensors; only tensors outside this call are read back
        masks = {t.name: keeps[t.name].clone() if t.name in kept else t.mask.detach() != 0
                 for t in pruned_targets(model)}
    else:
        masks, kept = get_masks(model), {}
    return PruneResult(masks, sparsity_report(model, input_shape, kept=kept, positions=positions), pruned)


def _groups(targets: Sequence[Target], overrides: dict, scope: str) -> list[list[Target]]:
    if scope == "layer":
        return [[t] for t in targets]
    pooled = [t for t in targets if t.name not in overrides]
    alone = [[t] for t in targets if t.name in overrides]
    return ([pooled] if pooled else []) + alone


def _scores(model, targets, config: PruningConfig, batch) -> dict[str, torch.Tensor] | None:
    if config.method == "magnitude":
        return None  # computed lazily from the weights, chunk by chunk
    if config.method == "random":
        if config.structure == "structured":
            g = torch.Generator().manual_seed(config.seed)
            return {t.name: torch.rand(t.shape[config.dim % len(t.shape)], generator=g) for t in targets}
        return random_scores(targets, config.seed)
    if batch is None:
        raise PrunelabError("snip pruning needs a batch: prune(model, ..., batch=(inputs, labels))")
    return snip_scores(model, targets, batch)


def _select_group(group: list[Target], scores, amount, config: PruningConfig) -> dict[str, torch.Tensor]:
    if config.structure == "unstructured":
        sources = [
            ScoreSource(t.original, torch.abs, t.mask) if scores is None else ScoreSource(scores[t.name], None, t.mask)
            for t in group
        ]
        total = sum(len(s) for s in sources)
    else:
        sources = []
        for t in group:
            dim = config.dim % len(t.shape)
            slice_alive = None if t.mask is None else slice_scores(t.mask, dim, "inf") > 0
            if scores is None:
                values = slice_scores(t.effective.detach(), dim, config.norm)
                if config.scope == "global":
                    per_slice = t.numel() // t.shape[dim]
                    p = float("inf") if config.norm == "inf" else float(config.norm)
                    values = values / (per_slice ** (1.0 / p) if p != float("inf") else 1.0)
            elif scores[t.name].dim() == 1:
                values = scores[t.name]  # random structured: already one score per slice
            else:
                values = slice_scores(scores[t.name], dim, 1)
            sources.append(ScoreSource(values, None, slice_alive))
        total = sum(len(s) for s in sources)
    eligible = count_eligible(sources)
    k = _count_to_prune(amount, config, eligible, total, group)
    keeps = lowest_k_masks(sources, k)
    out = {}
    for t, keep in zip(group, keeps):
        if config.structure == "structured":
            keep = expand_slices(keep, t.shape, config.dim)
            if t.mask is not None:
                keep &= t.mask != 0
        out[t.name] = keep
    return out


def _count_to_prune(amount, config: PruningConfig, eligible: int, total: int, group) -> int:
    where = group[0].name if len(group) == 1 else f"{len(group)} tensors"
    unit = "slices" if config.structure == "structured" else "entries"
    if config.target is not None:
        k = round(float(amount) * total) - (total - eligible)
        if k < 0:
            raise PrunelabError(
                f"{where}: target sparsity {amount} is below the current sparsity {(total - eligible) / total:.4f}"
            )
        return k
    if isinstance(amount, float):
        return round(amount * eligible)  # torch's rounding, for identical results
    if amount > eligible:
        raise PrunelabError(f"{where}: cannot prune {amount} {unit}; only {eligible} remain unpruned")
    return int(amount)


def _synflow(model, targets, groups, amounts, config: PruningConfig, input_shape) -> dict[str, torch.Tensor]:
    """Iterative SynFlow: prune towards the final density in exponential steps."""
    keeps = {t.name: (torch.ones(t.shape, dtype=torch.bool) if t.mask is None else t.mask != 0) for t in targets}
    final_counts = {}
    for group in groups:
        eligible = sum(int(keeps[t.name].sum()) for t in group)
        total = sum(t.numel() for t in group)
        k = _count_to_prune(amounts[group[0].name], config, eligible, total, group)
        final_counts[id(group[0])] = (eligible, eligible - k)
    n = config.synflow_iterations
    for step in range(1, n + 1):
        scores = synflow_scores(model, targets, input_shape, keeps)
        for group in groups:
            start, end = final_counts[id(group[0])]
            if start == 0:
                continue
            goal = round(start * (end / start) ** (step / n)) if end > 0 else (0 if step == n else round(start * (1 / start) ** (step / n)))
            current = sum(int(keeps[t.name].sum()) for t in group)
            sources = [ScoreSource(scores[t.name], None, keeps[t.name]) for t in group]
            new = lowest_k_masks(sources, max(0, current - goal))
            for t, keep in zip(group, new):
                keeps[t.name] = keep
    return keeps
