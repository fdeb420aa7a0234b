"""Importance of a run's units, on the run's own model and prompts: the glue between lottery/core/unit_scores.py and
a run's network and data.

The gradient score averages over the first `structured.score_examples` prompts of the training split (after the
validation carve), the same prompts at every level and for every seed, so scores are comparable; they never include
test prompts, which only measure the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lottery.core.unit_scores import gradient_scores, magnitude_scores
from lottery.core.units import UnitLayout

SCORE_BATCH = 256  # prompts per backward pass of the gradient score (memory only; the score is a plain average)


def load_network(build: Callable[[], torch.nn.Module], weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A network from `build` (the run's architecture) holding `weights`, in eval mode."""
    network = build()
    network.load_state_dict(dict(weights))
    return network.eval()


@dataclass(frozen=True)
class UnitScorer:
    """Scores every unit of some kinds for the run's network with given weights (masked units have their weights at
    zero). `network` builds the run's architecture; `datamodule` holds its prompts and task."""

    network: Callable[[], torch.nn.Module]
    datamodule: Any
    examples: int  # structured.score_examples

    def __call__(
        self, weights: Mapping[str, torch.Tensor], score: str, kinds: Sequence[str], layout: UnitLayout
    ) -> dict[str, torch.Tensor]:
        if score == "magnitude":
            return magnitude_scores(weights, layout, kinds)
        if score != "gradient":
            raise ValueError(f"structured.score={score!r} is not magnitude or gradient")
        dm = self.datamodule
        n = min(self.examples, len(dm.x_train))
        x, y = dm.x_train[:n], dm.y_train[:n]
        batches = ((x[i : i + SCORE_BATCH], y[i : i + SCORE_BATCH]) for i in range(0, n, SCORE_BATCH))
        return gradient_scores(load_network(self.network, weights), dm.task.per_example_loss, batches, layout, kinds)
