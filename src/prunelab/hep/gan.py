"""A conditional generative model of 3-layer showers, after CaloGAN (arXiv 1705.02355, 1712.10321).

The generator maps noise and an incident energy to the three layer images and
the per-layer overflow, in the CaloGAN layout and in MeV:

* **one stream per layer**, each a small fully connected net; stream *i*
  receives the noise, the condition and the hidden state of stream *i − 1*, so
  what the shower did in an earlier layer informs the later ones (CaloGAN's
  "attentional" layer-to-layer connections, in their simplest form);
* **energy conservation by construction**: a separate head splits the
  deposited energy ``E_dep = r · E`` (``r = 2 sigmoid(·)``, so between 0 and
  twice the request; the simulator's response fluctuates around 1 for e+ and
  far below 1 for pions) between the three grids and their overflows (a
  softmax). Each stream gives a logit per cell; a softmax over the layer's
  cells turns them into shares of the layer's energy (log-amplitudes: a
  shower's cells span four orders of magnitude). The deposits are
  therefore non-negative and sum to ``E_dep`` exactly, whatever the weights —
  pruning cannot break it. CaloGAN asked for the same with a loss term; making
  it structural keeps the energy response a learned *distribution* instead of a
  penalty to trade against realism;
* a **readout threshold** (:data:`THRESHOLD_MEV`): a cell below it is empty,
  and its energy goes back to the kept cells of its layer. This is where
  empty cells come from, as in a detector read out above its noise: simulated
  cells are never below ~1.4 MeV (the smallest spot).

The critic (WGAN-GP, arXiv 1704.00028) sees per-cell ``log(1 + E/MeV)``, the
layer fractions, a smooth occupancy per layer, the overflow and the
condition. Both networks live in one module (:class:`CaloGAN`), so a GAN state
is an ordinary prunelab state: one set of weights, masks (the generator's, when
pruned), one optimizer state (one Adam with a parameter group per network: a
network whose gradients are ``None`` is skipped by Adam's step) and an
iteration counter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..errors import PrunelabError, validated
from ..tasks.models import register
from .generation import noise_generator
from .tasks import CELL_COUNTS, CELL_FEATURES

THRESHOLD_MEV = 1.0
N_LAYERS = len(CELL_COUNTS)
ENERGY_RANGE_GEV = (1.0, 100.0)


def condition(energy_gev: torch.Tensor) -> torch.Tensor:
    """(N, 1): log10 of the incident energy over 10 GeV (−1 … 1 over the CaloGAN range)."""
    return torch.log10(energy_gev.clamp_min(1e-2) / 10.0).reshape(-1, 1)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class _Stream(nn.Module):
    """One layer's generator: inputs → hidden state (passed on to the next layer) → the layer's cells."""

    def __init__(self, inputs: int, hidden: int, cells: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(inputs, hidden), _act(), nn.Linear(hidden, hidden), _act())
        self.cells = nn.Linear(hidden, cells)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.cells(h)


class Generator(nn.Module):
    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.latent = latent
        base = latent + 1
        self.streams = nn.ModuleList(_Stream(base + (hidden if i else 0), hidden, cells)
                                     for i, cells in enumerate(CELL_COUNTS))
        # shares of the deposit: N_LAYERS grids + N_LAYERS overflows, and the response r
        self.energy = nn.Sequential(nn.Linear(base + N_LAYERS * hidden, hidden), _act(),
                                    nn.Linear(hidden, 2 * N_LAYERS + 1))

    def forward(self, energy_gev: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cells (N, 504) MeV, overflow (N, 3) MeV) for incident energies (N,) in GeV."""
        x = torch.cat([noise, condition(energy_gev)], dim=1)
        hidden, images, previous = [], [], None
        for stream in self.streams:
            h, raw = stream(x if previous is None else torch.cat([x, previous], dim=1))
            hidden.append(h)
            images.append(torch.softmax(raw, dim=1))  # log-amplitudes: cells span four orders of magnitude
            previous = h
        head = self.energy(torch.cat([x, *hidden], dim=1))
        response = 2.0 * torch.sigmoid(head[:, -1:])
        shares = torch.softmax(head[:, :-1], dim=1) * (1000.0 * energy_gev.reshape(-1, 1) * response)
        layers = [_deposit(image, shares[:, i:i + 1]) for i, image in enumerate(images)]
        return torch.cat(layers, dim=1), shares[:, N_LAYERS:]

    def generate(self, energy_gev: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A shower per incident energy, its noise drawn from ``rng`` (:mod:`.generation`'s protocol)."""
        return self(energy_gev, torch.randn(len(energy_gev), self.latent, generator=rng))


def _deposit(share: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Distribute ``energy`` (N, 1) over the cells by ``share`` (rows sum to 1); cells under the threshold
    are emptied and their energy goes back to the cells kept.

    A layer holding at least the threshold in all always keeps its largest cell, so it is empty only
    when its whole share is below the threshold. Without that rule a layer whose energy is spread
    thin loses every cell, gets no gradient, and stays empty for good — it happened: layer 2, which
    holds 0.1 % of an e+ shower, went dark in a first 17,500-iteration run and never came back.
    (Passing gradients straight through an emptied layer instead was tried: the gradients of cells
    that stay zero never stop, and they drove the energy head into saturation within 100 steps.)"""
    cells = share * energy
    largest = cells >= cells.max(dim=1, keepdim=True).values
    kept = cells * ((cells >= THRESHOLD_MEV) | (largest & (energy >= THRESHOLD_MEV)))
    total = kept.sum(dim=1, keepdim=True)
    return kept * (energy / total.clamp_min(1e-30))


def shape_tensors(cells: torch.Tensor) -> dict[str, torch.Tensor]:
    """The shower shapes of :func:`~prunelab.hep.shapes.shower_shapes` that vary smoothly with the
    deposits, in torch (differentiable): per layer the energy-weighted RMS widths along x and y (mm)
    and ``eratio``; ``depth`` and ``depth_width`` (tested equal to the numpy definitions)."""
    from .geometry import CALORIMETER

    out = {}
    energies = []
    for layer, part in zip(CALORIMETER.layers, torch.split(cells, list(CELL_COUNTS), dim=1)):
        image = part.reshape(-1, *layer.shape)
        e = part.sum(dim=1)
        energies.append(e)
        safe = torch.where(e > 0, e, torch.ones_like(e))[:, None]
        cx, cy = (torch.as_tensor(c, dtype=cells.dtype, device=cells.device) for c in layer.centres())
        px, py = image.sum(dim=2) / safe, image.sum(dim=1) / safe
        for axis, p, c in (("x", px, cx), ("y", py, cy)):
            mean = p @ c
            out[f"width_{axis}_{layer.index}"] = torch.sqrt((p @ c**2 - mean**2).clamp_min(1e-6)) * (e > 0)
        top = torch.topk(part, 2, dim=1).values
        total = top.sum(dim=1)
        out[f"eratio_{layer.index}"] = torch.where(total > 0, (top[:, 0] - top[:, 1]) / total.clamp_min(1e-30),
                                                   torch.zeros_like(total))
    e = torch.stack(energies, dim=1)
    safe = e.sum(dim=1).clamp_min(1e-30)
    index = torch.arange(e.shape[1], dtype=cells.dtype, device=cells.device)
    depth = (e @ index) / safe
    out["depth"] = depth
    out["depth_width"] = torch.sqrt(((e @ index**2) / safe - depth**2).clamp_min(1e-6))
    return out


SHAPE_SCALE = {"width": 50.0}  # mm: widths enter the critic as width / 50 mm
CRITIC_EXTRA = 1 + 4 * N_LAYERS + 3 * N_LAYERS + 2  # condition, fractions, log energies, occupancies, overflow, shapes


def critic_features(cells: torch.Tensor, overflow: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
    """What the critic sees of a shower (all differentiable in the generator's output): every cell as
    log(1 + E/MeV), the condition, the layer fractions and log energies, a smooth occupancy per layer, the overflow,
    and the smooth shower shapes (:func:`shape_tensors`): CaloGAN's critic was likewise handed
    energy and sparsity summaries, since a critic on cells alone learns such sharp summaries slowly."""
    incident = 1000.0 * energy_gev.reshape(-1, 1)
    parts = torch.split(cells, list(CELL_COUNTS), dim=1)
    layer_energy = torch.stack([p.sum(dim=1) for p in parts], dim=1)
    occupancy = torch.stack([torch.tanh(p / THRESHOLD_MEV).mean(dim=1) for p in parts], dim=1)
    shapes = shape_tensors(cells)
    summary = [shapes[k] / SHAPE_SCALE["width"] if k.startswith("width") else shapes[k] for k in sorted(shapes)]
    # log layer energies too: layer 2 holds 0.1 % of an e+ shower, invisible as a fraction
    return torch.cat([torch.log1p(cells) / 5.0, condition(energy_gev), layer_energy / incident,
                      torch.log1p(layer_energy) / 10.0, occupancy, overflow / incident * 10.0,
                      torch.stack(summary, dim=1)], dim=1)


class Critic(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(sum(CELL_COUNTS) + CRITIC_EXTRA, hidden), _act(),
                                 nn.Linear(hidden, hidden), _act(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)


class CaloGAN(nn.Module):
    """Generator and critic in one module. ``forward(x)`` runs the generator without noise for the
    incident energies ``x[:, 0]`` (GeV, clamped to 1–100) and returns the deposited energy (N, 1) in
    GeV — what FLOP counts and shape checks use; showers come from :func:`sample`, training from
    :class:`~prunelab.hep.gan_recipes.TrainGAN`. Pruning and sparsity reports address the generator
    (``sparsity_scope``)."""

    sparsity_scope = "generator"

    def __init__(self, latent: int, hidden: int, critic_hidden: int):
        super().__init__()
        self.generator = Generator(latent, hidden)
        self.critic = Critic(critic_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            raise PrunelabError("model 'calogan' is trained adversarially: use `prunelab calo train` "
                                "(recipe TrainGAN), not a classifier or regression training")
        energy = x[:, 0].clamp(*ENERGY_RANGE_GEV)
        cells, overflow = self.generator(energy, x.new_zeros(len(x), self.generator.latent))
        return (cells.sum(dim=1, keepdim=True) + overflow.sum(dim=1, keepdim=True)) / 1000.0

    def generate(self, energy_gev: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.generator.generate(energy_gev, rng)


@register("calogan", "conditional shower GAN (generator streams per layer + WGAN-GP critic) for calo_showers_*",
          "default", input_shape=(CELL_FEATURES,))
def calogan(input_shape, num_classes, latent: int = 32, hidden: int = 128, critic_hidden: int = 256) -> nn.Module:
    if tuple(input_shape) != (CELL_FEATURES,):
        raise PrunelabError(f"model 'calogan' is trained on calorimeter showers (datasets calo_showers_eplus, "
                            f"calo_showers_gamma, calo_showers_piplus); got inputs of shape {tuple(input_shape)}")
    if num_classes != 1:
        raise PrunelabError(f"model 'calogan' has one output (the deposited energy); its datasets are the "
                            f"calo_showers_* regression sets, not a task with {num_classes} classes")
    for name, value in (("latent", latent), ("hidden", hidden), ("critic_hidden", critic_hidden)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
            raise PrunelabError(f"model 'calogan': option {name} must be an integer in 1…4096, got {value!r}")
    return CaloGAN(latent, hidden, critic_hidden)


# --------------------------------------------------------------------------- training


class GeneratorConfig(BaseModel):
    """What every generator's training config holds (:class:`GANConfig`, :class:`~prunelab.hep.flow.FlowConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    iterations: int = Field(..., gt=0, le=10**8)
    curve_every: int = Field(250, gt=0)  # iterations between recorded losses
    # Held-out showers the fidelity of a finished state is measured on (0: no evaluation).
    evaluate_showers: int = Field(5000, ge=0, le=10**6)
    # The backend (cpu / cuda) is part of a state's identity, as for classifier training; on the CPU it
    # is left out, so GAN states stored before the option existed keep their hashes.
    device: str = Field("cpu", json_schema_extra={"identity": "device"})

    @model_validator(mode="before")
    @classmethod
    def _resolve_device(cls, data):
        from ..tasks.training import resolve_device

        if isinstance(data, dict) and "device" in data:
            data = {**data, "device": resolve_device(data["device"])}
        return data


class GANConfig(GeneratorConfig):
    """How to train the shower GAN. One iteration = ``critic_steps`` critic updates + one generator update."""

    batch_size: int = Field(64, gt=0, le=2**16)
    critic_steps: int = Field(2, ge=1, le=100)
    lr_generator: float = Field(2e-4, gt=0, le=1)
    lr_critic: float = Field(2e-4, gt=0, le=1)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.9, ge=0, lt=1)
    gradient_penalty: float = Field(10.0, ge=0, le=1e4)

    @classmethod
    def parse(cls, data: dict, where: str = "gan") -> "GANConfig":
        return validated(cls, data, where)


@dataclass
class ShowerTensors:
    """Showers as torch tensors for training: cells (N, 504) and overflow (N, 3) in MeV, energy (N,) GeV."""

    cells: torch.Tensor
    overflow: torch.Tensor
    energy: torch.Tensor

    @classmethod
    def of(cls, showers) -> "ShowerTensors":
        return cls(torch.from_numpy(showers.flat().astype(np.float32)),
                   torch.from_numpy(showers.overflow.astype(np.float32)),
                   torch.from_numpy(showers.energy.astype(np.float32)))

    def __len__(self) -> int:
        return int(self.energy.shape[0])


@dataclass
class TrainingResult:
    """What a generator's training loop returns (the GAN's and the flow's)."""

    optimizer_state: dict
    seconds: float
    curve: list = field(default_factory=list)
    device: str = "cpu"


def ordered_parameters(named, order: Sequence[str] | None) -> list:
    """The parameters of ``named`` ((name, parameter) pairs) in ``order`` (names; a pruned tensor's
    ``_orig`` counts as its name), or as given when ``order`` is None."""
    named = list(named)
    if order is not None:
        position = {name: i for i, name in enumerate(order)}
        named.sort(key=lambda item: position.get(item[0].removesuffix("_orig"), len(position)))
    return [p for _, p in named]


def make_optimizer(model: CaloGAN, config: GANConfig, order: Sequence[str] | None = None) -> torch.optim.Adam:
    """Adam over the generator's parameters, then the critic's, each in ``order`` (parameter names of
    the model; default: the order the modules hold them in now)."""
    def params(part: str) -> list:
        return ordered_parameters(getattr(model, part).named_parameters(prefix=part), order)

    return torch.optim.Adam([{"params": params("generator"), "lr": config.lr_generator},
                             {"params": params("critic"), "lr": config.lr_critic}],
                            betas=(config.beta1, config.beta2), foreach=False)


def _noise(rows: int, latent: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Noise drawn on the CPU and moved: the same numbers whatever device trains."""
    noise = torch.randn(rows, latent, generator=rng)
    return noise if device.type == "cpu" else noise.to(device)


def train_gan(model: CaloGAN, data: ShowerTensors, config: GANConfig, *, seed: int, start: int, stop: int,
              optimizer_state: dict | None = None, progress_label: str | None = None,
              parameter_order: Sequence[str] | None = None) -> TrainingResult:
    """Train from iteration ``start`` to ``stop``. Batches and noise are pure functions of (seed,
    iteration), so 0 → k → n equals 0 → n bit for bit. A pruned generator stays pruned: its masks are
    made permanent while training and pruned entries are zeroed after every generator step.

    ``parameter_order``: the model's parameter names in the order the optimizer state indexes them,
    which should be the unpruned model's (``snapshot.parameter_names``). Without it the optimizer
    takes the modules' current order, which torch's pruning changes (a pruned tensor is registered
    again after the others): an optimizer state saved before pruning would not fit the model after."""
    from ..pruning.masked import MaskReapplier
    from ..pruning.masks import apply_masks, get_masks, remove_pruning
    from ..tasks.training import batch_indices, deterministic, device_name, own_copy, to_cpu, training_device

    if not isinstance(model, CaloGAN):
        raise PrunelabError(f"GAN training needs the 'calogan' model, got {type(model).__name__}")
    masks = get_masks(model)
    outside = sorted(n for n in masks if not n.startswith("generator."))
    if outside:
        raise PrunelabError(f"GAN training keeps the critic dense; the state prunes {outside[0]!r}")
    device = training_device(config)
    remove_pruning(model)
    model.to(device)
    reapply = MaskReapplier(model, masks) if masks else None
    generator, critic = model.generator, model.critic
    d_params = list(critic.parameters())
    optimizer = make_optimizer(model, config, parameter_order)
    if optimizer_state:
        # torch keeps the given state's tensors and updates them in place: without the copy, training
        # would change the state it started from (a parent still held in memory, or being stored)
        optimizer.load_state_dict(own_copy(optimizer_state))
    n, batch = len(data), config.batch_size
    curve, began = [], time.perf_counter()
    try:
        with deterministic():
            for it in range(start, stop):
                rng = noise_generator(seed, 1, it)
                for k in range(config.critic_steps):
                    idx = batch_indices(seed, it * config.critic_steps + k, n, batch)
                    energy = data.energy[idx].to(device)
                    with torch.no_grad():
                        cells, overflow = generator(energy, _noise(batch, generator.latent, rng, device))
                    real = critic_features(data.cells[idx].to(device), data.overflow[idx].to(device), energy)
                    fake = critic_features(cells, overflow, energy)
                    eps = torch.rand(batch, 1, generator=rng).to(device)
                    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
                    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
                    penalty = ((grad.norm(dim=1) - 1.0) ** 2).mean()
                    distance = critic(real).mean() - critic(fake).mean()
                    loss_d = -distance + config.gradient_penalty * penalty
                    optimizer.zero_grad(set_to_none=True)
                    loss_d.backward()
                    optimizer.step()  # the generator's gradients are None: Adam leaves it alone
                energy = data.energy[batch_indices(seed, it * config.critic_steps, n, batch)].to(device)
                cells, overflow = generator(energy, _noise(batch, generator.latent, rng, device))
                loss_g = -critic(critic_features(cells, overflow, energy)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss_g.backward()
                for p in d_params:
                    p.grad = None
                optimizer.step()
                if reapply is not None:
                    reapply(model, it)
                if (it + 1) % config.curve_every == 0 or it + 1 == stop:
                    values = (float(distance.detach()), float(penalty.detach()), float(loss_g.detach()))
                    if not all(math.isfinite(v) for v in values):
                        raise PrunelabError(f"GAN training diverged at iteration {it}: critic distance {values[0]}, "
                                            f"penalty {values[1]}, generator loss {values[2]}")
                    curve.append({"iteration": it + 1, "distance": values[0], "penalty": values[1],
                                  "generator_loss": values[2]})
    finally:
        if device.type != "cpu":
            model.to("cpu")  # stored tensors are CPU tensors, whatever trained them
        if masks:
            apply_masks(model, masks)
    return TrainingResult(to_cpu(optimizer.state_dict()), time.perf_counter() - began, curve, device_name(device))
