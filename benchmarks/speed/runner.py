"""The part of (a) and (c) that is the same: the workload's data carved as the framework carves it, the evaluation
interval, and a timer around evaluations."""

from __future__ import annotations

from typing import Any

from .framework import eval_interval, load_splits
from .nets import carve, density_of
from .timing import Timer


class InMemoryRunner:
    """What (a) and (c) share: the workload's splits carved as the framework carves them, its evaluation interval,
    and a timer around evaluations."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.hp = hp = spec["hp"]
        splits = load_splits(hp)
        self.x, self.y, self.x_val, self.y_val = carve(splits, hp)
        self.num_classes = splits.num_classes
        self.eval_every = eval_interval(hp["eval_every"], len(self.x) // hp["batch_size"])
        self.evals = Timer()

    def result(self, steps: int, seconds: float, val_loss: float, weights: dict[str, Any]) -> dict[str, Any]:
        """A level's record; neither (a) nor (c) writes resume checkpoints."""
        return {
            "steps": steps,
            "seconds": seconds,
            "evals": self.evals.calls,
            "eval_seconds": self.evals.seconds,
            "ckpts": 0,
            "ckpt_seconds": 0.0,
            "val_loss": val_loss,
            "density": density_of(weights),
        }
