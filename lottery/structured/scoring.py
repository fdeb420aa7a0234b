"""Importance of a run's units, on the run's own model and prompts: the glue between lottery/core/unit_scores.py and
a run's Setup (network, data, task).

The gradient score averages over the first `structured.score_examples` prompts of the training split (after the
validation carve), the same prompts at every level and for every seed, so scores are comparable; they never include
test prompts, which only measure the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from lottery.core.unit_scores import gradient_scores, magnitude_scores
from lottery.core.units import UnitLayout

if TYPE_CHECKING:
    from lottery.imp import Setup

SCORE_BATCH = 256  # prompts per backward pass of the gradient score (memory only; the score is a plain average)


def load_network(setup: Setup, weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    network = setup.network()
    network.load_state_dict(dict(weights))
    return network.eval()


def unit_scores(
    setup: Setup, weights: Mapping[str, torch.Tensor], score: str, kinds: Sequence[str], layout: UnitLayout
) -> dict[str, torch.Tensor]:
    """Scores of every unit of `kinds` for the network with `weights` (masked units have their weights at zero)."""
    if score == "magnitude":
        return magnitude_scores(weights, layout, kinds)
    if score != "gradient":
        raise ValueError(f"structured.score={score!r} is not magnitude or gradient")
    dm = setup.datamodule
    n = min(setup.cfg.structured.score_examples, len(dm.x_train))
    x, y = dm.x_train[:n], dm.y_train[:n]
    batches = ((x[i : i + SCORE_BATCH], y[i : i + SCORE_BATCH]) for i in range(0, n, SCORE_BATCH))
    return gradient_scores(load_network(setup, weights), dm.task.per_example_loss, batches, layout, kinds)
