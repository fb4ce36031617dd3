"""Your own pruning method, run under prunelab's controls: `PYTHONPATH=examples prunelab run
examples/my_method.toml` (docs/pruning.md, "Write your own pruning method")."""

import torch
from pydantic import BaseModel

from prunelab.pruning import Method


class Taylor(Method):
    """First-order Taylor importance |w · dL/dw| on one batch (Molchanov et al. 2019)."""

    needs = frozenset({"batch"})
    structures = frozenset({"unstructured", "nm"})

    class Params(BaseModel):
        power: float = 1.0  # |w·g| ** power: a parameter of the method, part of every identity it makes

    def score(self, model, targets, context):
        x, y = context.batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [t.original for t in targets])
        return {t.name: (g * t.effective).abs().detach() ** self.params.power for t, g in zip(targets, grads)}
