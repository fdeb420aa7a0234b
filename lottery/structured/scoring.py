"""Importance of a run's units, on the run's own model and prompts, for structured IMP's ranking at every level:
magnitude (lottery/core/unit_scores.py) or the gradient importance measured by the study's one evaluator
(lottery/structured/probe.py, Probe.gradient_scores).

The gradient score averages over the first `structured.score_examples` prompts of the training split (after the
validation carve), the same prompts at every level and for every seed, so scores are comparable; they never include
test prompts, which only measure the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lottery.core.unit_scores import magnitude_scores
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
        from lottery.structured.probe import Probe, Prompts

        dm = self.datamodule
        prompts = Prompts.of(dm.task, dm.x_train, dm.y_train).head(self.examples)
        probe = Probe(load_network(self.network, weights), dm.task, torch.device("cpu"), SCORE_BATCH)
        return probe.gradient_scores(prompts, {k: layout.grids[k] for k in kinds})
