"""Pruning with calibration data: Wanda, SparseGPT, N:M masks and GraSP.

These methods look at what a layer actually receives. A few batches of
calibration inputs are pushed through the model; for every pruned layer the
inputs are turned into a matrix ``X`` of shape (samples, cols) whose columns
line up with the columns of the layer's weight matrix, and two statistics are
accumulated from it (:class:`InputStatistics`):

- the per-column sum of squares, whose square root ``‖X_j‖₂`` is what Wanda
  multiplies ``|W_ij|`` by (Sun et al., "A Simple and Effective Pruning
  Approach for Large Language Models", arXiv 2306.11695);
- the Gram matrix ``H = XᵀX = Σ xᵢ xᵢᵀ`` (cols × cols), the Hessian of the
  layer-wise reconstruction error ``‖(W − Ŵ) Xᵀ‖²_F`` up to a factor 2, which
  SparseGPT uses to choose the mask and to update the surviving weights
  (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
  Pruned in One-Shot", arXiv 2301.00774).

Conventions used throughout:

- A weight is a 2-D matrix of shape (rows, cols) = (out_features,
  in_features) for ``nn.Linear``; a ConvNd weight (out, in, *kernel) is
  ``W.reshape(out, -1)``, columns ordered (in, k1, k2, ...) row-major — the
  column order of ``torch.nn.functional.unfold`` patches for Conv2d
  (:func:`as_matrix`, :func:`from_matrix`, :func:`input_matrix`).
- Masks are bool tensors, True = keep. Scores: higher = keep.
- ``eligible`` (bool, same shape as the weight matrix; True = may be pruned)
  marks the entries not pruned yet. Entries that are not eligible are already
  pruned and stay pruned in every mask these functions return.
- Nothing here touches the global random number generator; every function is
  deterministic on the CPU (same inputs, bitwise the same outputs).

GraSP (Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by
Preserving Gradient Flow", arXiv 2002.07376) needs no layer inputs but a
Hessian-gradient product of the whole model's loss; it lives here because it
is, like the others, a score computed from a calibration batch
(:func:`grasp_scores`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import PrunelabError
from ..tasks.evaluation import task_loss
from .scores import gradients_of
from .targets import Target

__all__ = [
    "InputStatistics", "as_matrix", "from_matrix", "grasp_scores", "input_matrix", "nm_mask", "obs_exact",
    "observe", "reconstruction_error", "row_mask", "sparsegpt", "wanda_scores",
]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ROW_CHUNK = 1 << 14  # rows of X multiplied at a time by InputStatistics.update (bounded temporaries)


# ----------------------------------------------------------------- layout


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as a (rows, cols) matrix: ``weight.reshape(out, -1)``.

    For a Linear weight this is the weight itself; for a ConvNd weight (out,
    in, *kernel) the columns are ordered (in, k1, k2, ...) row-major, the
    order of :func:`input_matrix`'s columns. A view where torch can make one.
    """
    if weight.dim() < 2:
        raise PrunelabError(f"a weight matrix needs at least 2 dimensions, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


def from_matrix(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Undo :func:`as_matrix`: the (rows, cols) ``matrix`` in the weight's ``shape``."""
    shape = torch.Size(shape)
    if matrix.dim() != 2 or matrix.shape[0] != shape[0] or matrix.numel() != shape.numel():
        raise PrunelabError(f"a matrix of shape {tuple(matrix.shape)} cannot be a weight of shape {tuple(shape)}")
    return matrix.reshape(shape)


def input_matrix(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as a (samples, cols) matrix aligned with :func:`as_matrix`'s columns.

    So that ``input_matrix(m, x) @ as_matrix(m.weight).T`` is the layer's
    output without bias, one row per output position:

    - ``nn.Linear``: ``x.reshape(-1, in_features)``; leading dimensions
      (batch, tokens, ...) all become samples.
    - ``nn.Conv1d/2d/3d``: every patch the kernel sees (the module's
      kernel_size, stride, padding — including ``"same"``/``"valid"`` and a
      non-zero ``padding_mode`` — and dilation) is a row, rows ordered (batch,
      output position row-major); for Conv2d these are the columns of
      ``F.unfold`` transposed. Grouped convolutions are refused: their weight
      is not one matrix over all input channels.

    An unbatched convolution input (C, *spatial) is read as a batch of one.
    """
    if isinstance(module, nn.Linear):
        if x.shape[-1] != module.in_features:
            raise PrunelabError(f"input of shape {tuple(x.shape)} does not fit {module} (last dim must be {module.in_features})")
        return x.reshape(-1, module.in_features)
    if isinstance(module, _CONV_TYPES):
        return _conv_patches(module, x)
    raise PrunelabError(f"calibrated pruning supports Linear and Conv1d/2d/3d layers, not {type(module).__name__}")


def _conv_patches(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    nd = len(conv.kernel_size)
    if conv.groups != 1:
        raise PrunelabError(f"{conv} has groups={conv.groups}: calibrated pruning needs groups=1 (one weight matrix over all input channels)")
    if x.dim() == nd + 1:
        x = x.unsqueeze(0)
    if x.dim() != nd + 2 or x.shape[1] != conv.in_channels:
        raise PrunelabError(f"input of shape {tuple(x.shape)} does not fit {conv} (expected (batch, {conv.in_channels}, {nd} spatial dims))")
    pads: list[int] = []  # F.pad order: last spatial dim first, (left, right) each
    for i in reversed(range(nd)):
        k, d = conv.kernel_size[i], conv.dilation[i]
        if conv.padding == "valid":
            left = right = 0
        elif conv.padding == "same":  # torch's rule: the odd one of the total padding goes right
            total = d * (k - 1)
            left, right = total // 2, total - total // 2
        else:
            left = right = conv.padding[i]
        pads += [left, right]
    if any(pads):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = torch.nn.functional.pad(x, pads, mode=mode)
    for i in range(nd):  # each unfold turns spatial dim 2+i into output positions and appends a window dim
        span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        x = x.unfold(2 + i, span, conv.stride[i])
    x = x[(Ellipsis, *(slice(None, None, d) for d in conv.dilation))]  # keep the dilated taps only
    # (N, C, o1..ond, k1..knd) -> (N, o1..ond, C, k1..knd) -> (samples, C * prod(k))
    x = x.permute(0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))
    return x.reshape(-1, conv.in_channels * math.prod(conv.kernel_size))


# ------------------------------------------------------------- statistics


class InputStatistics:
    """Running input statistics of one layer, fed batch by batch.

    ``update(module, x)`` adds the batch's :func:`input_matrix` ``X`` to

    - ``sum_squares`` (float64, cols): Σ over samples of x², per column;
      :meth:`column_norms` is its square root, Wanda's ‖X_j‖₂;
    - with ``hessian=True``, ``gram`` (float64, cols × cols): H = XᵀX =
      Σ xᵢ xᵢᵀ, what :func:`sparsegpt`, :func:`obs_exact` and
      :func:`reconstruction_error` take as ``H``;
    - ``samples``: the number of rows of X seen (tokens or patch positions).

    The state is bounded by cols² numbers however many samples are fed; a
    batch is multiplied in float32 at most ``2**14`` rows at a time and the
    products summed in float64.

    Scaling: the references normalise by the number of samples (SparseGPT's
    H = 2/n Σ xxᵀ, Wanda's mean of squares over sequences). A positive factor
    that is the same for a whole layer changes neither Wanda's per-row
    ranking nor SparseGPT's mask or update (its damping is relative to the
    mean diagonal), so the plain sums are kept; divide by ``samples`` for the
    mean where a magnitude matters.
    """

    def __init__(self, *, hessian: bool = False) -> None:
        self.hessian = hessian
        self.sum_squares: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self.samples = 0

    def update(self, module: nn.Module, x: torch.Tensor) -> None:
        """Add one batch of ``module``'s inputs ``x``."""
        X = input_matrix(module, x.detach())
        cols = X.shape[1]
        if self.sum_squares is None:
            self.sum_squares = torch.zeros(cols, dtype=torch.float64, device=X.device)
            if self.hessian:
                self.gram = torch.zeros(cols, cols, dtype=torch.float64, device=X.device)
        elif self.sum_squares.numel() != cols:
            raise PrunelabError(f"input with {cols} columns does not match the {self.sum_squares.numel()} columns seen before")
        for start in range(0, X.shape[0], _ROW_CHUNK):
            # each chunk in float32 (BLAS speed, as the reference implementations accumulate), the
            # running sums in float64, so that many chunks add up without drift
            part = X[start:start + _ROW_CHUNK].to(torch.float32)
            self.sum_squares += (part * part).sum(0).to(torch.float64)  # (a float64 reduction is several times slower)
            if self.gram is not None:
                self.gram += (part.T @ part).to(torch.float64)
        self.samples += X.shape[0]

    def column_norms(self) -> torch.Tensor:
        """‖X_j‖₂ per input column (float64), Wanda's input-norm factor."""
        if self.sum_squares is None:
            raise PrunelabError("no calibration input has been seen: feed batches with update() first")
        return self.sum_squares.sqrt()

    def hessian_matrix(self) -> torch.Tensor:
        """H = Σ xᵢ xᵢᵀ (float64, cols × cols); needs ``hessian=True``."""
        if not self.hessian:
            raise PrunelabError("these statistics were made with hessian=False: no Gram matrix was accumulated")
        if self.gram is None:
            raise PrunelabError("no calibration input has been seen: feed batches with update() first")
        return self.gram


@contextlib.contextmanager
def observe(module: nn.Module, stats: InputStatistics) -> Iterator[InputStatistics]:
    """While open, every forward call of ``module`` feeds its input to ``stats``.

    A forward pre-hook, removed on exit (also on an error)::

        stats = InputStatistics(hessian=True)
        with observe(layer, stats), torch.no_grad():
            for x, _ in batches:
                model(x)
    """
    handle = module.register_forward_pre_hook(lambda mod, args: stats.update(mod, args[0]))
    try:
        yield stats
    finally:
        handle.remove()


# ------------------------------------------------------------------ masks


def wanda_scores(W2d: torch.Tensor, column_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's importance S_ij = |W_ij| · ‖X_j‖₂ (arXiv 2306.11695, eq. 1).

    A weight matters when it is large *and* its input is large: on language
    models a few input features have magnitudes 100x the rest, which magnitude
    pruning ignores. Same shape and dtype as ``W2d``; compare it within each
    output row (:func:`row_mask`) or within N:M groups (:func:`nm_mask`).
    """
    if W2d.dim() != 2 or column_norms.dim() != 1 or column_norms.numel() != W2d.shape[1]:
        raise PrunelabError(f"{column_norms.numel()} column norms do not fit a weight matrix of shape {tuple(W2d.shape)}")
    return W2d.detach().abs() * column_norms.detach().to(W2d.dtype).unsqueeze(0)


def _check_scores(scores: torch.Tensor, eligible: torch.Tensor | None) -> torch.Tensor:
    if scores.dim() != 2:
        raise PrunelabError(f"scores must be a 2-D matrix, got shape {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise PrunelabError("scores contain NaN")
    if eligible is None:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if eligible.shape != scores.shape:
        raise PrunelabError(f"eligible has shape {tuple(eligible.shape)}, scores {tuple(scores.shape)}")
    return eligible if eligible.dtype == torch.bool else eligible != 0


def _order(scores: torch.Tensor, eligible: torch.Tensor, descending: bool) -> torch.Tensor:
    """Per-row (last dim) order: eligible entries first, by score, ties by lower index first."""
    order = torch.sort(scores, dim=-1, descending=descending, stable=True).indices
    if bool(eligible.all()):  # nothing pruned before (a first prune): one sort is the order
        return order
    by_eligibility = torch.sort((~eligible.gather(-1, order)).to(torch.uint8), dim=-1, stable=True).indices
    return order.gather(-1, by_eligibility)


def row_mask(scores2d: torch.Tensor, sparsity: float, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Wanda's per-output comparison group: in every row prune the lowest scores.

    Row r has e_r eligible entries (all ``cols`` without ``eligible``);
    ``round(sparsity · e_r)`` of them, the lowest-scoring, are pruned —
    Python's/torch's round, half to even (0.5 · 5 → 2, 0.5 · 7 → 4), the
    rounding torch's pruning uses for its amounts; it also absorbs float
    error such as 0.29 · 100 = 28.999…, which a floor (the Wanda code's
    ``int(cols * sparsity)``) would turn into 28. So ``sparsity`` is the
    fraction of the *remaining* entries of each row. Already-pruned entries
    stay pruned. Ties: the lower column index is pruned first (a stable sort).

    Wanda (arXiv 2306.11695, section 3) shows that comparing weights per
    output rather than per layer matters for LLMs; the comparison group is
    the row of the (out, in) matrix.
    """
    eligible = _check_scores(scores2d, eligible)
    if not 0.0 <= float(sparsity) <= 1.0:
        raise PrunelabError(f"sparsity must be in [0, 1], got {sparsity}")
    counts = eligible.sum(1, dtype=torch.float64)
    k = torch.round(float(sparsity) * counts).to(torch.int64)
    if bool(eligible.all()):
        return _lowest_per_row(scores2d, k)
    order = _order(scores2d, eligible, descending=False)
    rank = torch.arange(scores2d.shape[1], device=scores2d.device).unsqueeze(0)
    prune_sorted = rank < k.unsqueeze(1)
    prune = torch.zeros_like(eligible).scatter_(1, order, prune_sorted)
    return eligible & ~prune


def _lowest_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The keep mask pruning the ``k[r]`` lowest scores of every row r, ties at the lower column first —
    what the stable sort gives, found with one k-th value per row (a selection, not a sort)."""
    keep = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    for value in k.unique().tolist():  # rows sharing a count are selected together (one group when dense)
        if value == 0:
            continue
        rows = (k == value).nonzero().squeeze(1)
        part = scores if len(rows) == len(k) else scores[rows]
        kth = part.kthvalue(value, dim=1, keepdim=True).values
        less, equal = part < kth, part == kth
        ties_to_prune = value - less.sum(1, keepdim=True)
        chosen = ~(less | (equal & (equal.cumsum(1) <= ties_to_prune)))
        if len(rows) == len(k):
            keep = chosen
        else:
            keep[rows] = chosen
    return keep


def nm_mask(scores2d: torch.Tensor, n: int, m: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """N:M semi-structured mask: in every group of ``m`` consecutive columns of a row keep ``n``.

    Groups are columns [0, m), [m, 2m), ... of each row (the input dimension,
    as the sparse tensor cores of NVIDIA Ampere want for 2:4; Mishra et al.
    2021, used by Wanda and SparseGPT). In each group the ``n`` highest scores
    are kept; ties: the lower column index is kept first. With ``eligible``,
    already-pruned entries stay pruned and the ``n`` are chosen among the
    eligible ones; a group with fewer than ``n`` eligible entries keeps just
    those, so the pattern there has fewer than ``n`` non-zeros (still a valid
    N:M pattern for hardware, which needs *at most* n).
    """
    eligible = _check_scores(scores2d, eligible)
    rows, cols = scores2d.shape
    if not (isinstance(n, int) and isinstance(m, int)) or not 1 <= n <= m:
        raise PrunelabError(f"N:M needs integers 1 <= n <= m, got n={n}, m={m}")
    if cols % m:
        raise PrunelabError(f"a weight matrix of shape {(rows, cols)} has {cols} columns, not a multiple of m={m}: no {n}:{m} pattern fits")
    grouped = scores2d.reshape(rows, cols // m, m)
    ok = eligible.reshape(rows, cols // m, m)
    order = _order(grouped, ok, descending=True)
    keep_sorted = (torch.arange(m, device=scores2d.device) < n).expand(rows, cols // m, m)
    keep = torch.zeros_like(ok).scatter_(2, order, keep_sorted)
    return (keep & ok).reshape(rows, cols)


def _lowest_in_block(scores: torch.Tensor, k: int, forced: torch.Tensor | None) -> torch.Tensor:
    """Bool 'prune' for a block: the forced entries, then the lowest scores until k are pruned.

    Ties: lower flat (row-major) index first.
    """
    flat = scores.reshape(-1)
    prune = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    if forced is not None:
        prune |= forced.reshape(-1)
    extra = k - int(prune.sum())
    if extra > 0:
        order = torch.sort(flat, stable=True).indices
        order = order[~prune[order]]  # the forced entries are pruned already
        prune[order[:extra]] = True
    return prune.reshape(scores.shape)


# -------------------------------------------------------------- SparseGPT


def _dampened(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    if percdamp < 0:
        raise PrunelabError(f"percdamp must be >= 0, got {percdamp}")
    if percdamp:
        H = H + percdamp * torch.mean(torch.diagonal(H)) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


def sparsegpt(
    W2d: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    eligible: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (arXiv 2301.00774, Algorithm 1): choose a mask and update the kept weights.

    Minimises the layer's reconstruction error ‖(W − Ŵ) Xᵀ‖² approximately, in
    one pass over the columns, following the authors' reference code
    (``SparseGPT.fasterprune`` in github.com/IST-DASLab/sparsegpt):

    1. *Dead inputs*: columns with diag(H) = 0 never see a non-zero input;
       their weights are set to 0 and diag(H) to 1 there (so H stays
       invertible; the error is unchanged).
    2. *Dampening*: λ = ``percdamp`` · mean(diag H) is added to the diagonal.
    3. ``Hinv`` = the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), computed as
       ``cholesky(cholesky_inverse(cholesky(H)), upper=True)``. Row i of U,
       divided by U_ii, is row i of the inverse of H restricted to columns
       i.. — what the OBS update for column i needs once columns < i are
       fixed — so one factorisation replaces cols inverses.
    4. Columns are processed left to right in blocks of ``blocksize``. The
       mask is chosen adaptively from the *current* (already updated) weights
       by the OBS saliency w² / U_jj²:

       - unstructured (``sparsity``): per block, over all the block's entries
         (not per row): ``round(sparsity · rows · block_cols)`` entries are
         pruned, the forced ones (not ``eligible``) counted among them, the
         rest the lowest saliencies (ties: lower row-major index first). If
         more entries are forced than that, only the forced ones are pruned.
         The fraction is of the whole block, not of its remaining entries.
       - N:M (``n``, ``m``): at the first column of every group of ``m``,
         :func:`nm_mask` on the group's saliencies keeps the ``n`` highest
         (``n`` = the number *kept*; the reference's ``prunen`` is the number
         pruned, m − n). Forced entries stay pruned.
       - fixed (``mask``, bool, True = keep): no selection; entries not in
         ``mask`` or not ``eligible`` are pruned. For checking the update.

    5. For each column i of the block: q = w where kept, 0 where pruned;
       err = (w − q) / U_ii; the block's columns i.. get −= err ⊗ U[i, i:]
       (the OBS update spreading the pruned weights' error onto the columns
       not processed yet); after the block, the columns to its right get
       −= Err @ U[block, right] at once (the lazy batch update of section
       3.4, mathematically the same as doing it column by column).

    Returns ``(keep_mask, W_new)``: W_new in ``W2d``'s dtype with pruned
    entries exactly 0 (a kept weight of a dead column is 0 as well).
    Computed in ``dtype`` (float32 like the reference; H, accumulated in
    float64 by :class:`InputStatistics`, is cast to it before dampening).
    Pass ``dtype=torch.float64`` for checks. H's scale does not matter.

    Deviations from the reference code: (a) it prunes every entry whose
    saliency is <= the value at index ``int(numel · sparsity)`` of the sorted
    block, i.e. one entry more than ``int(numel · sparsity)`` per block, and
    all ties; here exactly ``round(sparsity · numel)`` are pruned per block.
    (b) ``blocksize`` must be a multiple of ``m`` in N:M mode (the reference
    silently truncates a group that crosses a block edge). (c) ``eligible``
    and ``mask`` are additions. Greedy, not exact: for a given mask a kept
    weight is never changed to compensate a pruned weight to its *left*, so
    the result equals the least-squares optimum (:func:`obs_exact`) only when
    in every row all pruned columns come before all kept ones. With a mask it
    did not choose itself (``mask=``, e.g. random) the greedy update can even
    end worse than no update at all, because weights it moved are zeroed
    later (seen in tests/test_calibrated.py); with its own adaptive mask it
    stayed within a small factor of the exact optimum for that mask there,
    far below Wanda's and magnitude's errors (docs/pruning.md).
    """
    if W2d.dim() != 2:
        raise PrunelabError(f"W2d must be a 2-D matrix, got shape {tuple(W2d.shape)}")
    rows, cols = W2d.shape
    if H.shape != (cols, cols):
        raise PrunelabError(f"H has shape {tuple(H.shape)}; a weight matrix of shape {(rows, cols)} needs ({cols}, {cols})")
    if blocksize < 1:
        raise PrunelabError(f"blocksize must be >= 1, got {blocksize}")
    modes = [mask is not None, sparsity is not None, bool(n or m)]
    if sum(modes) != 1:
        raise PrunelabError("sparsegpt needs exactly one of: sparsity=, n= and m= (N:M), mask=")
    if sparsity is not None and not 0.0 <= float(sparsity) <= 1.0:
        raise PrunelabError(f"sparsity must be in [0, 1], got {sparsity}")
    nm = bool(n or m)
    if nm:
        if not 1 <= n <= m:
            raise PrunelabError(f"N:M needs integers 1 <= n <= m, got n={n}, m={m}")
        if cols % m:
            raise PrunelabError(f"a weight matrix of shape {(rows, cols)} has {cols} columns, not a multiple of m={m}: no {n}:{m} pattern fits")
        if blocksize % m:
            raise PrunelabError(f"blocksize {blocksize} must be a multiple of m={m} so that no N:M group crosses a block")
    forced = None
    if eligible is not None:
        if eligible.shape != W2d.shape:
            raise PrunelabError(f"eligible has shape {tuple(eligible.shape)}, the weight {tuple(W2d.shape)}")
        forced = ~(eligible if eligible.dtype == torch.bool else eligible != 0)
    if mask is not None:
        if mask.shape != W2d.shape:
            raise PrunelabError(f"mask has shape {tuple(mask.shape)}, the weight {tuple(W2d.shape)}")
        fixed_prune = ~(mask if mask.dtype == torch.bool else mask != 0)
        if forced is not None:
            fixed_prune = fixed_prune | forced

    W = W2d.detach().to(dtype).clone()
    H = H.detach().to(dtype).clone()
    if not (bool(torch.isfinite(H).all()) and bool(torch.isfinite(W).all())):
        raise PrunelabError("the weight or H holds NaN or infinity")
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H = _dampened(H, percdamp)
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except torch.linalg.LinAlgError as exc:
        raise PrunelabError(f"H is not positive definite even after dampening ({exc}); raise percdamp (now {percdamp}) or use more calibration samples") from None

    prune = torch.zeros(rows, cols, dtype=torch.bool, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diagonal(Hinv1)
        forced1 = None if forced is None else forced[:, i1:i2]
        if mask is not None:
            prune1 = fixed_prune[:, i1:i2].clone()
        elif not nm:
            saliency = W1 ** 2 / d1.unsqueeze(0) ** 2
            prune1 = _lowest_in_block(saliency, round(float(sparsity) * saliency.numel()), forced1)
        else:
            prune1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            if nm and i % m == 0:
                saliency = W1[:, i:i + m] ** 2 / d1[i:i + m].unsqueeze(0) ** 2
                prune1[:, i:i + m] = ~nm_mask(saliency, n, m, None if forced1 is None else ~forced1[:, i:i + m])
            w = W1[:, i]
            q = w.masked_fill(prune1[:, i], 0)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        prune[:, i1:i2] = prune1
    return ~prune, W.to(W2d.dtype)


def obs_exact(W2d: torch.Tensor, H: torch.Tensor, mask2d: torch.Tensor, *, percdamp: float = 0.0) -> torch.Tensor:
    """The least-squares optimal weights for a given mask (the exact OBS solution).

    For each row r, Ŵ_r is 0 off the mask and on the kept set K minimises
    ‖(W_r − Ŵ_r) Xᵀ‖² = (W_r − Ŵ_r) H (W_r − Ŵ_r)ᵀ, i.e. solves
    H_KK ŵ_K = H_K: W_rᵀ (the normal equations; Hassibi & Stork's Optimal
    Brain Surgeon with all of a row's removals at once). ``percdamp`` adds
    percdamp · mean(diag H) to the diagonal first, as :func:`sparsegpt` does
    (default none). Solved in float64 per row (rows sharing a mask are solved
    together); returned in ``W2d``'s dtype. The reference answer that
    SparseGPT's greedy update approximates; cost grows like rows · cols³, so
    for tests and small layers.
    """
    if W2d.dim() != 2 or H.shape != (W2d.shape[1], W2d.shape[1]) or mask2d.shape != W2d.shape:
        raise PrunelabError(f"shapes do not fit: W {tuple(W2d.shape)}, H {tuple(H.shape)}, mask {tuple(mask2d.shape)}")
    W = W2d.detach().to(torch.float64)
    Hd = _dampened(H.detach().to(torch.float64), percdamp)
    keep = mask2d if mask2d.dtype == torch.bool else mask2d != 0
    out = torch.zeros_like(W)
    patterns, which = torch.unique(keep, dim=0, return_inverse=True)
    for p in range(patterns.shape[0]):
        K = patterns[p]
        rows = (which == p).nonzero().squeeze(1)
        if not bool(K.any()):
            continue
        rhs = Hd[K] @ W[rows].T  # (|K|, len(rows))
        try:
            solution = torch.linalg.solve(Hd[K][:, K], rhs)
        except torch.linalg.LinAlgError as exc:
            raise PrunelabError(f"H restricted to the kept columns is singular ({exc}); pass percdamp > 0") from None
        out[rows.unsqueeze(1), K.nonzero().squeeze(1).unsqueeze(0)] = solution.T
    return out.to(W2d.dtype)


def reconstruction_error(W2d: torch.Tensor, W_new: torch.Tensor, H: torch.Tensor) -> float:
    """trace((W − Ŵ) H (W − Ŵ)ᵀ), in float64.

    With H = Σ xᵢ xᵢᵀ = XᵀX from :class:`InputStatistics` this is
    ‖X (W − Ŵ)ᵀ‖²_F, the summed squared change of the layer's outputs over
    the calibration samples — the objective SparseGPT and OBS minimise.
    """
    if W2d.shape != W_new.shape or W2d.dim() != 2 or H.shape != (W2d.shape[1], W2d.shape[1]):
        raise PrunelabError(f"shapes do not fit: W {tuple(W2d.shape)}, Ŵ {tuple(W_new.shape)}, H {tuple(H.shape)}")
    D = W2d.detach().to(torch.float64) - W_new.detach().to(torch.float64)
    return float(((D @ H.detach().to(torch.float64)) * D).sum())


# ------------------------------------------------------------------ GraSP


def grasp_scores(model: nn.Module, targets: Sequence[Target], batch: tuple[torch.Tensor, torch.Tensor], *,
                 temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """GraSP keep-scores θ ⊙ Hg on one batch (Wang, Zhang & Grosse, arXiv 2002.07376).

    GraSP keeps the weights whose removal would least reduce the gradient
    norm after pruning, i.e. preserves gradient flow at initialisation. With
    g = ∇L(θ) and H the Hessian of L over the target weights, the paper
    scores S(−θ) = −θ ⊙ Hg (eq. 8) and *removes the highest* S. This
    function returns the **keep-score θ ⊙ Hg = −S** (higher = keep), so the
    usual rule "prune the lowest" gives GraSP's mask. The scores are
    *signed*: a negative keep-score is fine and 0 is not "pruned".

    - L = :func:`prunelab.tasks.evaluation.task_loss` (mean over the batch):
      for class labels the cross-entropy of ``model(x) / temperature``, the
      paper's code's T = 200, which flattens the softmax so that Hg is not
      dominated by a few saturated examples. For float (regression) targets
      the loss is task_loss's mean squared error of the *unscaled* output:
      the temperature belongs to the softmax, and GraSP was defined for
      classification only.
    - Hg by double backprop: g = ∇L with ``create_graph=True``, then
      Hg = ∇(g · stop_grad(g)). Only the targets are θ (biases and batch
      norm are constants), as the reference restricts H and g to the conv
      and linear weights.
    - Weights are ``t.original``; the loss sees ``t.effective`` (masked), so
      g and Hg vanish on already-pruned entries. Those entries get the
      keep-score ``-inf``: they score as pruned and stay the lowest. (Callers
      whose selection needs non-negative scores must map the signed scores
      monotonically first.)
    - The model runs in eval mode (batch norm uses running statistics, no
      dropout), like :func:`prunelab.pruning.scores.snip_scores`; its
      train/eval mode and the targets' ``.grad`` are restored afterwards.

    Deviations from the reference code (github.com/alecwangcq/GraSP,
    ``GraSP``): it splits the batch into halves, sums the halves' gradients
    and Hessian-vector products (a positive factor 4 on the scores), and
    re-initialises linear layers with Xavier before scoring; here one mean
    loss over the whole batch and the model's own weights are used. Its
    scores are also divided by |ΣS| before the global threshold, a positive
    factor that does not change the ranking.
    """
    x, y = batch
    if temperature <= 0:
        raise PrunelabError(f"temperature must be > 0, got {temperature}")
    originals = [t.original for t in targets]
    with gradients_of(model, originals):
        out = model(x)
        if not y.is_floating_point():
            out = out / temperature
        loss = task_loss(out, y)
        g = torch.autograd.grad(loss, originals, create_graph=True, allow_unused=True)
        used = [(i, gi) for i, gi in enumerate(g) if gi is not None and gi.requires_grad]
        hg: list[torch.Tensor | None] = [None] * len(originals)
        if used:
            z = sum((gi * gi.detach()).sum() for _, gi in used)
            hg = list(torch.autograd.grad(z, originals, allow_unused=True))
    scores = {}
    for t, h in zip(targets, hg):
        h = torch.zeros_like(t.original) if h is None else h
        score = (t.effective * h).detach()
        if t.is_pruned:
            score = score.masked_fill(t.mask.detach() == 0, float("-inf"))
        scores[t.name] = score
    return scores
