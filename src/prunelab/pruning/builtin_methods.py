"""prunelab's own pruning methods: one class each, registered by name (adding one touches this file).

The arithmetic of the methods that look at data lives in :mod:`.calibrated`; what is here says what
each method needs, supports and computes, in the terms of :class:`~.method.Method`.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import PrunelabError
from .method import Context, Method, register
from .scores import random_scores, snip_scores, synflow_scores
from .selection import ScoreSource, lowest_k_masks


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register("magnitude", "|w|: the smallest weights go (Han et al. 2015; Frankle & Carbin 2019)")
class Magnitude(Method):
    """|w|: the smallest weights go (structured: the slices of smallest Ln norm)."""

    def score(self, model, targets, context):
        return None  # the selection reads |w| chunk by chunk, without a copy of the model's scores


@register("random", "uniformly random masks (the random-pruning baseline)")
class Random(Method):
    """Uniformly random scores from a generator seeded by the state (never the global RNG)."""

    def score(self, model, targets, context):
        config = context.config
        if config.structure == "structured":
            g = torch.Generator().manual_seed(context.seed)
            return {t.name: torch.rand(t.shape[config.dim % len(t.shape)], generator=g) for t in targets}
        return random_scores(targets, context.seed)


@register("snip", "|g·w| on one batch: connection sensitivity at initialisation (Lee et al. 2019)")
class SNIP(Method):
    """SNIP connection sensitivity |dL/dw · w| on one batch of training data."""

    needs = frozenset({"batch"})

    def score(self, model, targets, context):
        return snip_scores(model, targets, context.batch)


class _SynFlowParams(_Params):
    iterations: int = Field(100, gt=0, le=10_000)


@register("synflow", "iterative synaptic flow, data-free (Tanaka et al. 2020)")
class SynFlow(Method):
    """Iterative SynFlow: |w · dR/dw| with R = 1ᵀ f_|θ|(1), pruned towards the final density in
    exponential steps, without data."""

    needs = frozenset({"input_shape"})
    structures = frozenset({"unstructured"})
    Params = _SynFlowParams

    def select(self, model, targets, groups, counts, context: Context):
        if getattr(model, "takes_tokens", False):  # R = 1ᵀ f(1) needs an input of ones; token ids have none
            raise PrunelabError("synflow feeds the model an input of ones and has no meaning for a language model "
                                "(token ids): use magnitude, wanda or sparsegpt")
        return synflow_select(model, targets, groups, counts, context.input_shape, self.params.iterations)


class _GraSPParams(_Params):
    temperature: float = Field(200.0, gt=0, allow_inf_nan=False)


@register("grasp", "gradient signal preservation at initialisation, one batch (Wang et al. 2020)")
class GraSP(Method):
    """GraSP: keep the weights whose removal would most reduce the gradient flow (scores θ ⊙ Hg,
    higher kept; the paper removes the largest −θ ⊙ Hg). Scores are signed."""

    needs = frozenset({"batch"})
    structures = frozenset({"unstructured"})
    signed = True
    Params = _GraSPParams

    def score(self, model, targets, context):
        from .calibrated import grasp_scores

        return grasp_scores(model, targets, context.batch, temperature=self.params.temperature)


@register("wanda", "|W|·‖X‖ per output row, from calibration data; no update (Sun et al. 2023)")
class Wanda(Method):
    """Wanda: S_ij = |W_ij| · ‖X_j‖₂ over the calibration inputs of the layer, compared within each
    output row; the kept weights are not changed."""

    needs = frozenset({"calibration"})
    structures = frozenset({"unstructured", "nm"})
    scopes = frozenset({"layer"})
    rowwise = True

    def score_layer(self, target, statistics, context):
        from .calibrated import as_matrix, from_matrix, wanda_scores

        weight = target.original.detach()
        return from_matrix(wanda_scores(as_matrix(weight), statistics.column_norms()), weight.shape)


class _SparseGPTParams(_Params):
    blocksize: int = Field(128, gt=0, le=65_536)
    percdamp: float = Field(0.01, ge=0, le=1, allow_inf_nan=False)


@register("sparsegpt", "masks by OBS saliency, kept weights reconstructed from X Xᵀ (Frantar & Alistarh 2023)")
class SparseGPT(Method):
    """SparseGPT: per layer, columns in blocks; the mask by w² / [H⁻¹]²_jj with H = 2 X Xᵀ + λI, and
    each pruned weight's error spread onto the columns not yet processed (the OBS update)."""

    needs = frozenset({"calibration"})
    structures = frozenset({"unstructured", "nm"})
    scopes = frozenset({"layer"})
    hessian = True
    Params = _SparseGPTParams

    def prune_layer(self, target, statistics, keep_fraction, pattern, eligible, context):
        from .calibrated import as_matrix, from_matrix, sparsegpt

        weight = target.original.detach()
        n, m = pattern if pattern is not None else (0, 0)
        sparsity = None if pattern is not None else 1.0 - keep_fraction
        mask, updated = sparsegpt(as_matrix(weight).float(), statistics.hessian_matrix(), sparsity=sparsity, n=n, m=m,
                                  blocksize=self.params.blocksize, percdamp=self.params.percdamp,
                                  eligible=None if eligible is None else as_matrix(eligible))
        return from_matrix(mask, weight.shape), from_matrix(updated, weight.shape).to(weight.dtype)


def synflow_select(model, targets, groups, counts, input_shape, iterations: int) -> dict[str, torch.Tensor]:
    """Iterative SynFlow: prune towards the final density in exponential steps. ``counts(group,
    eligible, total)``: how many entries the group loses in all."""
    keeps = {t.name: (torch.ones(t.shape, dtype=torch.bool) if t.mask is None else t.mask != 0) for t in targets}
    final_counts = {}
    for group in groups:
        eligible = sum(int(keeps[t.name].sum()) for t in group)
        total = sum(t.numel() for t in group)
        k = counts(group, eligible, total)
        final_counts[id(group[0])] = (eligible, eligible - k)
    n = iterations
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
