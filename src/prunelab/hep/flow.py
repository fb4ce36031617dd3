"""A conditional normalizing flow for 3-layer showers, in the spirit of CaloFlow (arXiv 2106.05285).

Two flows, as CaloFlow has them:

* the **energy flow** learns how the deposit splits, conditioned on the incident energy: nine
  numbers per shower — ``log(E_sum / E_inc)`` (E_sum: the three layers), the logit of layer 0's
  share of layers 0+1, ``log E_2``, the number of filled cells of each layer and the log of each
  layer's overflow. Writing the total as its own coordinate makes the calorimeter's 1 % response a
  one-dimensional density instead of a thin ridge between two layer energies;
* the **voxel flow** learns the 504 cells as ``log(E/MeV)``, conditioned on the incident energy
  and the energy flow's layer energies and cell counts. Of the generated cells of each layer the
  ``n`` largest are kept, ``n`` the count the energy flow drew, and rescaled to the layer energy it
  drew: the layer energies, their sum, the response and the occupancy come from the energy flow
  exactly (CaloFlow normalises the energies the same way).

**Why the counts.** Without them (``hit_counts=False``) a cell is filled when the voxel flow puts
it above :data:`CUT`, so each layer's occupancy is a sum of 72-288 soft decisions. Its mean came
out right but its spread and its rise with the incident energy did not, and the CaloChallenge's
high-level classifier told the showers apart by their sparsity (docs/hep.md). A count per layer
is one coordinate of a 9-dimensional density, which a small flow learns to the statistical floor.

Empty cells (and an empty layer 2 or overflow) are **dequantised**: while training, each zero is
drawn uniformly in ``log(E/MeV) ∈`` :data:`ZERO_ZONE`, below every deposit the simulator makes
(its smallest cell is about 1 MeV, log ≈ 0); a generated energy coordinate below :data:`CUT` is
empty. A cell count ``n`` of a layer with ``N`` cells is dequantised as ``logit((n + u)/(N + 1))``,
``u`` uniform in :data:`COUNT_JITTER` (inside the unit interval, so decoding gives back ``n``
exactly in float32).

Both flows are stacks of **rational-quadratic spline couplings** (Durkan et al., arXiv
1906.04032; the transform is zuko's): a fixed random half of the coordinates passes unchanged and,
with the condition, sets the bins of a monotonic spline per coordinate of the other half. Sampling
and density are then one pass each (a masked autoregressive flow samples in 504 passes: minutes
per 10,000 showers on a CPU), which is what CaloINN (arXiv 2312.09290) chose for the same reason.

Inputs are standardised per coordinate with a mean and spread measured once on the training
showers before the first step (:meth:`CaloFlow.fit_scaling`; the spread is widened where needed
so that every training value lands inside the splines' domain), kept as buffers: they travel
with the weights in every state and pruning leaves them alone. The training showers' range of
each coordinate is kept the same way, and a generated coordinate is clipped to it: a flow's
support is unbounded, the showers' is not, and a rare draw far in the Gaussian tail otherwise
lands where no shower ever was (docs/hep.md, "A shower flow").
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from pydantic import Field
from torch import nn

from ..errors import PrunelabError, validated
from ..tasks.models import register
from .gan import ENERGY_RANGE_GEV, GeneratorConfig, TrainingResult, condition, ordered_parameters
from .tasks import CELL_COUNTS, CELL_FEATURES

ZERO_ZONE = (-3.0, -1.0)  # log(E/MeV) an empty cell is drawn in while training
CUT = -0.5  # log(E/MeV): a generated value below it is an empty cell
COUNT_JITTER = (0.1, 0.9)  # a cell count n is dequantised to n + u, u uniform in here
MAX_LOG_MEV = 13.0  # e^13 MeV ≈ 440 GeV: no deposit of a ≤ 100 GeV shower is larger
# a standardised training value stays within ±_SPAN, inside the splines' ±bound (5), where they act: a
# rarely hit cell's spread is small, and by its spread alone its hits would sit in the identity tails
_SPAN = 4.0
_UNBOUNDED = 1e4  # the range of a coordinate before it is fitted: no clipping
_PERMUTATION_SALT = 7919  # the coupling splits are a pure function of (salt, flow, block)


class SplineCoupling(nn.Module):
    """Coordinates ``b`` go through a monotonic spline whose bins a net computes from coordinates
    ``a`` and the condition; ``a`` passes unchanged. The split is a fixed random half."""

    def __init__(self, features: int, context: int, hidden: int, bins: int, key: int, bound: float = 5.0):
        super().__init__()
        order = torch.randperm(features, generator=torch.Generator().manual_seed(_PERMUTATION_SALT + key))
        half = features // 2
        self.register_buffer("kept", order[:half].sort().values, persistent=False)
        self.register_buffer("moved", order[half:].sort().values, persistent=False)
        # [kept, moved] → original order by one gather: assigning into a copy (out[:, moved] = y) costs 50x
        # more under torch's deterministic algorithms, which training runs with
        self.register_buffer("unsplit", torch.cat([self.kept, self.moved]).argsort(), persistent=False)
        self.bins, self.bound = bins, bound
        self.net = nn.Sequential(nn.Linear(half + context, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, (features - half) * (3 * bins - 1)))
        # the identity at initialisation: a deep stack starts where the standardised data already is
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _spline(self, z: torch.Tensor, context: torch.Tensor):
        from zuko.transforms import MonotonicRQSTransform

        k = self.bins
        p = self.net(torch.cat([z[:, self.kept], context], dim=1)).reshape(len(z), len(self.moved), 3 * k - 1)
        return MonotonicRQSTransform(p[..., :k], p[..., k:2 * k], p[..., 2 * k:], bound=self.bound)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data → noise direction: (transformed z, log |det J| per row)."""
        y, ladj = self._spline(z, context).call_and_ladj(z[:, self.moved])
        return torch.cat([z[:, self.kept], y], dim=1)[:, self.unsplit], ladj.sum(dim=1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self._spline(z, context).inv(z[:, self.moved])
        return torch.cat([z[:, self.kept], x], dim=1)[:, self.unsplit]


class ConditionalFlow(nn.Module):
    """A stack of spline couplings over a standard normal."""

    def __init__(self, features: int, context: int, hidden: int, bins: int, blocks: int, key: int):
        super().__init__()
        self.features = features
        self.blocks = nn.ModuleList(SplineCoupling(features, context, hidden, bins, key * 1000 + i)
                                    for i in range(blocks))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(len(x))
        for block in self.blocks:
            x, ladj = block(x, context)
            total = total + ladj
        return total - 0.5 * (x**2).sum(dim=1) - 0.5 * self.features * math.log(2 * math.pi)

    def sample(self, context: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        z = noise
        for block in reversed(self.blocks):
            z = block.inverse(z, context)
        return z


def _log_or_zone(values: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """log(E/MeV) where E > 0, else a uniform draw in :data:`ZERO_ZONE` (drawn on the CPU: the same
    numbers on any device)."""
    low, high = ZERO_ZONE
    zone = (torch.rand(values.shape, generator=rng) * (high - low) + low).to(values.device)
    return torch.where(values > 0, torch.log(values.clamp_min(1e-30)), zone)


def _from_log(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y > CUT, torch.exp(y.clamp(max=MAX_LOG_MEV)), torch.zeros_like(y))


class CaloFlow(nn.Module):
    """The energy flow and the voxel flow of one shower model. ``forward(x)`` gives the deposited
    energy (GeV) of the shower drawn at zero noise for incident energies ``x[:, 0]`` — what
    FLOP counts and shape checks use; showers come from :func:`~prunelab.hep.generation.sample`,
    training from :class:`~prunelab.hep.flow_recipes.TrainFlow`."""

    def __init__(self, hidden: int, blocks: int, bins: int, energy_hidden: int, energy_blocks: int,
                 hit_counts: bool = True):
        super().__init__()
        self.hit_counts = hit_counts
        # energy coordinates: log total, logit share, log E_2, [a cell count per layer,] log overflow per layer;
        # the voxel flow is conditioned on all but the overflows
        self.energy_coordinates = 3 + (len(CELL_COUNTS) if hit_counts else 0) + len(CELL_COUNTS)
        self.voxel_condition = self.energy_coordinates - len(CELL_COUNTS)
        self.energy_flow = ConditionalFlow(self.energy_coordinates, 1, energy_hidden, bins, energy_blocks, key=1)
        self.voxel_flow = ConditionalFlow(sum(CELL_COUNTS), 1 + self.voxel_condition, hidden, bins, blocks, key=2)
        for name, size in (("energy", self.energy_coordinates), ("voxel", sum(CELL_COUNTS))):
            self.register_buffer(f"{name}_shift", torch.zeros(size))
            self.register_buffer(f"{name}_scale", torch.ones(size))
            # the training showers' range per coordinate (before standardising): generated values are clipped to it
            self.register_buffer(f"{name}_low", torch.full((size,), -_UNBOUNDED))
            self.register_buffer(f"{name}_high", torch.full((size,), _UNBOUNDED))
        self.register_buffer("scaled", torch.zeros(()))

    # ------------------------------------------------------------------ coordinates

    def raw_coordinates(self, cells: torch.Tensor, overflow: torch.Tensor, energy_gev: torch.Tensor,
                        rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The energy flow's coordinates and the voxels' log energies, before standardising."""
        parts = torch.split(cells, list(CELL_COUNTS), dim=1)
        layers = torch.stack([part.sum(dim=1) for part in parts], dim=1)
        total = layers.sum(dim=1).clamp_min(1e-30)
        share = (layers[:, 0] / (layers[:, 0] + layers[:, 1]).clamp_min(1e-30)).clamp(1e-6, 1 - 1e-6)
        logs = _log_or_zone(torch.cat([layers[:, 2:], overflow], dim=1), rng)
        columns = [torch.log(total / (1000.0 * energy_gev))[:, None], torch.logit(share)[:, None], logs[:, :1]]
        if self.hit_counts:
            filled = torch.stack([(part > 0).sum(dim=1) for part in parts], dim=1).to(cells.dtype)
            low, high = COUNT_JITTER
            jitter = (torch.rand(filled.shape, generator=rng) * (high - low) + low).to(cells.device)
            columns.append(torch.logit((filled + jitter) / (cells.new_tensor(CELL_COUNTS) + 1)))
        columns.append(logs[:, 1:])
        return torch.cat(columns, dim=1), _log_or_zone(cells, rng)

    def fit_scaling(self, cells: torch.Tensor, overflow: torch.Tensor, energy_gev: torch.Tensor, seed: int) -> None:
        """Set the standardisation from training showers (once, before the first step)."""
        from .generation import noise_generator

        energy, voxels = self.raw_coordinates(cells, overflow, energy_gev, noise_generator(seed, 3, 0))
        with torch.no_grad():
            for name, values in (("energy", energy), ("voxel", voxels)):
                mean = values.mean(dim=0)
                reach = (values - mean).abs().max(dim=0).values / _SPAN
                getattr(self, f"{name}_shift").copy_(mean)
                getattr(self, f"{name}_scale").copy_(torch.maximum(values.std(dim=0), reach).clamp_min(1e-3))
                getattr(self, f"{name}_low").copy_(values.min(dim=0).values)
                getattr(self, f"{name}_high").copy_(values.max(dim=0).values)
            self.scaled.fill_(1.0)

    def coordinates(self, cells, overflow, energy_gev, rng):
        energy, voxels = self.raw_coordinates(cells, overflow, energy_gev, rng)
        return (energy - self.energy_shift) / self.energy_scale, (voxels - self.voxel_shift) / self.voxel_scale

    def log_prob(self, cells: torch.Tensor, overflow: torch.Tensor, energy_gev: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per shower: the log-density of the standardised energy coordinates and of the voxels (the
        dequantisation noise drawn from ``rng``)."""
        if not bool(self.scaled):
            raise PrunelabError("this flow's standardisation was never fitted (train it with TrainFlow)")
        c = condition(energy_gev)
        energy, voxels = self.coordinates(cells, overflow, energy_gev, rng)
        return (self.energy_flow.log_prob(energy, c),
                self.voxel_flow.log_prob(voxels, torch.cat([c, energy[:, :self.voxel_condition]], dim=1)))

    # ------------------------------------------------------------------ generation

    def _showers(self, energy_gev: torch.Tensor, energy_noise: torch.Tensor, voxel_noise: torch.Tensor):
        c = condition(energy_gev)
        energy = self.energy_flow.sample(c, energy_noise)
        voxels = self.voxel_flow.sample(torch.cat([c, energy[:, :self.voxel_condition]], dim=1), voxel_noise)
        return self.decode(energy, voxels, energy_gev)

    def decode(self, energy: torch.Tensor, voxels: torch.Tensor, energy_gev: torch.Tensor):
        """Standardised coordinates → (cells (N, 504), overflow (N, 3)) in MeV: the inverse of
        :meth:`coordinates`, empty values included."""
        raw = (energy * self.energy_scale + self.energy_shift).clamp(self.energy_low, self.energy_high)
        total = torch.exp(raw[:, 0].clamp(max=1.0)) * 1000.0 * energy_gev
        last = torch.minimum(_from_log(raw[:, 2]), 0.5 * total)  # layer 2 holds ~0.1 % of an e+ shower
        first = (total - last) * torch.sigmoid(raw[:, 1])
        layer_energy = torch.stack([first, total - last - first, last], dim=1)
        log_cells = (voxels * self.voxel_scale + self.voxel_shift).clamp(self.voxel_low, self.voxel_high)
        cells = self._kept_cells(log_cells, raw[:, 3:3 + len(CELL_COUNTS)]) if self.hit_counts else _from_log(log_cells)
        layers = []
        for i, (part, logs) in enumerate(zip(torch.split(cells, list(CELL_COUNTS), dim=1),
                                             torch.split(log_cells, list(CELL_COUNTS), dim=1))):
            # a layer given energy but no cell above the cut puts it in its likeliest cell
            largest = torch.zeros_like(part).scatter_(1, logs.argmax(dim=1, keepdim=True), 1.0)
            part = torch.where(part.sum(dim=1, keepdim=True) > 0, part, largest)
            layers.append(part * (layer_energy[:, i:i + 1] / part.sum(dim=1, keepdim=True)))
        return torch.cat(layers, dim=1), _from_log(raw[:, -len(CELL_COUNTS):])

    @staticmethod
    def _kept_cells(log_cells: torch.Tensor, count_coordinates: torch.Tensor) -> torch.Tensor:
        """Energies (MeV) of each layer's ``n`` largest cells, the rest 0; ``n`` decoded from the count
        coordinates (the inverse of their dequantisation)."""
        sizes = log_cells.new_tensor(CELL_COUNTS)
        counts = torch.minimum(torch.floor(torch.sigmoid(count_coordinates) * (sizes + 1)), sizes)
        kept = []
        for i, logs in enumerate(torch.split(log_cells, list(CELL_COUNTS), dim=1)):
            rank = logs.argsort(dim=1, descending=True).argsort(dim=1)  # 0 for the largest cell
            kept.append(rank < counts[:, i:i + 1])
        return torch.where(torch.cat(kept, dim=1), torch.exp(log_cells.clamp(max=MAX_LOG_MEV)),
                           torch.zeros_like(log_cells))

    def generate(self, energy_gev: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(cells (N, 504), overflow (N, 3)) in MeV, noise drawn from ``rng`` (:mod:`.generation`)."""
        n = len(energy_gev)
        energy_noise = torch.randn(n, self.energy_coordinates, generator=rng)
        voxel_noise = torch.randn(n, sum(CELL_COUNTS), generator=rng)
        device = self.energy_shift.device
        cells, overflow = self._showers(energy_gev.to(device), energy_noise.to(device), voxel_noise.to(device))
        return cells.cpu(), overflow.cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            raise PrunelabError("model 'caloflow' is trained by maximum likelihood on showers: use `prunelab calo "
                                "train` with a [flow] section (recipe TrainFlow), not a classifier or "
                                "regression training")
        energy = x[:, 0].clamp(*ENERGY_RANGE_GEV)
        cells, overflow = self._showers(energy, x.new_zeros(len(x), self.energy_coordinates),
                                        x.new_zeros(len(x), sum(CELL_COUNTS)))
        return (cells.sum(dim=1, keepdim=True) + overflow.sum(dim=1, keepdim=True)) / 1000.0


@register("caloflow", "conditional normalizing flow of showers (energy flow + voxel flow, spline couplings) "
          "for calo_showers_*", "default", input_shape=(CELL_FEATURES,))
def caloflow(input_shape, num_classes, hidden: int = 128, blocks: int = 8, bins: int = 8, energy_hidden: int = 64,
             energy_blocks: int = 6, hit_counts: bool = True) -> nn.Module:
    if tuple(input_shape) != (CELL_FEATURES,):
        raise PrunelabError(f"model 'caloflow' is trained on calorimeter showers (datasets calo_showers_eplus, "
                            f"calo_showers_gamma, calo_showers_piplus); got inputs of shape {tuple(input_shape)}")
    if num_classes != 1:
        raise PrunelabError(f"model 'caloflow' has one output (the deposited energy); its datasets are the "
                            f"calo_showers_* regression sets, not a task with {num_classes} classes")
    limits = {"hidden": 4096, "blocks": 64, "bins": 64, "energy_hidden": 4096, "energy_blocks": 64}
    values = {"hidden": hidden, "blocks": blocks, "bins": bins, "energy_hidden": energy_hidden,
              "energy_blocks": energy_blocks}
    for name, value in values.items():
        low = 2 if name == "bins" else 1
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= limits[name]:
            raise PrunelabError(f"model 'caloflow': option {name} must be an integer in {low}…{limits[name]}, "
                                f"got {value!r}")
    if not isinstance(hit_counts, bool):
        raise PrunelabError(f"model 'caloflow': option hit_counts must be true or false, got {hit_counts!r}")
    return CaloFlow(**values, hit_counts=hit_counts)


# --------------------------------------------------------------------------- training


class FlowConfig(GeneratorConfig):
    """How to train the flow: maximum likelihood, Adam, the learning rate following a cosine from
    ``learning_rate`` to 0 over ``iterations`` (a pure function of the iteration: a chain of
    checkpoints equals one run)."""

    batch_size: int = Field(256, gt=0, le=2**16)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    gradient_clip: float = Field(5.0, gt=0, le=1e6)

    @classmethod
    def parse(cls, data: dict, where: str = "flow") -> "FlowConfig":
        return validated(cls, data, where)

    def learning_rate_at(self, iteration: int) -> float:
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(iteration / self.iterations, 1.0)))


def make_optimizer(model: CaloFlow, config: FlowConfig, order: Sequence[str] | None = None) -> torch.optim.Adam:
    return torch.optim.Adam(ordered_parameters(model.named_parameters(), order), lr=config.learning_rate,
                            foreach=False)


def train_flow(model: CaloFlow, data, config: FlowConfig, *, seed: int, start: int, stop: int,
               optimizer_state: dict | None = None, parameter_order: Sequence[str] | None = None) -> TrainingResult:
    """Train from iteration ``start`` to ``stop`` by maximum likelihood. Batches and dequantisation
    noise are pure functions of (seed, iteration); a pruned flow stays pruned (masks re-applied after
    every step, as for the GAN). ``data``: :class:`~prunelab.hep.gan.ShowerTensors` of the training split."""
    from ..pruning.masked import MaskReapplier
    from ..pruning.masks import apply_masks, get_masks, remove_pruning
    from ..tasks.training import (batch_indices, deterministic, device_name, own_copy, to_cpu,
                                  training_device)
    from .generation import noise_generator

    if not isinstance(model, CaloFlow):
        raise PrunelabError(f"flow training needs the 'caloflow' model, got {type(model).__name__}")
    device = training_device(config)
    if start == 0 and not bool(model.scaled):
        model.fit_scaling(data.cells, data.overflow, data.energy, seed)
    masks = get_masks(model)
    remove_pruning(model)
    model.to(device)
    reapply = MaskReapplier(model, masks) if masks else None
    optimizer = make_optimizer(model, config, parameter_order)
    if optimizer_state:
        optimizer.load_state_dict(own_copy(optimizer_state))  # never update the parent's state in place
    params = [p for group in optimizer.param_groups for p in group["params"]]
    n, batch = len(data), config.batch_size
    curve, began = [], time.perf_counter()
    try:
        with deterministic():
            for it in range(start, stop):
                idx = batch_indices(seed, it, n, batch)
                cells, overflow, energy = (t[idx].to(device) for t in (data.cells, data.overflow, data.energy))
                energy_lp, voxel_lp = model.log_prob(cells, overflow, energy, noise_generator(seed, 1, it))
                loss_energy = -energy_lp.mean()
                loss_voxels = -voxel_lp.mean() / sum(CELL_COUNTS)  # nats per cell, comparable across sizes
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate_at(it)
                optimizer.zero_grad(set_to_none=True)
                (loss_energy + loss_voxels).backward()
                torch.nn.utils.clip_grad_norm_(params, config.gradient_clip, foreach=False)
                optimizer.step()
                if reapply is not None:
                    reapply(model, it)
                if (it + 1) % config.curve_every == 0 or it + 1 == stop:
                    values = (float(loss_energy.detach()), float(loss_voxels.detach()))
                    if not all(math.isfinite(v) for v in values):
                        raise PrunelabError(f"flow training diverged at iteration {it}: energy loss {values[0]}, "
                                            f"voxel loss {values[1]} (a lower learning_rate or gradient_clip helps)")
                    curve.append({"iteration": it + 1, "energy_nll": values[0], "voxel_nll_per_cell": values[1],
                                  "learning_rate": config.learning_rate_at(it)})
    finally:
        if device.type != "cpu":
            model.to("cpu")  # stored tensors are CPU tensors, whatever trained them
        if masks:
            apply_masks(model, masks)
    return TrainingResult(to_cpu(optimizer.state_dict()), time.perf_counter() - began, curve, device_name(device))
