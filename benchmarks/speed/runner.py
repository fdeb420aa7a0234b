"""The part of (a) and (c) that is the same: the workload's data carved as the framework carves it, the evaluation
interval, and a timer around evaluations."""

from __future__ import annotations

from typing import Any

from .framework import eval_interval, load_splits
from .nets import carve
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
