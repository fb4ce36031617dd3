"""Choose the k lowest-scoring entries across many tensors, fast and lean.

torch's ``global_unstructured`` concatenates every score into one vector and
calls ``topk`` on it; for 50 M parameters that is several copies of the model
in memory. Here the k-th smallest score is found by a two-pass radix select on
the IEEE-754 bit patterns of the (non-negative) scores: for non-negative
float32 values the int32 view is ordered like the floats, so a 65,536-bucket
histogram of the high 16 bits, then of the low 16 bits inside the one bucket
that holds the k-th value, gives it exactly. Tensors are visited in chunks, so
temporaries stay at a few chunk sizes regardless of model size. Models of up to
16 M weights take a shorter path: their keys are concatenated and one
k-th value (:func:`_kth_smallest`) finds the same threshold.

Ties at the threshold are broken by flat position (tensor order, then
row-major), the order a stable sort of the concatenated scores would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

CHUNK = 1 << 22  # 4 M entries: 16 MB of float32 per temporary
_BUCKETS = 1 << 16
# Up to this many eligible scores in all, the keys are concatenated (int32: 4 bytes each, 64 MB at
# most) and one k-th value finds the threshold: the radix passes cost two 65,536-bucket histograms
# per tensor, which dominates on models of many small tensors (resnet20: 22 tensors, 0.27 M weights).
SMALL = 1 << 24
PARTITION_FROM = 1 << 16  # from this many eligible keys up, numpy's partition finds the k-th (see _kth_smallest)


@dataclass
class ScoreSource:
    """Scores of one tensor, computed chunk by chunk.

    ``values`` is flattened lazily; ``transform`` (e.g. ``torch.abs``) turns a
    chunk of it into non-negative float32 scores, so magnitude pruning never
    materialises a full |w| copy. ``eligible`` (same size, non-zero = may be
    pruned) excludes entries that are already pruned.
    """

    values: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    eligible: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.flat = self.values.detach().reshape(-1)
        self.flat_eligible = None if self.eligible is None else self.eligible.detach().reshape(-1)
        self._eligible_bool: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.flat.numel()

    def eligible_bool(self) -> torch.Tensor | None:
        """The whole eligibility as bool, made once (the small-model path only: a large model's is
        read chunk by chunk)."""
        if self.flat_eligible is not None and self._eligible_bool is None:
            e = self.flat_eligible
            self._eligible_bool = e if e.dtype == torch.bool else e != 0
        return self._eligible_bool

    def keys(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All int32 keys and the eligibility at once (the small-model path)."""
        scores = self.flat if self.transform is None else self.transform(self.flat)
        return scores.to(torch.float32).view(torch.int32), self.eligible_bool()

    def chunks(self):
        for start in range(0, len(self), CHUNK):
            stop = min(start + CHUNK, len(self))
            scores = self.flat[start:stop]
            if self.transform is not None:
                scores = self.transform(scores)
            scores = scores.to(torch.float32)
            keys = scores.view(torch.int32)
            eligible = None if self.flat_eligible is None else self.flat_eligible[start:stop] != 0
            yield start, stop, keys, eligible


def count_eligible(sources: Sequence[ScoreSource]) -> int:
    small = sum(len(s) for s in sources) <= SMALL  # then the selection needs each bool mask anyway
    total = 0
    for s in sources:
        if s.flat_eligible is None:
            total += len(s)
        else:
            total += int(torch.count_nonzero(s.eligible_bool() if small else s.flat_eligible))
    return total


def lowest_k_masks(sources: Sequence[ScoreSource], k: int) -> list[torch.Tensor]:
    """Boolean 'keep' masks (shaped like each source) pruning the k lowest eligible scores.

    Entries that are not eligible are pruned already and stay pruned.
    """
    keeps = []
    if k <= 0:
        for s in sources:
            keep = torch.ones(len(s), dtype=torch.bool) if s.flat_eligible is None else s.flat_eligible != 0
            keeps.append(keep.reshape(s.values.shape))
        return keeps
    if sum(len(s) for s in sources) <= SMALL:
        return _lowest_k_concatenated(sources, k)
    threshold, ties = _kth_key_radix(sources, k)
    for s in sources:
        keep = torch.empty(len(s), dtype=torch.bool)
        for start, stop, keys, eligible in s.chunks():
            below = keys < threshold
            if ties:
                tie_positions = torch.nonzero(keys == threshold if eligible is None else (keys == threshold) & eligible)
                if len(tie_positions):
                    chosen = tie_positions[:ties, 0]
                    below[chosen] = True
                    ties -= len(chosen)
            prune_here = below if eligible is None else below & eligible
            keep[start:stop] = ~prune_here if eligible is None else eligible & ~prune_here
        keeps.append(keep.reshape(s.values.shape))
    return keeps


def _lowest_k_concatenated(sources: Sequence[ScoreSource], k: int) -> list[torch.Tensor]:
    """The small-model path: every key in one vector, one k-th value, one comparison, split back.
    Same threshold and the same tie rule (first ties in flat order) as the radix path."""
    keys, eligible = [], []
    for s in sources:
        chunk, ok = s.keys()
        keys.append(chunk)
        eligible.append(ok)
    keys = torch.cat(keys) if len(keys) > 1 else keys[0]
    if all(e is None for e in eligible):
        ok = None
    elif len(eligible) == 1:
        ok = eligible[0]
    else:
        ok = torch.cat([torch.ones(len(s), dtype=torch.bool) if e is None else e for s, e in zip(sources, eligible)])
    # magnitudes cannot be negative (|NaN| has its sign bit clear too): only given scores are checked
    if any(s.transform is not torch.abs for s in sources) and bool((keys < 0).any()):
        raise ValueError("scores must be non-negative (and not NaN) for selection")
    # (not torch.where(ok, keys, max): kthvalue is far slower on the many equal keys of the pruned entries)
    candidates = keys if ok is None else _eligible_keys(keys, ok)
    if k > candidates.numel():
        raise ValueError(f"cannot prune {k} entries: only {candidates.numel()} are eligible")
    threshold = _kth_smallest(candidates, k)
    prune_here = keys < threshold if ok is None else (keys < threshold) & ok
    ties = k - int(torch.count_nonzero(prune_here))
    if ties:
        at = keys == threshold if ok is None else (keys == threshold) & ok
        prune_here[torch.nonzero(at)[:ties, 0]] = True
    keep = ~prune_here if ok is None else ok & ~prune_here
    return [part.reshape(s.values.shape) for part, s in zip(torch.split(keep, [len(s) for s in sources]), sources)]


def _eligible_keys(keys: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """``keys[ok]``. On the CPU through numpy's ``compress``: torch's ``masked_select`` takes several
    times as long on a single thread (docs/benchmarks/study_overhead.md)."""
    if keys.device.type != "cpu":
        return torch.masked_select(keys, ok)
    return torch.from_numpy(np.compress(ok.numpy(), keys.numpy()))


def _kth_smallest(candidates: torch.Tensor, k: int) -> int:
    """The k-th smallest (1-based) of int32 keys. From 65,536 keys up, on the CPU, numpy's introselect:
    torch's ``kthvalue`` takes longer there (docs/benchmarks/global_prune.md); below it, torch's call
    costs less to make."""
    if candidates.device.type == "cpu" and candidates.numel() >= PARTITION_FROM:
        return int(np.partition(candidates.numpy(), k - 1)[k - 1])
    return int(torch.kthvalue(candidates, k).values)


def _kth_key_radix(sources: Sequence[ScoreSource], k: int) -> tuple[int, int]:
    """(int32 key of the k-th smallest eligible score, how many ties at it to prune)."""
    high = torch.zeros(_BUCKETS, dtype=torch.int64)
    for s in sources:
        for _, _, keys, eligible in s.chunks():
            if bool((keys < 0).any()):
                raise ValueError("scores must be non-negative (and not NaN) for selection")
            bucket = keys >> 16
            if eligible is not None:
                bucket = bucket[eligible]
            high += torch.bincount(bucket, minlength=_BUCKETS)
    cum = torch.cumsum(high, 0)
    if k > int(cum[-1]):
        raise ValueError(f"cannot prune {k} entries: only {int(cum[-1])} are eligible")
    b = int(torch.searchsorted(cum, torch.tensor(k), right=False))
    before = int(cum[b - 1]) if b > 0 else 0

    low = torch.zeros(_BUCKETS, dtype=torch.int64)
    for s in sources:
        for _, _, keys, eligible in s.chunks():
            hit = (keys >> 16) == b
            if eligible is not None:
                hit &= eligible
            low += torch.bincount(keys[hit] & 0xFFFF, minlength=_BUCKETS)
    cum_low = torch.cumsum(low, 0)
    l = int(torch.searchsorted(cum_low, torch.tensor(k - before), right=False))
    below = before + (int(cum_low[l - 1]) if l > 0 else 0)
    return (b << 16) | l, k - below
