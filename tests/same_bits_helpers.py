"""A small tree holding every recipe kind, computed in pieces by separate processes
(tests/test_same_bits.py: ``python -m tests.same_bits_helpers STORE PART``).

The model is LeNet-300-100 with five hidden layers of 32, so that its layer names ('1.weight',
'3.weight', ..., '11.weight') and optimizer state indices (0..11) sort differently as text than in
module order: what a state loaded from the store holds in text order, one made in memory in
module order.
"""

from __future__ import annotations

import sys

from prunelab import TrainConfig
from prunelab.experiment import (
    Consensus,
    Evaluate,
    Experiment,
    Finetune,
    Prune,
    RandomPruneLike,
    RandomReinit,
    Rewind,
    Train,
    Transfer,
)
from prunelab.pruning import technique

MODEL = {"model": "lenet_300_100", "seed": 0, "model_options": {"hidden": [32, 32, 32, 32, 32]}}
CONFIG = TrainConfig(iterations=24, batch_size=32)
VECTORIZED = CONFIG.model_copy(update={"vectorize": 2})  # models of one group key share a padded pass
PARTS = ("ticket", "all")


def build(store, part: str = "all") -> Experiment:
    """The tree; ``part="ticket"``: only the lottery-ticket branch (and one vectorised training), whose
    states every other branch starts from or refers to."""
    if part not in PARTS:
        raise ValueError(f"part {part!r} is not one of {PARTS}")
    exp = Experiment(store)
    root = exp.root(dataset="digits", **MODEL)
    early = root.then(Train(CONFIG, stop=8))  # the rewind point
    dense = early.then(Train(CONFIG))
    # IMP with rewinding: global magnitude pruning, the output layer at its own rate
    s, pruned, rewound = dense, [], []
    for _ in range(2):
        pruned.append(s.then(Prune(technique("global_unstructured", amount=0.5, overrides={"<output>": 0.2}))))
        rewound.append(pruned[-1].then(Rewind(to=early)))
        s = rewound[-1].then(Train(CONFIG))
    ticket = s
    ticket.probe(Evaluate(("test", "validation")))
    root.then(Train(VECTORIZED, data_seed=7))  # alone in its pass here; beside others in a whole run
    if part == "ticket":
        return exp

    # pruning methods and scopes, on parents whose masks (and optimizer state) may come from disk
    dense.then(Prune(technique("l1_unstructured", amount=0.3))).then(Finetune(CONFIG.model_copy(update={"lr": 5e-4})))
    ticket.then(Prune(technique("random_unstructured", amount=0.3))).then(Rewind(to=early)).then(Train(CONFIG))
    ticket.then(Prune(technique("snip", amount=0.4)))  # kept weights of dead units score 0: ties
    root.then(Prune(technique("snip", amount=0.6))).then(Train(CONFIG))
    ticket.then(Prune(technique("random_structured", amount=0.25)))
    structured = ticket.then(Prune(technique("l1_structured", amount=0.25)))  # masks biases too
    structured.then(Rewind(to=early)).then(Train(CONFIG, mode="hook"))
    structured.then(Prune(technique("global_unstructured", amount=0.2)))

    # controls
    ticket.then(RandomReinit()).then(Train(VECTORIZED))
    random = root.then(RandomPruneLike(like=pruned[-1]))
    random.then(Train(VECTORIZED))
    random.probe(Evaluate())
    root.then(RandomPruneLike(like=structured))  # a reference that masks biases

    # consensus of two data orders from one initialisation
    voters = tuple(root.then(Train(CONFIG, data_seed=seed)).then(Prune(technique("global_unstructured", amount=0.5)))
                   for seed in (1, 2))
    for tau in (1.0, 0.5):
        consensus = root.then(Consensus(sources=voters, tau=tau))
        consensus.then(Train(CONFIG)).probe(Evaluate())
    root.then(RandomPruneLike(like=consensus)).then(Train(VECTORIZED))

    # transfer to a task whose first layer has another shape (its mask is resampled)
    target = exp.root(dataset="digits[resize=6x6]", **MODEL)
    moved = target.then(Transfer(source=rewound[-1]))
    moved.then(Train(CONFIG)).probe(Evaluate())
    target.then(RandomPruneLike(like=moved)).then(Train(CONFIG))
    return exp


GAN_MODEL = {"model": "calogan", "seed": 5, "model_options": {"latent": 4, "hidden": 16, "critic_hidden": 16}}


def gan_config(**settings):
    from prunelab.hep.gan import GANConfig

    return GANConfig(**{"iterations": 6, "batch_size": 16, "critic_steps": 1, "curve_every": 2,
                        "evaluate_showers": 0, **settings})


def build_gan(store, part: str = "all") -> Experiment:
    """The shower GAN's recipes: a checkpoint trained on by two children (each from the checkpoint's
    optimizer state), and its generator pruned (structured pruning masks biases too), then trained on
    or fine-tuned. ``part="pruned"``: only the checkpoint and the pruned states."""
    from prunelab.hep.gan_recipes import FinetuneGAN, TrainGAN

    exp = Experiment(store)
    checkpoint = exp.root(dataset="calo_showers_eplus", **GAN_MODEL).then(TrainGAN(gan_config(), stop=3))
    pruned = [checkpoint.then(Prune(technique(name, amount=0.25, include=["generator.*"])))
              for name in ("l1_structured", "l1_unstructured")]
    if part == "pruned":
        return exp
    checkpoint.then(TrainGAN(gan_config(), stop=6))
    checkpoint.then(TrainGAN(gan_config(), stop=5))
    for state in pruned:
        state.then(TrainGAN(gan_config(), stop=6))
        state.then(FinetuneGAN(gan_config(iterations=3)))
    return exp


if __name__ == "__main__":
    summary = build(sys.argv[1], sys.argv[2]).run()
    if not summary.ok:
        raise SystemExit(f"run failed: {summary}")
    print("COMPUTED", len(summary.computed))
