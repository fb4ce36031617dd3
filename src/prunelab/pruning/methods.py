"""``prune()``: one call for every method, scope and structure.

Semantics follow ``torch.nn.utils.prune``: a float ``amount`` is the fraction
of the *remaining* (unpruned) entries to remove — iterative pruning therefore
only ever touches what is still there — and an int ``amount`` is a count.
``target`` instead asks for an overall sparsity of the selected tensors.

*What* is important is the method's (:mod:`.method`: magnitude, random, SNIP, SynFlow, GraSP,
Wanda, SparseGPT, or your own class); *which* weights go is decided here, the same for every
method:

* ``scope="layer"``: each tensor is pruned by its own amount;
  ``scope="global"``: one threshold across all selected tensors (tensors named
  in ``overrides`` are pruned on their own at their override amount, e.g.
  Frankle & Carbin's output layer at half the rate: ``{"<output>": 0.1}``).
* ``structure="structured"``: whole slices along ``dim`` (0 = neurons /
  output channels, 1 = input channels) scored by their Ln ``norm``. A pruned
  output slice takes its bias entry with it, so the neuron is removed entirely
  (``prune_bias``). For global structured scope, slice norms are divided by
  ``numel ** (1/n)`` so slices of different sizes are comparable.
* ``pattern="N:M"``: in every group of M consecutive input weights of an output row (a conv's
  input channels at one kernel position) exactly N are kept — the pattern sparse tensor cores
  run (2:4). Its sparsity is 1 − N/M, so neither ``amount`` nor ``target`` is given.
* A method whose scores compare within an output row (Wanda) prunes the same fraction of every
  row; a method that looks at calibration data prunes layer by layer in one forward pass over
  it, each layer seeing the inputs the already-pruned layers before it give.
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
from .method import Context, Method, check_method, make_method
from .scores import expand_slices, slice_scores
from .selection import ScoreSource, count_eligible, lowest_k_masks
from .targets import Target, pruned_targets, resolve_overrides, select

OMIT_DEFAULT = {"identity": "omit_default"}  # a field added after stores existed: in identities only when set


class CalibrationConfig(BaseModel):
    """The data a method that looks at data (Wanda, SparseGPT) reads: ``samples`` examples drawn with
    ``seed`` (default: the pruned state's own seed) from ``split`` of the state's dataset, or of
    ``dataset`` when given. Part of the pruned state's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(128, gt=0, le=1_000_000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    split: Literal["train", "validation"] = "train"
    dataset: str | None = None


class PruningConfig(BaseModel):
    """What to prune and how. Validated: bad values name their key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "magnitude"  # a registered method (prunelab methods) or your class as 'package.module:Class'
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
    # in a state's identity only when set, so states stored without these fields keep their hashes
    pattern: str | None = Field(None, json_schema_extra=OMIT_DEFAULT)  # "N:M", e.g. "2:4"
    method_params: dict = Field(default_factory=dict, json_schema_extra=OMIT_DEFAULT)
    calibration: CalibrationConfig | None = Field(None, json_schema_extra=OMIT_DEFAULT)

    @field_validator("norm", mode="before")
    @classmethod
    def _norm_as_float(cls, value):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    _pattern = field_validator("pattern")(classmethod(lambda cls, v: check_pattern(v)))

    @model_validator(mode="after")
    def _check(self) -> "PruningConfig":
        if self.pattern is not None:
            if self.amount is not None or self.target is not None or self.overrides:
                raise ValueError(f"pattern {self.pattern!r} fixes the sparsity (1 − N/M): give no amount, target or "
                                 "per-layer rates")
            if self.structure != "unstructured":
                raise ValueError("an N:M pattern is a fine-grained (unstructured) selection; structure must be "
                                 "'unstructured'")
        elif (self.amount is None) == (self.target is None):
            raise ValueError("give exactly one of 'amount' (of remaining entries) or 'target' (overall sparsity)")
        values = [self.amount] if self.amount is not None else []
        for value in values + list(self.overrides.values()):
            _check_amount(value)
        if isinstance(self.norm, (int, float)) and self.norm <= 0:
            raise ValueError("norm must be positive or 'inf'")
        if ":" not in self.method:  # a class by import path is checked where it is trusted: when pruning
            self.make_method()
        return self

    def params(self) -> dict:
        """The method's parameters (SynFlow's iteration count is a field of its own, from before)."""
        if self.method == "synflow":
            return {"iterations": self.synflow_iterations, **self.method_params}
        return dict(self.method_params)

    def make_method(self) -> Method:
        return check_method(make_method(self.method, self.params()), self.structure, self.scope, self.pattern)

    @classmethod
    def parse(cls, data: dict, where: str = "pruning") -> "PruningConfig":
        return validated(cls, data, where)


def check_pattern(value: str | None) -> str | None:
    """A pydantic validator's body: ``value`` when it is None or a valid "N:M" pattern."""
    if value is not None:
        parse_pattern(value)
    return value


def parse_pattern(text: str) -> tuple[int, int]:
    """``"2:4"`` → (2, 4): N kept of every M, 0 < N < M ≤ 256."""
    n, sep, m = str(text).partition(":")
    try:
        n, m = int(n), int(m)
    except ValueError:
        n = m = 0
    if not sep or not 0 < n < m <= 256:
        raise ValueError(f"pattern {text!r} must read 'N:M' with 0 < N < M <= 256 (e.g. '2:4')")
    return n, m


def _check_amount(value) -> None:
    if isinstance(value, bool):
        raise ValueError(f"amount {value!r} must be a number")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"amount {value} must be in [0, 1] (a fraction of remaining entries) or an int count")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"amount {value} must be a non-negative count")


#: The techniques compared in arXiv 2007.04091 / 2001.05050, SNIP, SynFlow and GraSP, and the methods
#: that look at calibration data (Wanda, SparseGPT; arXiv 2306.11695, 2301.00774). Any registered
#: method name, or a class by import path, is a technique too (unstructured, layer by layer).
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
    "grasp": dict(method="grasp", structure="unstructured", scope="global"),
    "wanda": dict(method="wanda", structure="unstructured", scope="layer"),
    "sparsegpt": dict(method="sparsegpt", structure="unstructured", scope="layer"),
}


def technique_settings(name: str) -> dict:
    """The settings a technique name stands for: a named technique, a registered method, or a
    method class by import path (``mylab.methods:Taylor``: unstructured, layer by layer)."""
    if name in TECHNIQUES:
        return dict(TECHNIQUES[name])
    from .method import METHODS, _builtins

    _builtins()
    if name in METHODS or ":" in name:
        return dict(method=name, structure="unstructured", scope="layer")
    import difflib

    known = list(TECHNIQUES) + [n for n in METHODS.names() if n not in TECHNIQUES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise PrunelabError(f"unknown pruning technique {name!r}{hint} (known: {', '.join(known)}; or your own method "
                        "as 'package.module:Class')")


def technique(name: str, **settings) -> PruningConfig:
    """A :class:`PruningConfig` for a named technique, e.g. ``technique("l2_structured", amount=0.2)``.
    A method class named by import path here is trusted: your code names it (a store never calls this)."""
    from ..registry import trust_names

    trust_names(name)
    return PruningConfig.parse({**technique_settings(name), **settings}, where=name)


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
    calibration: torch.Tensor | None = None,
    input_shape: Sequence[int] | None = None,
    positions: dict[str, int] | None = None,
    **settings,
) -> PruneResult:
    """Prune ``model`` in place according to ``config`` (or keyword settings).

    ``batch`` (inputs, labels) is needed by SNIP and GraSP; ``calibration`` (inputs) by Wanda and
    SparseGPT; ``input_shape`` by SynFlow (and to report FLOPs). ``positions``: the model's
    :func:`~prunelab.pruning.masks.output_positions` for ``input_shape``, when the caller has them
    (the report's forward pass is then skipped).
    """
    if config is None:  # keyword settings: the caller's own code names the method
        from ..registry import trust_names

        trust_names(settings.get("method"))
        config = PruningConfig.parse(settings)
    elif settings:
        config = PruningConfig.parse({**config.model_dump(), **settings})
    method = config.make_method()
    context = Context(config, config.seed, batch, calibration, input_shape)
    _check_needs(method, context)
    targets = select(model, config.include, config.exclude)
    overrides = resolve_overrides(targets, config.overrides)
    # In target mode the amounts (and override values) are sparsities to reach.
    default = config.amount if config.target is None else config.target
    amounts = {t.name: overrides.get(t.name, default) for t in targets}
    targets_by_group = _groups(targets, overrides, config.scope)
    pattern = parse_pattern(config.pattern) if config.pattern is not None else None
    check_pattern_fits(targets, config.pattern)  # every layer fits the pattern, before anything changes

    installed: dict[str, int] = {}  # target → entries a calibration method removed (its masks are installed)
    if method.calibrated:
        keeps, installed = _prune_calibrated(model, targets, method, config, amounts, pattern, context)
    else:
        counts = lambda group, eligible, total: _count_to_prune(amounts[group[0].name], config, eligible, total, group)  # noqa: E731
        keeps = method.select(model, targets, targets_by_group, counts, context)
        if keeps is None:
            scores = _checked_scores(method, method.score(model, targets, context), targets, config)
            keeps = {}
            if pattern is not None:
                for t in targets:
                    keeps[t.name] = _nm_keep(t, None if scores is None else scores[t.name], pattern)
            elif method.rowwise:
                for t in targets:
                    keeps[t.name] = _row_keep(t, scores[t.name], amounts[t.name], config)
            else:
                for group in targets_by_group:
                    keeps.update(_select_group(group, scores, amounts[group[0].name], config, method.signed))

    pruned, kept = {}, {}
    for t in targets:
        keep = keeps[t.name]
        mask = t.mask
        if t.name in installed:  # a calibration method installed it while its forward pass ran
            kept[t.name] = int(torch.count_nonzero(keep))
            pruned[t.name] = installed[t.name]
            continue
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


def _checked_scores(method: Method, scores, targets: Sequence[Target], config: PruningConfig):
    """What a method's ``score`` returned, checked: a tensor of each target's shape (structured: or one
    value per slice) by target name, no NaN — a mistake in a method is one line naming it."""
    if scores is None:
        return None
    name = method.name or type(method).__qualname__
    if not isinstance(scores, dict):
        raise PrunelabError(f"pruning method {name!r}: score() must return a dict of tensors by target name "
                            f"(or None for |w|), got {type(scores).__name__}")
    for t in targets:
        value = scores.get(t.name)
        if not isinstance(value, torch.Tensor):
            raise PrunelabError(f"pruning method {name!r}: score() gave no tensor for {t.name!r} (targets: "
                                f"{', '.join(x.name for x in targets[:4])}{' ...' if len(targets) > 4 else ''})")
        per_slice = config.structure == "structured" and value.dim() == 1 and \
            value.numel() == t.shape[config.dim % len(t.shape)]
        if tuple(value.shape) != tuple(t.shape) and not per_slice:
            raise PrunelabError(f"pruning method {name!r}: scores of {t.name!r} have shape {tuple(value.shape)}, the "
                                f"weight {tuple(t.shape)}")
        if value.is_floating_point() and bool(torch.isnan(value).any()):
            raise PrunelabError(f"pruning method {name!r}: scores of {t.name!r} contain NaN")
    return scores


def _check_needs(method: Method, context: Context) -> None:
    name = method.name or type(method).__qualname__
    if "batch" in method.needs and context.batch is None:
        raise PrunelabError(f"{name} pruning needs a batch: prune(model, ..., batch=(inputs, labels))")
    if "batch" in method.needs and not (isinstance(context.batch, (tuple, list)) and len(context.batch) == 2
                                        and all(isinstance(t, torch.Tensor) for t in context.batch)):
        raise PrunelabError(f"{name} pruning needs a batch as (inputs, labels), got {type(context.batch).__name__}")
    if "calibration" in method.needs and context.calibration is None:
        raise PrunelabError(f"{name} pruning needs calibration data: prune(model, ..., calibration=inputs), or "
                            "calibration = { samples = 128 } in a study")
    if "input_shape" in method.needs and context.input_shape is None:
        raise PrunelabError(f"{name} pruning needs input_shape (the model's input without the batch dimension)")


# ---------------------------------------------------------------- N:M patterns and per-row selection


def _nm_rows(name: str, values: torch.Tensor, m: int) -> torch.Tensor:
    """``values`` (the weight's shape) as rows whose consecutive columns are the pattern's groups: a
    Linear weight's input features; a conv weight's input channels at each kernel position (the
    layout sparse tensor cores read)."""
    if values.dim() == 2:
        rows = values
    elif values.dim() > 2:
        rows = values.movedim(1, -1).reshape(values.shape[0], -1)
    else:
        raise PrunelabError(f"{name}: an N:M pattern needs a weight with input features, got shape {tuple(values.shape)}")
    if values.shape[1] % m:
        raise PrunelabError(f"{name}: {values.shape[1]} input {'features' if values.dim() == 2 else 'channels'} are "
                            f"not a multiple of {m}, so the {m}-wide groups of the pattern do not fit (leave the layer "
                            "out with exclude)")
    return rows


def _from_nm_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 2:
        return rows.reshape(shape)
    moved = (shape[0], *shape[2:], shape[1])
    return rows.reshape(moved).movedim(-1, 1).contiguous()


def check_pattern_fits(targets: Sequence[Target], pattern: str | None) -> None:
    """Every target's grouped dimension is a multiple of M (one line naming every layer that is not)."""
    if pattern is None:
        return
    m = parse_pattern(pattern)[1]
    misfits = [t for t in targets if len(t.shape) < 2 or t.shape[1] % m]
    if misfits:
        names = ", ".join(f"{t.name} ({t.shape[1] if len(t.shape) > 1 else 0} inputs)" for t in misfits)
        modules = ", ".join(f'"{t.module_name}"' for t in misfits)
        raise PrunelabError(f"pattern {pattern}: the input features (a conv's input channels) of {names} are not a "
                            f"multiple of {m}, so its {m}-wide groups do not fit; leave them out with "
                            f"exclude = [{modules}]")


def nm_keep_for_scores(name: str, scores: torch.Tensor, pattern: tuple[int, int]) -> torch.Tensor:
    """The N:M keep mask of a tensor of ``scores`` (its shape: a weight's), for ``name`` in errors."""
    from .calibrated import nm_mask

    n, m = pattern
    return _from_nm_rows(nm_mask(_nm_rows(name, scores, m), n, m), scores.shape)


def _nm_keep(t: Target, scores: torch.Tensor | None, pattern: tuple[int, int]) -> torch.Tensor:
    from .calibrated import nm_mask

    n, m = pattern
    values = t.original.detach().abs() if scores is None else scores
    eligible = None if t.mask is None else _nm_rows(t.name, t.mask != 0, m)
    keep = nm_mask(_nm_rows(t.name, values, m), n, m, eligible=eligible)
    return _from_nm_rows(keep, t.shape)


def _row_keep(t: Target, scores: torch.Tensor, amount, config: PruningConfig) -> torch.Tensor:
    """Per-output-row selection (Wanda's comparison group): every row prunes the same fraction of
    its remaining entries."""
    from .calibrated import row_mask

    eligible = None if t.mask is None else (t.mask != 0).reshape(t.shape[0], -1)
    fraction = _row_fraction(t, amount, config)
    keep = row_mask(scores.reshape(t.shape[0], -1), fraction, eligible)
    return keep.reshape(t.shape)


def _row_fraction(t: Target, amount, config: PruningConfig) -> float:
    """The fraction of each row's remaining entries to prune for ``amount`` (or a target sparsity)."""
    if isinstance(amount, int) and config.target is None:
        raise PrunelabError(f"{t.name}: a method that compares within output rows takes a fraction, not a count "
                            f"({amount})")
    if config.target is None:
        return float(amount)
    total = t.numel()
    eligible = total if t.mask is None else int(torch.count_nonzero(t.mask))
    to_prune = round(float(amount) * total) - (total - eligible)
    if to_prune < 0:
        raise PrunelabError(f"{t.name}: target sparsity {amount} is below the current sparsity "
                            f"{(total - eligible) / total:.4f}")
    return to_prune / eligible if eligible else 0.0


# ---------------------------------------------------------------- methods that read calibration data


def _prune_calibrated(model: nn.Module, targets: list[Target], method: Method, config: PruningConfig, amounts: dict,
                      pattern, context: Context) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """One forward pass over the calibration inputs; just before each selected layer runs, its inputs
    (from the layers before it, already pruned) are summarised, the layer is pruned — and, for a
    method that reconstructs, its kept weights updated — and the pass goes on through the pruned
    layer. Returns each target's keep mask (installed) and how many entries it removed."""
    from .calibrated import InputStatistics

    if len({id(t.module) for t in targets}) != len(targets):
        raise PrunelabError("a calibration method prunes one weight per module")
    by_module = {id(t.module): t for t in targets}
    keeps: dict[str, torch.Tensor] = {}
    removed: dict[str, int] = {}

    def before_layer(module, args):
        t = by_module.get(id(module))
        if t is None or t.name in keeps:
            return  # a module run twice in one pass keeps the mask of its first visit
        statistics = InputStatistics(hessian=method.hessian)
        statistics.update(module, args[0].detach())
        keep, updated = _calibrated_keep(t, method, statistics, amounts[t.name], config, pattern, context)
        count = (keep.numel() if t.mask is None else int(torch.count_nonzero(t.mask))) - int(torch.count_nonzero(keep))
        with torch.no_grad():
            if updated is not None:
                t.original.copy_(torch.where(keep, updated, torch.zeros_like(updated)))
        torch_prune.custom_from_mask(module, t.param, keep)
        removed[t.name] = count
        keeps[t.name] = keep

    handles = [t.module.register_forward_pre_hook(before_layer) for t in targets]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(context.calibration)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    missing = [t.name for t in targets if t.name not in keeps]
    if missing:
        raise PrunelabError(f"the calibration pass never ran {', '.join(missing[:3])}: a calibration method prunes the "
                            "layers a forward pass uses")
    return keeps, removed


def _calibrated_keep(t: Target, method: Method, statistics, amount, config: PruningConfig, pattern,
                     context: Context) -> tuple[torch.Tensor, torch.Tensor | None]:
    eligible = None if t.mask is None else t.mask != 0
    if pattern is None:
        fraction = _row_fraction(t, amount, config)
        remaining = t.numel() if eligible is None else int(torch.count_nonzero(eligible))
        keep_fraction = remaining * (1.0 - fraction) / t.numel()
    else:
        keep_fraction = None
    chosen = method.prune_layer(t, statistics, keep_fraction, pattern, eligible, context)
    if chosen is not None:
        keep, updated = chosen
        return keep & eligible if eligible is not None else keep, updated
    scores = method.score_layer(t, statistics, context)
    if pattern is not None:
        return _nm_keep(t, scores, pattern), None
    if method.rowwise:
        return _row_keep(t, scores, amount, config), None
    return _select_group([t], {t.name: scores}, amount, config, method.signed)[t.name], None


def _groups(targets: Sequence[Target], overrides: dict, scope: str) -> list[list[Target]]:
    if scope == "layer":
        return [[t] for t in targets]
    pooled = [t for t in targets if t.name not in overrides]
    alone = [[t] for t in targets if t.name in overrides]
    return ([pooled] if pooled else []) + alone


def _select_group(group: list[Target], scores, amount, config: PruningConfig,
                  signed: bool = False) -> dict[str, torch.Tensor]:
    if signed and scores is not None:  # the radix selection orders non-negative floats: shift by the group's minimum
        finite = [scores[t.name][torch.isfinite(scores[t.name])] for t in group]
        low = min((float(f.min()) for f in finite if f.numel()), default=0.0)
        scores = {t.name: torch.where(torch.isfinite(scores[t.name]), scores[t.name].double() - low,
                                      torch.zeros((), dtype=torch.float64)).float() for t in group}
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


