"""Showers from any trained generative model of this calorimeter (the GAN, the flow, your own).

A shower generator is a module with ``generate(energy_gev, rng) -> (cells, overflow)``: for incident
energies (N,) in GeV and a ``torch.Generator`` it draws its noise from, the 504 cells (N, 504) and the
per-layer overflow (N, 3) in MeV. :func:`sample` batches it, seeds every batch's noise as a pure function
of (seed, batch), and returns :class:`~prunelab.hep.simulator.Showers`, so the same call gives the
same showers whatever ran before.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PrunelabError
from .tasks import CELL_COUNTS, LAYER_SHAPES

SAMPLING_STREAM = 2  # noise stream of sampling (training draws from stream 1)


def noise_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A torch generator that is a pure function of (seed, stream, index): noise never depends on history."""
    key = np.random.SeedSequence([seed % 2**32, seed // 2**32 % 2**32, stream, index]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(key[0] ^ (key[1] >> np.uint64(1))) % 2**63)


def is_shower_generator(model) -> bool:
    return callable(getattr(model, "generate", None))


def showers_from_cells(energy_gev: np.ndarray, cells: np.ndarray, overflow: np.ndarray, particle: str | None):
    """:class:`Showers` from flat cells (N, 504) and overflow (N, 3), MeV."""
    from .simulator import Showers

    images = np.split(cells, np.cumsum(CELL_COUNTS)[:-1], axis=1)
    layers = tuple(img.reshape(-1, *shape) for img, shape in zip(images, LAYER_SHAPES))
    return Showers(np.asarray(energy_gev, dtype=np.float64), layers, overflow, particle)


@torch.no_grad()
def sample(model, energy_gev, *, seed: int = 0, batch: int = 4096, particle: str | None = None):
    """Generate one shower per incident energy (GeV) as :class:`~prunelab.hep.simulator.Showers`.

    The noise of shower *i* depends only on ``seed`` and *i*'s batch, so the same call gives the same
    showers (the batch size is part of "the same call")."""
    if not is_shower_generator(model):
        raise PrunelabError(f"{type(model).__name__} is not a shower generator (a model with "
                            "generate(energy, rng): the 'calogan' or 'caloflow' models, or your own)")
    if batch < 1:
        raise PrunelabError(f"sample: batch must be at least 1, got {batch}")
    energy = torch.as_tensor(np.asarray(energy_gev, dtype=np.float32).reshape(-1))
    if len(energy) == 0:
        raise PrunelabError("sample: no incident energies given")
    was_training = model.training
    model.eval()
    cells, overflow = [], []
    try:
        for b, start in enumerate(range(0, len(energy), batch)):
            c, o = model.generate(energy[start:start + batch], noise_generator(seed, SAMPLING_STREAM, b))
            cells.append(c)
            overflow.append(o)
    finally:
        model.train(was_training)
    return showers_from_cells(energy.numpy().astype(np.float64), torch.cat(cells).numpy(),
                              torch.cat(overflow).numpy(), particle)
