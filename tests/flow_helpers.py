"""The tiny flow study the flow's tests train (tests/test_flow.py, tests/test_generator_scores.py)."""

from __future__ import annotations


def tiny_flow_spec(*, evaluate_showers: int = 300, checkpoint_every: int | None = 4, dense_control: bool = True) -> str:
    """A generator study spec of a 2-coupling flow, 8 iterations, one IMP round and one one-shot target."""
    checkpoint = f"checkpoint_every = {checkpoint_every}\n" if checkpoint_every else ""
    return f"""
name = "tinyflow"
dataset = "calo_showers_eplus"
seeds = [0]
{checkpoint}[model]
hidden = 16
blocks = 2
bins = 4
energy_hidden = 8
energy_blocks = 2
[flow]
iterations = 8
batch_size = 32
evaluate_showers = {evaluate_showers}
[pruning]
rounds = 1
amount = 0.5
one_shot = [0.75]
dense_control = {str(dense_control).lower()}
[pruning.finetune]
iterations = 3
batch_size = 32
learning_rate = 3e-4
evaluate_showers = {evaluate_showers}
"""
