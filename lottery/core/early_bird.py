"""Early-bird tickets (You et al. 2020): the magnitude mask of a network often stops changing early in training.

During dense training a mask for the target density is drawn every few steps; the detector records the normalised
Hamming distance between consecutive masks and fires at the first snapshot where the last `window` distances are all
below `threshold` (You et al. use a queue of 5 distances and 0.1). The ticket can then be drawn at that step instead
of at the end of training. Pure torch and plain Python, so the detector's state fits in a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


def hamming_distance(mask_a: Mapping[str, torch.Tensor], mask_b: Mapping[str, torch.Tensor]) -> float:
    """The fraction of all masked entries (over every tensor) on which two masks disagree: 0 for identical masks,
    up to 2 * min(density, 1 - density) for two masks of the same density."""
    if set(mask_a) != set(mask_b):
        raise ValueError(f"the masks cover different tensors: {sorted(set(mask_a) ^ set(mask_b))}")
    differing = total = 0
    for name, a in mask_a.items():
        b = mask_b[name]
        if a.shape != b.shape:
            raise ValueError(f"mask {name} has shape {tuple(a.shape)} in one mask and {tuple(b.shape)} in the other")
        differing += int((a != b).sum())
        total += a.numel()
    return differing / total if total else 0.0


@dataclass
class EarlyBirdDetector:
    window: int = 5  # consecutive distances that must all be below the threshold
    threshold: float = 0.1  # normalised Hamming distance
    steps: list[int] = field(default_factory=list)  # the step of each distance
    distances: list[float] = field(default_factory=list)  # distance of the mask at steps[i] to the previous mask
    previous: dict[str, torch.Tensor] | None = None
    fired_step: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"early_bird.window={self.window} must be at least 1 distance")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"early_bird.threshold={self.threshold} must lie in (0, 1]; You et al. use 0.1")

    def update(self, step: int, mask: Mapping[str, torch.Tensor]) -> bool:
        """Record the mask drawn at `step`; True exactly once, at the snapshot where the detector fires."""
        current = {k: v.detach().to("cpu", copy=True) for k, v in mask.items()}
        previous, self.previous = self.previous, current
        if previous is None or self.fired_step is not None:
            return False
        self.steps.append(step)
        self.distances.append(hamming_distance(previous, current))
        recent = self.distances[-self.window :]
        if len(recent) == self.window and max(recent) < self.threshold:
            self.fired_step = step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "distances": list(self.distances),
            "previous": self.previous,
            "fired_step": self.fired_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = list(state["steps"])
        self.distances = list(state["distances"])
        self.previous = state["previous"]
        self.fired_step = state["fired_step"]
